"""WeChat's draft/add limits (developers.weixin.qq.com; /work/shared/docs/channels.md): `publisher
check` reports them, the transport refuses a push over them, the preview shows them."""

from __future__ import annotations

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
        out.append(over("wechat", "content", "content", len(content), CONTENT_MAX_CHARS, "characters"))
    size = len(content.encode("utf-8"))
    if size > CONTENT_MAX_BYTES:
        out.append(over("wechat", "content-bytes", "content", size, CONTENT_MAX_BYTES, "bytes"))
    url_size = len(str(article.get("content_source_url") or "").encode("utf-8"))
    if url_size > SOURCE_URL_MAX_BYTES:
        out.append(over("wechat", "content_source_url", "content_source_url (阅读原文)", url_size,
                        SOURCE_URL_MAX_BYTES, "bytes"))
    return out


def check(r: Rendition) -> list[Violation]:
    return check_article({**r.metadata, "content": r.body})
