"""WeChat's draft/add limits (developers.weixin.qq.com; /work/shared/docs/channels.md): `publisher
check` reports them, the transport refuses a push over them, the preview shows them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from publisher.channels.base import Rendition

from publisher.limits import Violation, over

TITLE_MAX_CHARS = 32  # title ≤ 32 characters
DIGEST_MAX_CHARS = 128  # digest ≤ 128 characters
AUTHOR_MAX_CHARS = 16  # author ≤ 16 characters
CONTENT_MAX_CHARS = 19_999  # content < 20,000 characters
CONTENT_MAX_BYTES = 1024 * 1024 - 1  # content < 1 MB
SOURCE_URL_MAX_BYTES = 1024  # content_source_url (阅读原文) ≤ 1 KB


def check_article(article: Mapping[str, Any]) -> list[Violation]:
    """The draft fields (title, digest, author, content, content_source_url) against the limits."""
    out: list[Violation] = []
    title, digest, author, content = (str(article.get(k) or "") for k in ("title", "digest", "author", "content"))
    if len(title) > TITLE_MAX_CHARS:
        out.append(over("wechat", "title", f"title {title!r}", len(title), TITLE_MAX_CHARS, "characters"))
    if len(digest) > DIGEST_MAX_CHARS:
        out.append(over("wechat", "digest", "digest", len(digest), DIGEST_MAX_CHARS, "characters"))
    if len(author) > AUTHOR_MAX_CHARS:
        out.append(over("wechat", "author", f"author {author!r}", len(author), AUTHOR_MAX_CHARS, "characters"))
    if len(content) > CONTENT_MAX_CHARS:
        v = over("wechat", "content", "content", len(content), CONTENT_MAX_CHARS, "characters")
        out.append(dataclasses.replace(v, message=f"{v.message}; {budget_breakdown(content)}"))
    size = len(content.encode("utf-8"))
    if size > CONTENT_MAX_BYTES:
        out.append(over("wechat", "content-bytes", "content", size, CONTENT_MAX_BYTES, "bytes"))
    url_size = len(str(article.get("content_source_url") or "").encode("utf-8"))
    if url_size > SOURCE_URL_MAX_BYTES:
        out.append(over("wechat", "content_source_url", "content_source_url (阅读原文)", url_size,
                        SOURCE_URL_MAX_BYTES, "bytes"))
    return out


# the constructs that weigh most in the article's HTML, by the markup the writer gives them
CONSTRUCTS = (
    ("tables", re.compile(r"<table\b.*?</table>", re.S)),
    # a formula image is the only <img> sized in pixels with max-width (html_writer.formula_img)
    ("formulas", re.compile(r'<img [^>]*style="[^"]*width:[\d.]+px;max-width:100%[^"]*"[^>]*>')),
    ("highlighted code", re.compile(r"<pre\b.*?</pre>", re.S)),
    ("references (参考资料)", re.compile(r"<h2[^>]*>参考资料</h2>.*?</section>", re.S)),
)


def budget_breakdown(content: str) -> str:
    """Which constructs take the 20,000 characters: the largest first, with what to do."""
    sizes = [(name, sum(len(m.group(0)) for m in rx.finditer(content))) for name, rx in CONSTRUCTS]
    sizes = sorted(((n, c) for n, c in sizes if c), key=lambda x: -x[1])
    if not sizes:
        return "no table, formula, code or reference list dominates: split the issue or shorten summaries"
    parts = ", ".join(f"{n} {c:,}" for n, c in sizes)
    return (f"of which {parts} characters; shorten the largest (a table as an image, fewer formulas, "
            "code without a language is not highlighted) or choose a lighter [wechat] theme")


def check(r: Rendition) -> list[Violation]:
    return check_article({**r.metadata, "content": r.body})
