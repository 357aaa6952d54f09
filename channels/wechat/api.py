"""A small client for the WeChat Official Account API (公众号), on requests.

- Access token from `POST cgi-bin/stable_token` (or `GET cgi-bin/token` with token_mode
  "token"), cached with its expiry in the ledger (table `wechat_tokens`), renewed before it
  expires, and renewed once (and the call retried) when the platform answers 40001/42001.
- errcode -1 (system busy) is retried with bounded exponential backoff; every other errcode ends
  in a WeChatError naming the code, what it means and what to do.
- JSON bodies go out as UTF-8 bytes with real characters (the platform stores `\\uXXXX` escapes
  verbatim, so a title would show up as escapes in the article).
- The access token travels as the query parameter `access_token` and `cgi-bin/token` takes the
  secret in the query string: neither is ever logged or put in an exception message. requests'
  exceptions (which quote the URL) are re-raised sanitized, and urllib3's debug log line (which
  quotes the URL too) is redacted by a logging filter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from publisher.errors import TransportError
from publisher.redact import RedactFilter, redact
from publisher.stores.ledger import Ledger
from publisher.stores.wechat import WeChatStore

log = logging.getLogger(__name__)

# errcode -> (what it means, what to do)
ERRCODES: dict[int, tuple[str, str]] = {
    -1: ("system busy", "retry in a few minutes"),
    40001: ("the access token is invalid, or the AppSecret is wrong",
            "check the AppSecret in the environment variable named by [wechat] app_secret_env "
            "(reset it in the MP console 开发→基本配置 if unsure) and that no other program renews "
            "this account's token with force_refresh"),
    40002: ("invalid grant_type", "report this as a bug in publisher"),
    40004: ("invalid media type", "upload jpg or png images"),
    40005: ("invalid file type", "upload jpg or png images"),
    40006: ("invalid file size", "in-article images must be under 1 MB, material images under 10 MB"),
    40007: ("invalid media_id", "the draft or image was deleted on the platform; push again with --new-draft"),
    40009: ("invalid image size", "in-article images must be under 1 MB"),
    40013: ("invalid AppID", "check [wechat] app_id against the MP console 开发→基本配置"),
    40113: ("unsupported file type", "upload jpg or png images"),
    40125: ("invalid AppSecret",
            "check the AppSecret in the environment variable named by [wechat] app_secret_env; "
            "reset it in the MP console 开发→基本配置 if needed"),
    40164: ("this machine's IP address is not in the account's IP whitelist",
            "add this machine's public IP to the IP whitelist in the MP console 开发→基本配置 "
            "(IP白名单) and push again"),
    41001: ("access_token missing", "report this as a bug in publisher"),
    42001: ("the access token has expired", "push again (the token is renewed automatically)"),
    44002: ("empty POST body", "report this as a bug in publisher"),
    45002: ("content too long", "shorten the issue: content must be under 20,000 characters and 1 MB"),
    45003: ("title too long", "the title must be at most 32 characters"),
    45004: ("digest too long", "the digest must be at most 128 characters"),
    45009: ("the daily quota of calls to this API is used up",
            "wait until the quota resets (midnight, Beijing time), or clear it once a month in the "
            "MP console / with cgi-bin/clear_quota"),
    45011: ("API called too often (per-minute frequency limit)", "wait a minute and push again"),
    45166: ("invalid content", "the article content was rejected; check it for scripts or unsupported tags"),
    48001: ("this account is not authorized to use this API",
            "the account needs the permission (usually a verified 认证 account); check 接口权限 in "
            "the MP console"),
    53503: ("the draft cannot be published (it failed the platform's checks)",
            "open the draft in the MP console to see what is wrong"),
    53504: ("the draft is being edited in the MP console", "close it in the MP console and push again"),
    53505: ("the draft needs a declaration (原创/转载) before publishing", "set it in the MP console"),
}

TOKEN_ERRCODES = {40001, 42001, 40014}
# calls with a side effect that must not happen twice: never re-sent after a connection failure
# (the request may have been done and only the reply lost); the caller reconciles instead
NOT_RESENT = {"cgi-bin/draft/add", "cgi-bin/freepublish/submit"}
BUSY = -1

_FILTER = RedactFilter()
for _name in ("urllib3.connectionpool", "urllib3", "requests"):
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)


def describe(errcode: int) -> tuple[str, str]:
    return ERRCODES.get(errcode, ("unknown error", "see the errcode list at developers.weixin.qq.com"))


class WeChatError(TransportError):
    """The platform answered with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str, api: str):
        meaning, todo = describe(errcode)
        detail = f" [{errmsg}]" if errmsg else ""
        super().__init__(f"WeChat {api}: errcode {errcode} ({meaning}){detail}; {todo}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api


class WeChatClient:
    """One account's API client. `clock` and `sleep` are injectable; defaults are real time."""

    def __init__(
        self,
        *,
        app_id: str,
        secret: str,
        ledger: Ledger,
        api_base: str = "https://api.weixin.qq.com",
        token_mode: str = "stable_token",
        timeout: float = 30,
        busy_retries: int = 3,
        backoff: float = 0.5,
        margin: float = 300,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if token_mode not in ("stable_token", "token"):
            raise TransportError(f"[wechat] token_mode must be \"stable_token\" or \"token\", got {token_mode!r}")
        self.app_id = app_id
        self._secret = secret
        self.ledger = ledger
        self.api_base = api_base.rstrip("/") + "/"
        self.token_mode = token_mode
        self.timeout = timeout
        self.busy_retries = busy_retries
        self.backoff = backoff
        self.margin = margin
        self.session = session or requests.Session()
        self.clock = clock
        self.sleep = sleep
        self.calls: list[str] = []  # API paths called (no query strings), for reports
        self.token_requests = 0
        self.store = WeChatStore(ledger)

    def __repr__(self) -> str:  # never show the secret
        return f"WeChatClient(app_id={self.app_id!r}, api_base={self.api_base!r})"

    # -- access token ------------------------------------------------------------------------

    def token(self, *, force: bool = False) -> str:
        """A valid access token: the cached one unless it is (nearly) expired or `force`."""
        now = self.clock()
        if not force:
            row = self.store.token(self.app_id, self.token_mode)
            if row is not None and row["expires_at"] > now:
                return row["token"]
        token, expires_in = self._fetch_token(force)
        # renew ahead of expiry: 5 minutes early (or half the lifetime for short-lived tokens)
        margin = min(self.margin, expires_in / 2)
        self.store.put_token(self.app_id, self.token_mode, token, now + expires_in - margin, now)
        return token

    def _fetch_token(self, force: bool) -> tuple[str, float]:
        self.token_requests += 1
        if self.token_mode == "stable_token":
            api = "cgi-bin/stable_token"
            payload = {"grant_type": "client_credential", "appid": self.app_id,
                       "secret": self._secret, "force_refresh": bool(force)}
            data = self._request("POST", api, api, json_body=payload)
        else:
            api = "cgi-bin/token"
            params = {"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret}
            data = self._request("GET", api, api, params=params)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise TransportError(f"WeChat {api}: the answer has no access_token")
        try:
            expires_in = float(data.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        return token, expires_in

    # -- calls -------------------------------------------------------------------------------

    def call(self, api: str, *, json_body: Any = None, files: Mapping[str, Any] | None = None,
             params: Mapping[str, str] | None = None) -> dict:
        """POST an API that takes the access token; renews the token once on 40001/42001."""
        token = self.token()
        for attempt in (1, 2):
            query = {**(params or {}), "access_token": token}
            try:
                return self._request("POST", api, api, params=query, json_body=json_body, files=files,
                                     token=token)
            except WeChatError as exc:
                if exc.errcode in TOKEN_ERRCODES and attempt == 1:
                    log.info("WeChat %s: errcode %s; renewing the access token and retrying", api, exc.errcode)
                    token = self.token(force=True)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, method: str, path: str, api: str, *, params: Mapping[str, Any] | None = None,
                 json_body: Any = None, files: Mapping[str, Any] | None = None,
                 token: str | None = None) -> dict:
        """One API request with -1 (busy) and connection-failure retries; returns the JSON answer."""
        url = self.api_base + path
        data = headers = None
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            headers = {"Content-Type": "application/json; charset=utf-8"}
        attempt = 0
        while True:
            attempt += 1
            self.calls.append(path)
            try:
                if files:
                    # rewind file-like values would be needed for retries; we pass bytes tuples
                    resp = self.session.request(method, url, params=params, files=files, timeout=self.timeout)
                else:
                    resp = self.session.request(method, url, params=params, data=data, headers=headers,
                                                timeout=self.timeout)
            except requests.ConnectionError as exc:
                if path in NOT_RESENT:
                    raise TransportError(
                        f"WeChat {api}: the connection failed before the answer came "
                        f"({redact(type(exc).__name__, secrets=(self._secret, token))}); it may or may not have been "
                        "done. Push again: publisher looks on the platform for what was done and never "
                        "does it twice") from None
                if attempt <= self.busy_retries:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise TransportError(
                    f"WeChat {api}: cannot reach {self.api_base} after {attempt} attempts "
                    f"({redact(type(exc).__name__ + ': ' + str(exc), secrets=(self._secret, token))}); check the "
                    f"network and [wechat] api_base"
                ) from None
            except requests.RequestException as exc:
                raise TransportError(
                    f"WeChat {api}: request failed ({redact(type(exc).__name__ + ': ' + str(exc), secrets=(self._secret, token))})"
                ) from None
            answer, errcode = self._answer(resp, api)
            if errcode == 0:
                return answer
            errmsg = redact(str(answer.get("errmsg", "")), secrets=(self._secret, token))
            if errcode == BUSY and attempt <= self.busy_retries:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("WeChat %s: system busy (-1); retry %d in %.1fs", api, attempt, delay)
                self.sleep(delay)
                continue
            raise WeChatError(errcode, errmsg, api)

    def _answer(self, resp, api: str) -> tuple[dict, int]:
        """The JSON object of an HTTP 200 answer and its errcode (-999 when it is not a number)."""
        if resp.status_code != 200:
            raise TransportError(
                f"WeChat {api}: HTTP {resp.status_code} from {self.api_base}; check [wechat] api_base"
            )
        try:
            answer = json.loads(resp.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise TransportError(f"WeChat {api}: the answer is not JSON (HTTP {resp.status_code})") from None
        if not isinstance(answer, dict):
            raise TransportError(f"WeChat {api}: unexpected answer {type(answer).__name__}")
        errcode = answer.get("errcode", 0)
        try:
            return answer, int(errcode)
        except (TypeError, ValueError):
            return answer, -999

    # -- the APIs publisher uses -------------------------------------------------------------

    def upload_image(self, data: bytes, filename: str, media_type: str) -> str:
        """An in-article image (jpg/png, < 1 MB) → its mmbiz URL."""
        answer = self.call("cgi-bin/media/uploadimg", files={"media": (filename, data, media_type)})
        url = answer.get("url")
        if not url:
            raise TransportError("WeChat cgi-bin/media/uploadimg: the answer has no url")
        return str(url)

    def add_material(self, data: bytes, filename: str, media_type: str) -> tuple[str, str | None]:
        """A permanent image material (the cover) → (media_id, url)."""
        answer = self.call("cgi-bin/material/add_material", params={"type": "image"},
                           files={"media": (filename, data, media_type)})
        media_id = answer.get("media_id")
        if not media_id:
            raise TransportError("WeChat cgi-bin/material/add_material: the answer has no media_id")
        return str(media_id), answer.get("url")

    def draft_add(self, article: Mapping[str, Any]) -> str:
        answer = self.call("cgi-bin/draft/add", json_body={"articles": [dict(article)]})
        media_id = answer.get("media_id")
        if not media_id:
            raise TransportError("WeChat cgi-bin/draft/add: the answer has no media_id")
        return str(media_id)

    def draft_update(self, media_id: str, article: Mapping[str, Any], index: int = 0) -> None:
        self.call("cgi-bin/draft/update",
                  json_body={"media_id": media_id, "index": index, "articles": dict(article)})

    def draft_get(self, media_id: str) -> dict:
        return self.call("cgi-bin/draft/get", json_body={"media_id": media_id})

    def publish_submit(self, media_id: str) -> str:
        answer = self.call("cgi-bin/freepublish/submit", json_body={"media_id": media_id})
        publish_id = answer.get("publish_id")
        if publish_id in (None, ""):
            raise TransportError("WeChat cgi-bin/freepublish/submit: the answer has no publish_id")
        return str(publish_id)

    def draft_batchget(self, offset: int = 0, count: int = 20) -> dict:
        return self.call("cgi-bin/draft/batchget", json_body={"offset": offset, "count": count, "no_content": 1})

    def publish_batchget(self, offset: int = 0, count: int = 20) -> dict:
        return self.call("cgi-bin/freepublish/batchget",
                         json_body={"offset": offset, "count": count, "no_content": 1})

    def publish_get(self, publish_id: str) -> dict:
        return self.call("cgi-bin/freepublish/get", json_body={"publish_id": publish_id})
