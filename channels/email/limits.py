"""The email's limit: Gmail clips HTML bodies of 102 KB and more, hiding the footer and its
unsubscribe link (/work/shared/docs/channels.md)."""

from __future__ import annotations

from publisher.channels.base import Rendition

from publisher.limits import Violation

HTML_MAX_BYTES = 102 * 1024 - 1  # Gmail clips HTML bodies of 102 KB and more (UTF-8 bytes)


def html_part(r: Rendition) -> str:
    """The HTML part of an email rendition: the body when it is HTML, else an .html part."""
    if "html" in r.media_type:
        return r.body
    for name, text in r.parts.items():
        if name.endswith((".html", ".htm")):
            return text
    return r.body


def check(r: Rendition) -> list[Violation]:
    size = len(html_part(r).encode("utf-8"))
    if size > HTML_MAX_BYTES:
        return [
            Violation(
                "email",
                "html",
                f"email HTML is {size:,} bytes; Gmail clips bodies of {HTML_MAX_BYTES + 1:,} bytes "
                "(102 KB) and more, hiding the footer and its unsubscribe link",
                size,
                HTML_MAX_BYTES,
            )
        ]
    return []
