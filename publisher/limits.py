"""Platform limits, in one place: `publisher check` reports them, transports enforce them.

The numbers come from /work/shared/docs/channels.md ("Platform limits and facts"). Each check
takes a Rendition (channels/base.py) and returns Violations carrying the channel, the measured
value and the limit, so the WeChat transport can refuse a push with the same numbers and words
that `publisher check` prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from publisher.channels.base import Rendition

# ---- WeChat draft/add ----------------------------------------------------------------------
WECHAT_TITLE_MAX_CHARS = 32  # title ≤ 32 characters
WECHAT_DIGEST_MAX_CHARS = 128  # digest ≤ 128 characters
WECHAT_AUTHOR_MAX_CHARS = 16  # author ≤ 16 characters
WECHAT_CONTENT_MAX_CHARS = 19_999  # content < 20,000 characters
WECHAT_CONTENT_MAX_BYTES = 1024 * 1024 - 1  # content < 1 MB
WECHAT_SOURCE_URL_MAX_BYTES = 1024  # content_source_url (阅读原文) ≤ 1 KB

# ---- email ---------------------------------------------------------------------------------
EMAIL_HTML_MAX_BYTES = 102 * 1024 - 1  # Gmail clips HTML bodies of 102 KB and more (UTF-8 bytes)

# ---- Zhihu 导入文档 ---------------------------------------------------------------------------
ZHIHU_MAX_HEADING_LEVEL = 4


@dataclass(frozen=True)
class Violation:
    channel: str
    what: str  # short name: "title", "digest", "content", "html", "strikethrough", …
    message: str
    value: int | str | None = None  # the measured value
    limit: int | str | None = None  # the largest value allowed (or the rule)


def _over(channel: str, what: str, label: str, value: int, limit: int, unit: str) -> Violation:
    return Violation(
        channel,
        what,
        f"{channel} {label} is {value:,} {unit}; the limit is {limit:,} (at most)",
        value,
        limit,
    )


def check_wechat(r: Rendition) -> list[Violation]:
    out: list[Violation] = []
    title = str(r.metadata.get("title") or "")
    digest = str(r.metadata.get("digest") or "")
    author = str(r.metadata.get("author") or "")
    if len(title) > WECHAT_TITLE_MAX_CHARS:
        out.append(_over("wechat", "title", f"title {title!r}", len(title), WECHAT_TITLE_MAX_CHARS, "characters"))
    if len(digest) > WECHAT_DIGEST_MAX_CHARS:
        out.append(_over("wechat", "digest", "digest", len(digest), WECHAT_DIGEST_MAX_CHARS, "characters"))
    if len(author) > WECHAT_AUTHOR_MAX_CHARS:
        out.append(_over("wechat", "author", f"author {author!r}", len(author), WECHAT_AUTHOR_MAX_CHARS, "characters"))
    if len(r.body) > WECHAT_CONTENT_MAX_CHARS:
        out.append(_over("wechat", "content", "content", len(r.body), WECHAT_CONTENT_MAX_CHARS, "characters"))
    size = len(r.body.encode("utf-8"))
    if size > WECHAT_CONTENT_MAX_BYTES:
        out.append(_over("wechat", "content-bytes", "content", size, WECHAT_CONTENT_MAX_BYTES, "bytes"))
    url_size = len(str(r.metadata.get("content_source_url") or "").encode("utf-8"))
    if url_size > WECHAT_SOURCE_URL_MAX_BYTES:
        out.append(_over("wechat", "content_source_url", "content_source_url (阅读原文)", url_size,
                         WECHAT_SOURCE_URL_MAX_BYTES, "bytes"))
    return out


def email_html(r: Rendition) -> str:
    """The HTML part of an email rendition: the body when it is HTML, else an .html part."""
    if "html" in r.media_type:
        return r.body
    for name, text in r.parts.items():
        if name.endswith((".html", ".htm")):
            return text
    return r.body


def check_email(r: Rendition) -> list[Violation]:
    size = len(email_html(r).encode("utf-8"))
    if size > EMAIL_HTML_MAX_BYTES:
        return [
            Violation(
                "email",
                "html",
                f"email HTML is {size:,} bytes; Gmail clips bodies of {EMAIL_HTML_MAX_BYTES + 1:,} bytes "
                "(102 KB) and more, hiding the footer and its unsubscribe link",
                size,
                EMAIL_HTML_MAX_BYTES,
            )
        ]
    return []


_FENCE = re.compile(r"^\s*(```|~~~)")
_STRIKE = re.compile(r"~~[^~\n]+~~|<(?:del|s|strike)\b", re.I)
_MD_HEADING = re.compile(r"^(#{1,6})\s")
_HTML_HEADING = re.compile(r"<h([1-6])\b", re.I)
_COLGROUP = re.compile(r"<colgroup\b", re.I)
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*(<[^>]*>|[^)]*?)\s*\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.I)


def _zhihu_image_problem(url: str) -> str | None:
    url = url.strip()
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]
    # a Markdown image may carry a title: ![a](url "title")
    m = re.match(r'^(\S+)\s+"[^"]*"$', url)
    if m:
        url = m.group(1)
    if not re.match(r"^https?://", url, re.I):
        return "is not a public http(s) URL"
    if re.search(r"\s", url):
        return "contains a space"
    return None


def check_zhihu(r: Rendition) -> list[Violation]:
    """Constructs Zhihu's 导入文档 cannot import; the body is Markdown (HTML fragments too)."""
    out: list[Violation] = []
    in_code = False
    for n, line in enumerate(r.body.split("\n"), 1):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        where = f"(line {n} of the zhihu rendition)"
        if _STRIKE.search(line):
            out.append(Violation("zhihu", "strikethrough",
                                 f"zhihu cannot import strikethrough {where}: {line.strip()[:60]}",
                                 "strikethrough", "none"))
        levels = [len(m.group(1)) for m in [_MD_HEADING.match(line)] if m]
        levels += [int(m.group(1)) for m in _HTML_HEADING.finditer(line)]
        for level in levels:
            if level > ZHIHU_MAX_HEADING_LEVEL:
                out.append(Violation("zhihu", "heading",
                                     f"zhihu imports headings up to level {ZHIHU_MAX_HEADING_LEVEL}; "
                                     f"this one is level {level} {where}", level, ZHIHU_MAX_HEADING_LEVEL))
        if _COLGROUP.search(line):
            out.append(Violation("zhihu", "colgroup",
                                 f"zhihu imports tables with <colgroup> empty {where}", "<colgroup>", "none"))
        urls = [m.group(1) for m in _MD_IMAGE.finditer(line)]
        urls += [m.group(1) or m.group(2) or "" for m in _HTML_IMAGE.finditer(line)]
        for url in urls:
            problem = _zhihu_image_problem(url)
            if problem:
                out.append(Violation("zhihu", "image",
                                     f"zhihu cannot import the image {url.strip()!r}: it {problem} {where}",
                                     url.strip(), "public http(s) URL without spaces"))
    return out


def check_rendition(r: Rendition) -> list[Violation]:
    """Every limit of the rendition's channel, as the channel declares them (`Channel.check`)."""
    from publisher.channels.base import get_channel

    return get_channel(r.channel).check(r)


__all__ = [
    "EMAIL_HTML_MAX_BYTES",
    "Violation",
    "WECHAT_AUTHOR_MAX_CHARS",
    "WECHAT_CONTENT_MAX_BYTES",
    "WECHAT_CONTENT_MAX_CHARS",
    "WECHAT_DIGEST_MAX_CHARS",
    "WECHAT_SOURCE_URL_MAX_BYTES",
    "WECHAT_TITLE_MAX_CHARS",
    "ZHIHU_MAX_HEADING_LEVEL",
    "check_email",
    "check_rendition",
    "check_wechat",
    "check_zhihu",
]
