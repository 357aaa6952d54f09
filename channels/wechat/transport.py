"""WeChat Official Account transport: the wechat rendition becomes a draft (and, asked, a post).

Order of work, so that nothing is sent when something is wrong locally:
1. every platform limit (title, author, digest, content, 阅读原文 URL) and every image (format,
   size, a cover for the draft) is checked before any API call;
2. local images are uploaded — in-article images and the QR with media/uploadimg (their URLs
   replace the refs in the body), the cover with material/add_material (→ thumb_media_id) —
   each at most once per content hash (table `wechat_uploads`);
3. the draft is created (draft/add), or, when this issue already has one (table `wechat_drafts`),
   updated in place (draft/update) unless options["new_draft"];
4. with options["publish"], freepublish/submit, then freepublish/get is polled with backoff until
   a final status or [wechat] publish_poll_seconds.

Never two articles for one issue: the intent is recorded before each side effect (table
`wechat_intents`: a draft being added, a publish being submitted) and cleared in the same
transaction that records its result. A push that finds an intent left by a crash reconciles
before doing anything: the draft is looked up in draft/batchget (our title and 阅读原文 URL are the
marker) instead of being added again; a submit whose publish_id was not recorded (answer lost)
is looked up in freepublish/batchget and the draft box, and submitted again only when the draft
sat there unpublished for [wechat] publish_settle_hours; a recorded publish_id is polled and never
submitted again; a draft that left
the draft box because it was published is recognised in freepublish/batchget, not replaced.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import publisher.channels.wechat.images as images
import publisher.channels.wechat.limits as limits
from publisher.channels.base import LocalImage, Rendition
from publisher.channels.wechat.api import WeChatClient, WeChatError

from publisher.errors import ConfigError, SourceError, TransportError
from publisher.refs import is_http
from publisher.stores import open_ledger
from publisher.stores.ledger import checkpoint
from publisher.stores.wechat import WeChatStore
from publisher.transports.base import PushContext, PushResult, Transport

UPLOADIMG_LIMIT = 1024 * 1024  # in-article images: jpg/png under 1 MB
MATERIAL_LIMIT = 10 * 1024 * 1024  # permanent image material: under 10 MB

PUBLISH_STATUS = {
    0: "成功 (published)",
    1: "发布中 (publishing)",
    2: "原创失败 (failed the originality check)",
    3: "常规失败 (failed)",
    4: "平台审核不通过 (rejected by the platform's review)",
    5: "成功后用户删除所有文章 (published, then all its articles were deleted by the account)",
    6: "成功后系统封禁所有文章 (published, then all its articles were banned by the platform)",
}
PUBLISH_FAILED = (2, 3, 4)  # not published: submitting again makes no second article
SCAN_PAGES = 5  # batchget pages (20 each) searched when reconciling: the newest 100


def sniff(data: bytes) -> str | None:
    """The image format from its magic bytes: jpeg, png, gif, bmp, webp or None."""
    return images.sniff(data)


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MB ({n:,} bytes)"


@dataclass
class Prepared:
    """An image ready to upload: the bytes that go out and where they came from.

    `sha256` is the hash of the image as found (file, generated or downloaded bytes), so the
    upload cache is looked up by the source; `source_url` is set for a downloaded remote image,
    `cached_url` when that URL was uploaded before (nothing is downloaded or sent again)."""

    image: LocalImage
    data: bytes
    filename: str
    media_type: str
    sha256: str
    converted_from: str | None = None
    source_url: str | None = None
    cached_url: str | None = None

    @property
    def name(self) -> str:
        return str(self.image.path) if self.image.path else self.image.ref


def prepare_image(image: LocalImage, *, kind: str, label: str | None = None) -> Prepared:
    """Check and convert one image with images.py (in-article: jpg/png under 1 MB; the
    cover: the feed card's 2.35:1); TransportError naming the image when impossible."""
    label = label or (str(image.path) if image.path else f"{image.ref} (generated {image.role} image)")
    if image.path is not None and not Path(image.ref).is_absolute():
        from publisher.pipeline import issue_file

        try:  # checked again at upload time: nothing outside the issue's folder is ever sent
            issue_file(image)
        except SourceError as exc:
            raise TransportError(str(exc)) from None
    try:
        data = image.read()  # only image files, by name and content (refs.image_bytes)
    except OSError as exc:
        raise TransportError(f"cannot read image {label}: {exc.strerror or exc}") from None
    except SourceError as exc:
        raise TransportError(f"{label}: {exc.message}; nothing was uploaded") from None
    try:
        fitted = images.fit(data) if kind == "uploadimg" else images.cover(data, pad=image.role == "qr")
    except images.ImageError as exc:
        raise TransportError(f"image {label} {exc}") from None
    if len(fitted.data) >= (UPLOADIMG_LIMIT if kind == "uploadimg" else MATERIAL_LIMIT):
        raise TransportError(f"image {label} is {_mb(len(fitted.data))} after conversion; shrink it")
    stem = Path(image.path.name).stem if image.path else (Path(urlsplit(image.ref).path).stem or image.role)
    return Prepared(image, fitted.data, re.sub(r"[^\w.-]", "_", stem)[:60] + fitted.extension,
                    f"image/{fitted.format}", hashlib.sha256(data).hexdigest(), fitted.note or None)


def check_limits(article: dict[str, Any]) -> None:
    """Every draft/add limit (channels/wechat/limits.py, the numbers and words `publisher check`
    uses); a TransportError listing every one broken."""
    problems = limits.check_article(article)
    if problems:
        raise TransportError("the WeChat draft cannot be sent: " + "; ".join(v.message for v in problems))


def replace_ref(body: str, ref: str, url: str) -> tuple[str, int]:
    """Replace src="ref" (as written, or HTML-escaped) by src="url"; returns (body, count)."""
    count = 0
    for written in {ref, html.escape(ref, quote=True)}:
        for q in ('"', "'"):
            needle = f"src={q}{written}{q}"
            count += body.count(needle)
            body = body.replace(needle, f'src="{html.escape(url, quote=True)}"')
    return body, count


_IMG_SRC_RE = re.compile(r"<img\b[^>]*?\bsrc=[\"']([^\"']+)[\"']", re.I)


class WeChatTransport(Transport):
    channel = "wechat"

    @classmethod
    def check_config(cls, settings) -> None:
        news = settings["newsletter"]
        if not (news["qr_image"] or news["qr_target"]):
            raise ConfigError(
                "[newsletter] qr_image is not set: WeChat drops images it does not host, so the "
                "account's QR image must be uploaded; save it (qr_public_url) as a file and set "
                f"qr_image to its path in {settings.where()}")

    @classmethod
    def is_done(cls, record, options) -> bool:
        """A draft-only row is not done when publishing is asked for and nothing was published:
        the push then updates the draft in place and publishes it."""
        if record is None or record.state != "done":
            return False
        return not (options.get("publish") and not record.details.get("publish_id"))

    @classmethod
    def report(cls, settings, ledger, issue, push) -> dict[str, Any]:
        """A push's numbers, and the issue's latest draft: its media id, publish id and status,
        and the article URL (the pushed URL until WeChat reported one)."""
        from publisher.stores.analytics import ReportReads

        draft = ReportReads(ledger).wechat(issue) or {}
        return {**super().report(settings, ledger, issue, push),
                "wechat": {"draft_media_id": draft.get("media_id"), "publish_id": draft.get("publish_id"),
                           "publish_status": draft.get("publish_status"),
                           "article_url": draft.get("article_url") or push["url"]}}

    # polling of freepublish/get: first wait, growth factor, longest wait (seconds)
    poll_first = 0.5
    poll_factor = 2.0
    poll_max = 15.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time):
        self.clock = clock
        self.sleep = sleep
        self.wall = wall  # across processes: when an intent was recorded

    # -- the push ------------------------------------------------------------------------------

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        cfg = ctx.settings["wechat"]
        options = dict(ctx.options or {})
        publish = bool(options.get("publish"))
        new_draft = bool(options.get("new_draft"))
        notes: list[str] = []

        # 1. everything checked locally, before any request
        article = self._article(rendition, ctx)
        check_limits({**article, "content": rendition.body})
        inline, cover = self._images(rendition, ctx, notes)
        if ctx.dry_run:
            return PushResult(
                details={"dry_run": True, "images": len(inline), "notes": notes},
                summary=f"dry run: would upload {len(inline)} image(s) and the cover, then "
                        f"{'create' if new_draft else 'create or update'} the draft"
                        f"{' and publish it' if publish else ''}",
            )
        app_id = ctx.settings.require("wechat", "app_id", "the AppID of the Official Account")
        secret = ctx.settings.secret("wechat", "app_secret_env")
        client = WeChatClient(app_id=app_id, secret=secret, ledger=ctx.ledger, api_base=cfg["api_base"],
                              token_mode=cfg["token_mode"])
        store = WeChatStore(ctx.ledger)

        # 2. uploads (each content hash once per account)
        body, thumb_media_id, uploaded, cached = self._upload_all(client, store, app_id, rendition, inline, cover,
                                                                  ctx, notes)
        article["content"] = body
        article["thumb_media_id"] = thumb_media_id
        check_limits(article)  # the image URLs changed the content's length

        # 3. reconcile what an interrupted push left, then the draft
        issue = rendition.issue
        state = self._reconcile(client, store, app_id, issue, article, cfg, notes)
        base = {"thumb_media_id": thumb_media_id, "images_uploaded": uploaded, "images_cached": cached,
                "title": article["title"], "content_chars": len(body), "notes": notes}
        if state["publish_id"] and state["publish_status"] not in PUBLISH_FAILED and not new_draft:
            # submitted before: poll that publish, never submit again
            return self._finish_publish(client, store, app_id, issue, state["media_id"], state["publish_id"],
                                        state["publish_status"], state["article_url"], cfg, base,
                                        "the issue was already submitted for publishing")
        done = self._update_or_add(client, store, app_id, issue, article, state["media_id"], new_draft, base, notes)
        if isinstance(done, PushResult):
            return done
        media_id, action = done
        details: dict[str, Any] = {"media_id": media_id, "draft": action, **base}
        summary = f"draft {action} (media_id {media_id}); {uploaded} image(s) uploaded, {cached} from cache"
        if not publish:
            return PushResult(remote_id=media_id, details=details, summary=summary)

        # 4. publish: the intent first, then the submit, then its publish_id (one transaction)
        store.intend(app_id, issue, "publish_submit", media_id)
        checkpoint("wechat:before-submit")
        publish_id = client.publish_submit(media_id)
        checkpoint("wechat:after-submit")
        store.record_publish(app_id, issue, publish_id, None, None, clear="publish_submit")
        return self._finish_publish(client, store, app_id, issue, media_id, publish_id, None, None, cfg,
                                    {**details, "draft": action}, summary)

    def _finish_publish(self, client, store, app_id, issue, media_id, publish_id, status, article_url,
                        cfg, details, summary) -> PushResult:
        details = {**details, "media_id": media_id, "publish_id": publish_id}
        if status != 0:
            answer = self._poll(client, publish_id, float(cfg["publish_poll_seconds"]))
            status = int(answer.get("publish_status", -1))
            article_url = _article_url(answer)
            store.record_publish(app_id, issue, publish_id, status, article_url)
        details["publish_status"] = status
        if status == 1:
            raise TransportError(
                f"WeChat publish {publish_id} of draft {media_id} is still publishing after "
                f"{cfg['publish_poll_seconds']} s ([wechat] publish_poll_seconds); check it in the MP console "
                "(发表记录) or push again with --publish later (it polls this publish; it never submits twice)"
            )
        if status != 0:
            meaning = PUBLISH_STATUS.get(status, "unknown status")
            raise TransportError(
                f"WeChat publish {publish_id} of draft {media_id} ended with publish_status {status}: "
                f"{meaning}; see 发表记录 in the MP console, fix the draft and push again"
            )
        details["article_url"] = article_url
        return PushResult(remote_id=media_id, url=article_url, details=details,
                          summary=f"{summary}; published: {article_url}")

    # -- intents and reconciliation --------------------------------------------------------------

    def _add_draft(self, client: WeChatClient, store: WeChatStore, app_id: str, issue: str,
                   article: dict[str, Any]) -> str:
        store.intend(app_id, issue, "draft_add", None)
        media_id = client.draft_add(article)
        checkpoint("wechat:after-draft-add")
        store.record_draft(app_id, issue, media_id)
        return media_id

    def _reconcile(self, client: WeChatClient, store: WeChatStore, app_id: str, issue: str,
                   article: dict[str, Any], cfg, notes: list[str]) -> dict[str, Any]:
        """The issue's draft and publish as the platform has them, after an interrupted push."""
        intents = store.intents(app_id, issue)
        if "draft_add" in intents:
            media_id = self._find_draft(client, article)
            if media_id is not None:
                notes.append(f"found draft {media_id} added by an interrupted push; not adding another")
                store.record_draft(app_id, issue, media_id)
            else:
                found = self._find_published(client, article)
                if found is not None:
                    store.record_draft(app_id, issue, found[2])
                    store.record_publish(app_id, issue, found[0], 0, found[1])
                    notes.append(f"the draft of an interrupted push was already published: {found[1]}")
                else:
                    store.drop_intent(app_id, issue, "draft_add")  # draft/add never took effect
        if "publish_submit" in intents:
            self._reconcile_submit(client, store, app_id, issue, article, intents["publish_submit"], cfg, notes)
        return store.draft(app_id, issue)

    def _reconcile_submit(self, client, store, app_id, issue, article, intent, cfg, notes) -> None:
        """A submit was started and its publish_id never recorded (its reply was lost, or the push
        died around it): did it take effect? Never submitted again while the platform may still
        be publishing it.

        The platform has no query by draft: freepublish/get needs the publish_id we lost. What
        it shows is a published article in freepublish/batchget (ours: title and 阅读原文 URL) and
        whether the draft is still in the draft box (draft/get). This push watches both for up to
        `publish_poll_seconds`; a published article is recorded. Only a draft that has stayed in
        the box, unpublished, for `publish_settle_hours` since the submit was started counts as a
        submit that never took effect — then, and only then, it may be submitted (once) again.
        Otherwise the push fails, keeps the intent, and says when to look again."""
        media_id = intent["media_id"]
        started = _epoch(intent["created_at"])
        settle = float(cfg["publish_settle_hours"]) * 3600
        budget = float(cfg["publish_poll_seconds"])
        deadline = self.clock() + budget
        delay = self.poll_first
        while True:
            found = self._find_published(client, article)
            if found is not None:
                store.record_publish(app_id, issue, found[0], 0, found[1], clear="publish_submit")
                notes.append(f"the publish submitted by an interrupted push succeeded: {found[1]}")
                return
            in_box = self._draft_exists(client, media_id)
            if in_box and self.wall() - started >= settle:
                store.drop_intent(app_id, issue, "publish_submit")
                notes.append(f"the submit of an interrupted push did not take effect: draft {media_id} stayed "
                             f"in the draft box, unpublished, for {settle / 3600:g} h ([wechat] "
                             "publish_settle_hours); submitting it again")
                return
            if self.clock() >= deadline:
                break
            self.sleep(min(delay, max(0.0, deadline - self.clock())))
            delay = min(delay * self.poll_factor, self.poll_max)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started + settle))
        where = ("is still in the draft box" if in_box else
                 "has left the draft box (the platform is publishing it, or the publish failed)")
        raise TransportError(
            f"WeChat: a submit of draft {media_id} for publishing (started {_utc(started)}) lost its answer; "
            f"the draft {where} and no article with this title and 阅读原文 URL is published yet "
            f"(watched {budget:g} s, [wechat] publish_poll_seconds). publisher never submits one draft "
            f"twice while the platform may still be publishing it: push again later — it records the "
            f"article once it is listed"
            + (f", and submits again only if the draft is still unpublished in the box after {when} "
               "([wechat] publish_settle_hours)" if in_box else
               "; if 发表记录 in the MP console shows the publish failed, fix the draft there and publish it "
               "by hand (the next push recognises the article)")
            + ".")

    @staticmethod
    def _ours(news_item: list, article: dict[str, Any]) -> bool:
        first = (news_item or [{}])[0]
        return (first.get("title") == article["title"]
                and (first.get("content_source_url") or "") == (article.get("content_source_url") or "")
                and not first.get("is_deleted"))

    def _find_draft(self, client: WeChatClient, article: dict[str, Any]) -> str | None:
        for page in range(SCAN_PAGES):
            answer = client.draft_batchget(page * 20, 20)
            for item in answer.get("item") or []:
                if self._ours((item.get("content") or {}).get("news_item"), article):
                    return str(item["media_id"])
            if (page + 1) * 20 >= int(answer.get("total_count") or 0):
                return None
        return None

    def _find_published(self, client: WeChatClient, article: dict[str, Any]) -> tuple[str, str, str] | None:
        """(publish ref, article URL, article id) of our article among the newest published."""
        for page in range(SCAN_PAGES):
            answer = client.publish_batchget(page * 20, 20)
            for item in answer.get("item") or []:
                news = (item.get("content") or {}).get("news_item") or []
                if self._ours(news, article):
                    return f"article:{item.get('article_id')}", str(news[0].get("url") or ""), \
                        str(item.get("article_id"))
            if (page + 1) * 20 >= int(answer.get("total_count") or 0):
                return None
        return None

    @staticmethod
    def _draft_exists(client: WeChatClient, media_id: str | None) -> bool:
        if not media_id:
            return False
        try:
            client.draft_get(media_id)
        except WeChatError as exc:
            if exc.errcode == 40007:
                return False
            raise
        return True

    # -- pieces ----------------------------------------------------------------------------------

    def _upload_all(self, client, store, app_id, rendition, inline, cover, ctx, notes):
        """Every inline image and the cover uploaded (or found in the cache): (body with the
        WeChat URLs, the cover's media_id, uploaded, cached)."""
        body = rendition.body
        uploaded = cached = 0
        total = len(inline) + 1
        for done, prep in enumerate(inline, 1):
            url, fresh = self._upload(client, store, app_id, prep, "uploadimg")
            uploaded, cached = uploaded + fresh, cached + (not fresh)
            body, count = replace_ref(body, prep.image.ref, url)
            if count == 0:
                notes.append(f"image {prep.image.ref} is not referenced in the body")
            if ctx.progress:
                ctx.progress(done, total)
        thumb_media_id, fresh = self._upload(client, store, app_id, cover, "material")
        uploaded, cached = uploaded + fresh, cached + (not fresh)
        if ctx.progress:
            ctx.progress(total, total)
        leftover = sorted({src for src in _IMG_SRC_RE.findall(body) if not _WECHAT_HOSTED.match(src)})
        if leftover:
            notes.append(f"{len(leftover)} image(s) not hosted by WeChat will be filtered out by the "
                         f"platform: {', '.join(leftover[:5])}")
        return body, thumb_media_id, uploaded, cached

    def _update_or_add(self, client, store, app_id, issue, article, media_id, new_draft, base, notes):
        """The draft updated in place, or added: (media_id, "updated"/"added"); a PushResult when
        the draft turns out to be published already (by hand in the MP console: not replaced)."""
        if media_id is None or new_draft:
            return self._add_draft(client, store, app_id, issue, article), "added"
        try:
            client.draft_update(media_id, article)
            return media_id, "updated"
        except WeChatError as exc:
            if exc.errcode != 40007:
                raise
        found = self._find_published(client, article)
        if found is not None:
            store.record_publish(app_id, issue, found[0], 0, found[1])
            notes.append(f"draft {media_id} was published on the platform: {found[1]}")
            return PushResult(remote_id=media_id, url=found[1],
                              details={**base, "media_id": media_id, "publish_id": found[0],
                                       "publish_status": 0, "article_url": found[1]},
                              summary=f"already published: {found[1]}")
        notes.append(f"draft {media_id} no longer exists on the platform (deleted); created a new one")
        return self._add_draft(client, store, app_id, issue, article), "added"

    def _article(self, rendition: Rendition, ctx: PushContext) -> dict[str, Any]:
        cfg = ctx.settings["wechat"]
        meta = rendition.metadata
        issue = ctx.issue
        title = meta.get("title") or cfg["title_template"].format(
            name=ctx.settings["newsletter"]["name"], date=rendition.issue, title=issue.title)
        author = meta.get("author") or issue.author or ctx.settings["newsletter"]["author"]
        return {
            "title": str(title),
            "author": str(author or ""),
            "digest": str(meta.get("digest") or issue.digest or ""),
            "content": "",
            "content_source_url": str(meta.get("content_source_url") or ""),
            "thumb_media_id": "",
            "need_open_comment": int(cfg["need_open_comment"]),
            "only_fans_can_comment": int(cfg["only_fans_can_comment"]),
        }

    def _images(self, rendition: Rendition, ctx: PushContext, notes: list[str]) -> tuple[list[Prepared], Prepared]:
        inline = [prepare_image(img, kind="uploadimg") for img in rendition.images if img.role in ("inline", "qr")]
        inline += self._remote_images(rendition, ctx)
        for prep in inline:
            if prep.converted_from:
                notes.append(f"{prep.name}: {prep.converted_from}")
        covers = [img for img in rendition.images if img.role == "cover"]
        if covers:
            return inline, prepare_image(covers[0], kind="material")
        default = ctx.settings["wechat"].get("default_cover", "")
        if default:
            path = Path(default)
            notes.append(f"the issue has no cover; using [wechat] default_cover {path}")
            return inline, prepare_image(LocalImage(ref=str(path), path=path, role="cover"), kind="material")
        qrs = [img for img in rendition.images if img.role == "qr"]
        if qrs:
            notes.append("the issue has no cover; using the QR code as the draft's cover (thumb) — set "
                         "`cover:` in the issue or [wechat] default_cover")
            return inline, prepare_image(qrs[0], kind="material")
        raise TransportError(
            f"issue {rendition.issue}: a WeChat draft needs a cover image (thumb_media_id) and the "
            "rendition has none (no cover, no QR code): set `cover:` in the issue or [wechat] default_cover"
        )

    def _upload(self, client: WeChatClient, store: WeChatStore, app_id: str, prep: Prepared,
                kind: str) -> tuple[str, bool]:
        """(url or media_id, whether it was uploaded now) — from the cache when already sent."""
        if prep.cached_url:
            return prep.cached_url, False
        result = self._upload_bytes(client, store, app_id, prep, kind)
        if prep.source_url:
            store.put_remote(app_id, prep.source_url, prep.sha256)
        return result

    def _upload_bytes(self, client: WeChatClient, store: WeChatStore, app_id: str, prep: Prepared,
                      kind: str) -> tuple[str, bool]:
        row = store.upload(app_id, prep.sha256, kind)
        if row is not None:
            return (row["url"] if kind == "uploadimg" else row["media_id"]), False
        if kind == "uploadimg":
            url, media_id = client.upload_image(prep.data, prep.filename, prep.media_type), None
        else:
            media_id, url = client.add_material(prep.data, prep.filename, prep.media_type)
        store.put_upload(app_id, prep.sha256, kind, url, media_id)
        return (url if kind == "uploadimg" else media_id), True

    @classmethod
    def pasteable(cls, rendition: Rendition, settings) -> tuple[str, list[str]]:
        """The article for the mp editor: local and remote images replaced by the mmbiz URLs the
        ledger records for this account; a warning with the command to run for those it has not."""
        body = rendition.body
        app_id = settings["wechat"]["app_id"]
        by_hash: dict[str, str] = {}
        remote: dict[str, str] = {}
        ledger = open_ledger(settings, existing=True) if settings.path("paths", "ledger") or \
            settings["database"]["url"] else None
        if ledger is not None:
            by_hash, remote = WeChatStore(ledger, create=False).image_urls(app_id)
        missing = []
        for image in rendition.images:
            if image.role not in ("inline", "qr"):
                continue
            try:
                url = by_hash.get(hashlib.sha256(image.read()).hexdigest())
            except OSError:
                url = None
            if url:
                body, _ = replace_ref(body, image.ref, url)
            else:
                missing.append(image.ref)
        for src in dict.fromkeys(html.unescape(s) for s in _IMG_SRC_RE.findall(body)):
            if src in remote:
                body, _ = replace_ref(body, src, remote[src])
            elif is_http(src) and not _WECHAT_HOSTED.match(src):
                missing.append(src)
        warnings = []
        if missing:
            warnings.append(
                f"{len(missing)} image(s) not uploaded to WeChat yet ({', '.join(missing[:5])}"
                f"{', …' if len(missing) > 5 else ''}): the mp editor cannot show them. Upload them with "
                f"`publisher push {rendition.issue} --channel wechat` (it also creates or updates the "
                "draft), then copy again — or replace them in the editor by hand")
        return body, warnings

    def _remote_images(self, rendition: Rendition, ctx: PushContext) -> list[Prepared]:
        """Every http(s) <img> of the body not hosted by WeChat: downloaded (once per URL and
        account: a URL uploaded before is taken from the ledger) and converted like local images."""
        cfg = ctx.settings["wechat"]
        urls = list(dict.fromkeys(html.unescape(src) for src in _IMG_SRC_RE.findall(rendition.body)))
        urls = [u for u in urls if is_http(u) and not _WECHAT_HOSTED.match(u)]
        if not urls:
            return []
        known = WeChatStore(ctx.ledger).remote_uploads(cfg["app_id"])
        out = []
        for url in urls:
            image = LocalImage(ref=url, role="inline")
            if url in known:
                out.append(Prepared(image, b"", "", "", "", source_url=url, cached_url=known[url]))
                continue
            file, line = _source_line(ctx.issue, url)
            where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
            try:
                data = images.download(url, max_bytes=int(cfg["remote_image_max_bytes"]),
                                       timeout=float(cfg["remote_image_timeout"]),
                                       allow_private=bool(ctx.settings["network"]["allow_private"]))
                prep = prepare_image(LocalImage(ref=url, data=data, role="inline"), kind="uploadimg",
                                     label=f"remote image {url}")
            except images.ImageError as exc:
                raise TransportError(f"{where}remote image {url} {exc}") from None
            except TransportError as exc:
                raise TransportError(f"{where}{exc.message}") from None
            prep.source_url = url
            out.append(prep)
        return out

    def _poll(self, client: WeChatClient, publish_id: str, budget: float) -> dict:
        deadline = self.clock() + budget
        delay = self.poll_first
        while True:
            remaining = deadline - self.clock()
            self.sleep(max(0.0, min(delay, remaining)))
            answer = client.publish_get(publish_id)
            checkpoint("wechat:polling")
            if int(answer.get("publish_status", -1)) != 1 or self.clock() >= deadline:
                return answer
            delay = min(delay * self.poll_factor, self.poll_max)


def _epoch(iso: str) -> float:
    """An intent's created_at (ISO 8601, UTC) as seconds since the epoch."""
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _article_url(answer: dict) -> str | None:
    detail = answer.get("article_detail") or {}
    for item in detail.get("item") or []:
        if item.get("article_url"):
            return str(item["article_url"])
    return answer.get("article_url")


_WECHAT_HOSTED = re.compile(r"https?://mmbiz\.q(?:pic|logo)\.cn/", re.I)


def _source_line(issue, needle: str) -> tuple[str | None, int | None]:
    """(file, first line) of the issue source where `needle` is written, for error messages."""
    path = getattr(issue, "source_path", None)
    if not path:
        return None, None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return path, None
    for n, text in enumerate(lines, 1):
        if needle in text or html.escape(needle) in text:
            return path, n
    return path, None
