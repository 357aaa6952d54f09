"""What Zhihu's 导入文档 cannot import (/work/shared/docs/channels.md): strikethrough, headings
below level 4, <colgroup>, images that are not public http(s) URLs."""

from __future__ import annotations

import re

from publisher.channels.base import Rendition

from publisher.limits import Violation
from publisher.refs import is_http

MAX_HEADING_LEVEL = 4

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
    if not is_http(url):
        return "is not a public http(s) URL"
    if re.search(r"\s", url):
        return "contains a space"
    return None


def check(r: Rendition) -> list[Violation]:
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
            if level > MAX_HEADING_LEVEL:
                out.append(Violation("zhihu", "heading",
                                     f"zhihu imports headings up to level {MAX_HEADING_LEVEL}; "
                                     f"this one is level {level} {where}", level, MAX_HEADING_LEVEL))
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
