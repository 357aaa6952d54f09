"""A local stand-in for api.weixin.qq.com: a threaded HTTP server with the platform's semantics.

Implements cgi-bin/stable_token and cgi-bin/token (tokens that expire after `ttl` seconds),
rejection of calls without a valid token (40001 unknown, 42001 expired), media/uploadimg
(multipart field `media`, jpg/png by magic bytes, under 1 MB), material/add_material, draft
add/update/get/batchget, and the publishing contract as developers.weixin.qq.com documents it
(发布能力: freepublish/submit, freepublish/get, freepublish/batchget):

- `freepublish/submit {media_id}` answers `{errcode 0, errmsg, publish_id, msg_data_id}` when the
  publish *task* is accepted; that says nothing about the outcome. Each accepted submit is its own
  task: the documentation promises no refusal of a second submit of the same draft, so this server
  makes none — a draft submitted twice is published twice (two articles), the very thing the
  client must never cause.
- `freepublish/get {publish_id}` answers `publish_status` 1 (发布中) until the task ends, then 0
  (with `article_id` and `article_detail.item[].article_url`), 2 原创失败 / 4 平台审核不通过 (with
  `fail_idx`), 3 常规失败, 5/6 (published, then deleted by the account / banned).
- `freepublish/batchget` lists only successfully published articles, newest first, each with
  `article_id`, `update_time` and `content.news_item[]` (`url`, `is_deleted`).
- The draft box: a draft submitted for publishing leaves it when the publish succeeds
  (`draft_leaves_at = "publish"`, the default and the harder case for a client: while a slow
  publish runs the draft still looks unpublished) or as soon as the submit is accepted
  (`"submit"`); a failed publish leaves the draft in (or puts it back into) the box.

Every request is stored with its raw body, so `\\uXXXX` escapes stay visible. Switches:
`busy_once` (answer -1 once per path listed), `force_errcode` (path → errcode answered every time),
`lose_reply` (path → how many times to do the work and then drop the connection without an
answer: a reply lost on the way), `ttl`, `publish_status` (the final status tasks reach),
`publishing_polls` (polls answered 1 first), `publish_seconds` (> 0: a task also ends that long
after its submit, polled or not — a delayed publish), `draft_leaves_at`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

APP_ID = "wx0123456789abcdef"
SECRET = "s3cr3t-app-secret-value-0123456789"


@dataclass
class Seen:
    method: str
    path: str  # without the leading slash, e.g. "cgi-bin/draft/add"
    query: dict[str, str]
    body: bytes
    content_type: str


@dataclass
class State:
    ttl: float = 7200.0
    busy_once: set[str] = field(default_factory=set)
    force_errcode: dict[str, int] = field(default_factory=dict)
    publish_status: int = 0  # the final status freepublish/get reaches
    publishing_polls: int = 1  # how many polls answer 1 (publishing) first
    publish_seconds: float = 0.0  # > 0: a publish completes this long after submit, polled or not
    lose_reply: dict[str, int] = field(default_factory=dict)  # path -> replies to drop after the work
    draft_leaves_at: str = "publish"  # or "submit": when a submitted draft leaves the draft box
    published: dict[str, dict] = field(default_factory=dict)  # article_id -> freepublish item
    requests: list[Seen] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    current_token: str | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)  # url -> image
    materials: dict[str, bytes] = field(default_factory=dict)
    drafts: dict[str, list[dict]] = field(default_factory=dict)
    draft_times: dict[str, int] = field(default_factory=dict)  # media_id -> update_time
    raw_drafts: dict[str, list[bytes]] = field(default_factory=dict)  # media_id -> raw bodies
    publishes: dict[str, dict] = field(default_factory=dict)
    rejected: list[tuple[str, int]] = field(default_factory=list)  # (path, errcode) answered
    issued: list[str] = field(default_factory=list)  # every token ever issued


class WeChatServer:
    def __init__(self) -> None:
        self.state = State()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        handler = type("Handler", (_Handler,), {"server_obj": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> WeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- helpers for tests ----------------------------------------------------------------------

    def count(self, path: str) -> int:
        return sum(1 for r in self.state.requests if r.path == path)

    def bodies(self, path: str) -> list[bytes]:
        return [r.body for r in self.state.requests if r.path == path]

    def expire_tokens(self) -> None:
        """Every issued token expires now (the next call with one gets 42001)."""
        with self.lock:
            for t in self.state.tokens:
                self.state.tokens[t] = 0.0
            self.state.current_token = None

    def revoke_tokens(self) -> None:
        """Every issued token becomes unknown (the next call with one gets 40001)."""
        with self.lock:
            self.state.tokens.clear()
            self.state.current_token = None

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}"

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, seen: Seen) -> dict:
        st = self.state
        path = seen.path
        with self.lock:
            st.requests.append(seen)
            if path in st.force_errcode:
                return self._err(path, st.force_errcode[path])
            if path in st.busy_once:
                st.busy_once.discard(path)
                return self._err(path, -1)
            if path == "cgi-bin/stable_token":
                return self._stable_token(seen)
            if path == "cgi-bin/token":
                return self._token(seen)
            token = seen.query.get("access_token")
            if not token:
                return self._err(path, 41001)
            if token not in st.tokens:
                return self._err(path, 40001)
            if st.tokens[token] <= time.time():
                return self._err(path, 42001)
            route = {
                "cgi-bin/media/uploadimg": self._uploadimg,
                "cgi-bin/material/add_material": self._add_material,
                "cgi-bin/draft/add": self._draft_add,
                "cgi-bin/draft/update": self._draft_update,
                "cgi-bin/draft/get": self._draft_get,
                "cgi-bin/draft/batchget": self._draft_batchget,
                "cgi-bin/freepublish/batchget": self._publish_batchget,
                "cgi-bin/freepublish/submit": self._submit,
                "cgi-bin/freepublish/get": self._publish_get,
            }.get(path)
            if route is None:
                return self._err(path, 40066)  # invalid url
            self._advance()
            answer = route(seen)
            if st.lose_reply.get(path, 0) > 0 and not answer.get("errcode"):
                st.lose_reply[path] -= 1
                return LOST
            return answer

    def _advance(self) -> None:
        """Publishes whose time has come complete (publish_seconds), polled or not."""
        if self.state.publish_seconds <= 0:
            return
        for pub in self.state.publishes.values():
            if "final" not in pub and time.time() - pub["at"] >= self.state.publish_seconds:
                self._finish(pub)

    def _finish(self, pub: dict) -> dict:
        """The publish task ends with the configured status."""
        status = self.state.publish_status
        pub["final"] = status
        media_id = pub["media_id"]
        if status in (0, 5, 6):
            article_id = f"ARTICLE_{media_id}_{pub['publish_id']}"
            pub["article_id"] = article_id
            self.state.drafts.pop(media_id, None)  # a published draft leaves the draft box
            url = f"https://mp.weixin.qq.com/s/{article_id}"
            deleted = status != 0
            self.state.published[article_id] = {
                "article_id": article_id, "update_time": int(time.time()),
                "content": {"news_item": [{**a, "url": url, "is_deleted": deleted} for a in pub["articles"]]}}
            if deleted:  # deleted or banned after publishing: no longer listed
                self.state.published.pop(article_id)
        elif media_id not in self.state.drafts:  # failed: the draft is (back) in the box
            self.state.drafts[media_id] = pub["articles"]
        return pub

    def _err(self, path: str, code: int) -> dict:
        self.state.rejected.append((path, code))
        msgs = {-1: "system error", 40001: "invalid credential, access_token is invalid or not latest",
                42001: "access_token expired", 40164: "invalid ip 203.0.113.7, not in whitelist",
                45009: "reach max api daily quota limit", 45011: "api minute-quota reach limit",
                48001: "api unauthorized", 40125: "invalid appsecret", 40013: "invalid appid"}
        return {"errcode": code, "errmsg": msgs.get(code, "error") + " rid: 65a1b2c3-0123"}

    def _issue_token(self) -> dict:
        token = "TOKEN-" + self.next_id("t") + "-" + "x" * 40
        self.state.tokens[token] = time.time() + self.state.ttl
        self.state.current_token = token
        self.state.issued.append(token)
        return {"access_token": token, "expires_in": int(self.state.ttl) if self.state.ttl >= 1 else self.state.ttl}

    def _check_credentials(self, path: str, appid: str | None, secret: str | None) -> dict | None:
        if appid != APP_ID:
            return self._err(path, 40013)
        if secret != SECRET:
            return self._err(path, 40125)
        return None

    def _stable_token(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        bad = self._check_credentials(seen.path, body.get("appid"), body.get("secret"))
        if bad:
            return bad
        if body.get("grant_type") != "client_credential":
            return self._err(seen.path, 40002)
        cur = self.state.current_token
        if not body.get("force_refresh") and cur and self.state.tokens.get(cur, 0) > time.time():
            return {"access_token": cur, "expires_in": int(self.state.tokens[cur] - time.time())}
        if body.get("force_refresh") and cur:
            self.state.tokens.pop(cur, None)  # force_refresh invalidates the previous token
        return self._issue_token()

    def _token(self, seen: Seen) -> dict:
        q = seen.query
        bad = self._check_credentials(seen.path, q.get("appid"), q.get("secret"))
        if bad:
            return bad
        return self._issue_token()

    def _media(self, seen: Seen) -> tuple[str, bytes] | None:
        if not seen.content_type.startswith("multipart/form-data"):
            return None
        msg = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {seen.content_type}\r\n\r\n".encode() + seen.body)
        for part in msg.iter_parts():
            if part.get_param("name", header="content-disposition") == "media":
                return part.get_filename() or "", part.get_payload(decode=True)
        return None

    @staticmethod
    def _kind(data: bytes) -> str | None:
        if data[:3] == b"\xff\xd8\xff":
            return "jpg"
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return "png"
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return "gif"
        return None

    def _uploadimg(self, seen: Seen) -> dict:
        media = self._media(seen)
        if media is None:
            return self._err(seen.path, 41005)  # media data missing
        _, data = media
        if self._kind(data) not in ("jpg", "png"):
            return self._err(seen.path, 40005)
        if len(data) >= 1024 * 1024:
            return self._err(seen.path, 40009)
        url = f"http://mmbiz.qpic.cn/mmbiz_png/{self.next_id('img')}/0?wx_fmt=png"
        self.state.uploads[url] = data
        return {"url": url}

    def _add_material(self, seen: Seen) -> dict:
        if seen.query.get("type") != "image":
            return self._err(seen.path, 40004)
        media = self._media(seen)
        if media is None:
            return self._err(seen.path, 41005)
        _, data = media
        if self._kind(data) is None:
            return self._err(seen.path, 40005)
        if len(data) >= 10 * 1024 * 1024:
            return self._err(seen.path, 40006)
        media_id = self.next_id("MATERIAL-")
        self.state.materials[media_id] = data
        return {"media_id": media_id, "url": f"http://mmbiz.qpic.cn/mmbiz_jpg/{media_id}/0"}

    def _check_article(self, path: str, art: dict) -> dict | None:
        if len(art.get("title", "")) > 32:
            return self._err(path, 45003)
        if len(art.get("digest", "")) > 128:
            return self._err(path, 45004)
        if len(art.get("content", "")) >= 20000:
            return self._err(path, 45002)
        if art.get("thumb_media_id") not in self.state.materials:
            return self._err(path, 40007)
        return None

    def _draft_add(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        articles = body.get("articles") or []
        if not articles:
            return self._err(seen.path, 44002)
        for art in articles:
            bad = self._check_article(seen.path, art)
            if bad:
                return bad
        media_id = self.next_id("DRAFT-")
        self.state.drafts[media_id] = articles
        self.state.draft_times[media_id] = int(time.time())
        self.state.raw_drafts[media_id] = [seen.body]
        return {"media_id": media_id}

    def _draft_update(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        media_id = body.get("media_id")
        if media_id not in self.state.drafts:
            return self._err(seen.path, 40007)
        index = body.get("index", 0)
        if not 0 <= index < len(self.state.drafts[media_id]):
            return self._err(seen.path, 40007)
        art = body.get("articles") or {}
        bad = self._check_article(seen.path, art)
        if bad:
            return bad
        self.state.drafts[media_id][index] = art
        self.state.draft_times[media_id] = int(time.time())
        self.state.raw_drafts[media_id].append(seen.body)
        return {"errcode": 0, "errmsg": "ok"}

    def _draft_get(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        media_id = body.get("media_id")
        if media_id not in self.state.drafts:
            return self._err(seen.path, 40007)
        return {"news_item": self.state.drafts[media_id]}

    def _submit(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        media_id = body.get("media_id")
        if media_id not in self.state.drafts:
            return self._err(seen.path, 40007)
        publish_id = 2247483000 + next(self._ids)  # an integer, as the platform answers it
        articles = [dict(a) for a in self.state.drafts[media_id]]
        self.state.publishes[str(publish_id)] = {"media_id": media_id, "publish_id": publish_id, "polls": 0,
                                                 "at": time.time(), "articles": articles}
        if self.state.draft_leaves_at == "submit":
            self.state.drafts.pop(media_id)
        return {"errcode": 0, "errmsg": "ok", "publish_id": publish_id, "msg_data_id": 2247483000 + publish_id}

    def _publish_get(self, seen: Seen) -> dict:
        body = json.loads(seen.body.decode("utf-8"))
        pub = self.state.publishes.get(str(body.get("publish_id")))
        if pub is None:
            return self._err(seen.path, 40007)  # invalid media_id / publish_id
        pub["polls"] += 1
        if "final" not in pub and self.state.publish_seconds > 0:
            return {"publish_id": pub["publish_id"], "publish_status": 1, "fail_idx": []}
        if "final" not in pub and pub["polls"] <= self.state.publishing_polls:
            return {"publish_id": pub["publish_id"], "publish_status": 1, "fail_idx": []}
        if "final" not in pub:
            self._finish(pub)
        status = pub["final"]
        answer = {"publish_id": pub["publish_id"], "publish_status": status, "fail_idx": []}
        if status == 0:
            article_id = pub["article_id"]
            answer["article_id"] = article_id
            answer["article_detail"] = {"count": 1, "item": [
                {"idx": 1, "article_url": f"https://mp.weixin.qq.com/s/{article_id}"}]}
        elif status in (2, 4):
            answer["fail_idx"] = [1]
        return answer

    def _page(self, seen: Seen, items: list[dict]) -> dict:
        body = json.loads(seen.body.decode("utf-8") or "{}")
        offset, count = int(body.get("offset", 0)), int(body.get("count", 20))
        if not 1 <= count <= 20 or offset < 0:
            return self._err(seen.path, 40097)  # invalid args
        items = sorted(items, key=lambda i: i["update_time"], reverse=True)
        page = items[offset:offset + count]
        if body.get("no_content"):
            page = [{**i, "content": {"news_item": [{k: v for k, v in a.items() if k != "content"}
                                                    for a in i["content"]["news_item"]]}} for i in page]
        return {"total_count": len(items), "item_count": len(page), "item": page}

    def _draft_batchget(self, seen: Seen) -> dict:
        return self._page(seen, [{"media_id": m, "content": {"news_item": arts},
                                  "update_time": self.state.draft_times.get(m, 0)}
                                 for m, arts in self.state.drafts.items()])

    def _publish_batchget(self, seen: Seen) -> dict:
        return self._page(seen, list(self.state.published.values()))

    # -- what tests count --------------------------------------------------------------------------

    def submitted(self, media_id: str) -> int:
        """How many publish tasks were accepted for this draft."""
        return sum(1 for p in self.state.publishes.values() if p["media_id"] == media_id)

    def articles_for(self, title: str) -> list[str]:
        """Published article ids whose first article has this title."""
        return [a for a, item in self.state.published.items()
                if item["content"]["news_item"] and item["content"]["news_item"][0].get("title") == title]


LOST = {"__lost__": True}  # handle() result: drop the connection without an answer


class _Handler(BaseHTTPRequestHandler):
    server_obj: WeChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - silent server
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, parts.path.lstrip("/"), query, body, self.headers.get("Content-Type", ""))
        answer = self.server_obj.handle(seen)
        if answer is LOST:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        out = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "application/json; encoding=utf-8")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = _serve
    do_POST = _serve
