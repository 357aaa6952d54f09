"""The email's limit: Gmail clips HTML bodies of 102 KB and more, hiding the footer and its
unsubscribe link (/work/shared/docs/channels.md)."""

from __future__ import annotations

import html
import re

from publisher.channels.base import Rendition

from publisher.limits import Violation
from publisher.refs import is_http

HTML_MAX_BYTES = 102 * 1024 - 1  # Gmail clips HTML bodies of 102 KB and more (UTF-8 bytes)


def html_part(r: Rendition) -> str:
    """The HTML part of an email rendition: the body when it is HTML, else an .html part."""
    if "html" in r.media_type:
        return r.body
    for name, text in r.parts.items():
        if name.endswith((".html", ".htm")):
            return text
    return r.body


_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)


def unreachable_images(r: Rendition) -> list[str]:
    """Image sources of the HTML part that a mail client cannot load: anything but an absolute
    http(s) URL (a local path needs [newsletter] image_base_url)."""
    srcs = (html.unescape(m.group(1) if m.group(1) is not None else m.group(2)) for m in _IMG_SRC.finditer(html_part(r)))
    return [s for s in srcs if not is_http(s)]


def check(r: Rendition) -> list[Violation]:
    out = [Violation("email", "image", f"email image {src!r} is not a public http(s) URL: mail clients cannot load "
                     "it; set [newsletter] image_base_url to where the issue's images are published (`{date}` "
                     "in it is the issue's date, e.g. https://your.site/{date} for the web channel's folders)",
                     src, "an http(s) URL") for src in dict.fromkeys(unreachable_images(r))]
    size = len(html_part(r).encode("utf-8"))
    if size > HTML_MAX_BYTES:
        return out + [
            Violation(
                "email",
                "html",
                f"email HTML is {size:,} bytes; Gmail clips bodies of {HTML_MAX_BYTES + 1:,} bytes "
                "(102 KB) and more, hiding the footer and its unsubscribe link",
                size,
                HTML_MAX_BYTES,
            )
        ]
    return out
