"""The github channel against the published archive, through an independent CommonMark renderer.

Every corpus issue is imported, rendered by the github channel, and both the rendering and the
original archive file are parsed by markdown-it-py (CommonMark + GFM strikethrough; shares no code
with the project). Their block structure (paragraphs, lists and nesting, tight/loose, quotes,
code) and inline structure (links with their targets, emphasis, code, hard breaks) must be the
same, footer aside. The only differences allowed are the ones README.md lists under "What the
github channel changes on purpose"; each is one normalisation below, named after that list.
"""

from __future__ import annotations

import difflib
import re

import pytest

from .conftest import corpus_files, requires_shared
from .test_channels_markdown import make_settings, render_file

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py is in the test extra")
MD = markdown_it.MarkdownIt("commonmark").enable("strikethrough")

FOOTER = re.compile(r"^(#{1,6}\s*\[?往期回顾|-{4,}\s*$|!\[wechat_qrcode\]|<a rel=\"license\")")
# README: "the link note" — each channel writes its own, where it belongs
LINK_NOTE = re.compile(r"^\s*(?:>\s*)?(?:<font>)?\s*注：(?:个别链接打不开|PC端微信链接打不开).*$", re.M)


def body_of(text: str) -> str:
    """The page without Jekyll front matter and footer."""
    lines = text.split("\n")
    if lines and lines[0].strip() == "---" and "---" in lines[1:]:
        lines = lines[lines.index("---", 1) + 1:]
    out = []
    for line in lines:
        if FOOTER.match(line.strip()):
            break
        out.append(line)
    return LINK_NOTE.sub("", "\n".join(out))


def archive_as_meant(text: str) -> str:
    """README: "an unindented numbered list right under an item's lines stays in the item" —
    the original's such lists indented under their item, as the editor meant them."""
    out, in_item = [], False
    for line in text.split("\n"):
        if re.match(r"^[-*+–]\s", line):
            in_item = True
        elif not line.strip() or line.startswith("#"):
            in_item = False
        elif in_item and re.match(r"^\d+[.)]\s", line):
            line = "    " + line
        out.append(line)
    return "\n".join(out)


def inline_signature(token) -> str:
    parts = []
    for c in token.children or ():
        if c.type == "link_open":
            parts.append(f"<a {c.attrs.get('href')}>")
        elif c.type == "link_close":
            parts.append("</a>")
        elif c.type in ("strong_open", "strong_close", "em_open", "em_close", "s_open", "s_close"):
            parts.append(f"<{c.type}>")
        elif c.type == "image":
            parts.append(f"<img {c.attrs.get('src')}>")
        elif c.type == "code_inline":
            parts.append(f"`{c.content}`")
        elif c.type == "softbreak":
            parts.append("\n")
        elif c.type == "hardbreak":
            parts.append("<br>")
        else:
            parts.append(c.content)
    s = item_lines("".join(parts))
    # README: "bare URLs": GitHub links them (GFM autolinks) and so does the channel: a link
    # whose text is its own target is the bare URL
    s = re.sub(r"<a (\S+)>\1</a>", r"\1", s)
    # README: "house-style labels": 摘要:/标题: are written with the full-width colon, `owner/repo:`
    # with an ASCII colon and a space, `[venue] [title]` with a space
    s = re.sub(r"(^|<br>)(\s*[^\s：:<>\[\]()]{1,10})\s*[:：]\s*", r"\1\2：", s)
    s = re.sub(r"(<a [^>]+>[\w.\-]+/[\w.\-]+)\s*[:：]\s*", r"\1: ", s)
    s = re.sub(r"\]\s*<a ", "] <a ", s)
    s = re.sub(r"\s*[|｜]\s*([^|｜<]*</a>)", r" | \1", s)  # the ` | source` separator
    return re.sub(r"\s+", " ", s).strip()


LABELLED = re.compile(r"^\s*[^\s：:<>\[\]()]{1,10}\s*[:：]")


def item_lines(s: str) -> str:
    """README: "item lines": an item's head and each field line always end with a line break —
    where the archive forgot the two spaces GitHub ran the next labelled line (`博客：`, `摘要：`)
    into it. A soft break becomes a hard one only there: after a paragraph's first line ending in
    a link (the head) or a field line that follows it, before a labelled line."""
    lines = re.split(r"(<br>|\n)", s)
    if not lines[0].rstrip().endswith("</a>"):
        return s  # not an item's head line
    for k in range(1, len(lines) - 1, 2):
        before, after = lines[k - 1], lines[k + 1]
        if k > 1 and (not LABELLED.match(before) or re.match(r"^\s*摘要\s*[:：]", before)):
            break  # the summary has begun: its lines are running text
        if lines[k] == "\n" and LABELLED.match(after):
            lines[k] = "<br>"
    return "".join(lines)


def signature(markdown: str) -> list[str]:
    out, depth = [], 0
    for t in MD.parse(markdown):
        if t.type == "inline":
            out.append("  " * depth + "T " + inline_signature(t))
        elif t.nesting == 1:
            out.append("  " * depth + t.type.removesuffix("_open") + (" tight" if t.hidden else ""))
            depth += 1
        elif t.nesting == -1:
            depth -= 1
        else:
            out.append("  " * depth + t.type + (" " + t.content.rstrip() if t.type in ("fence", "code_block") else ""))
    return out


def differences(original: str, rendered: str) -> list[str]:
    a = signature(archive_as_meant(body_of(original)))
    b = signature(body_of(rendered))
    return [d for d in difflib.unified_diff(a, b, "archive", "github", lineterm="", n=0)
            if d[:1] in "+-" and d[:3] not in ("+++", "---")]


@requires_shared
@pytest.mark.parametrize("original", corpus_files(), ids=lambda p: p.stem)
def test_github_channel_has_the_structure_of_the_published_issue(original, imported_corpus, tmp_path):
    settings = make_settings(tmp_path, imported_corpus)
    rendered = render_file(imported_corpus / original.name, "github", settings).body
    diff = differences(original.read_text(encoding="utf-8"), rendered)
    assert not diff, "\n".join(diff[:40])


def test_the_comparison_sees_a_structural_difference():
    """The comparison itself can fail: a folded paragraph, a lost link or emphasis shows."""
    original = "## 新闻\n\n- [a](https://a.example)  \n摘要：x **y**\n\n后面的段落。\n"
    assert differences(original, original) == []
    assert differences(original, original.replace("\n\n后面", "\n后面"))  # folded into the item
    assert differences(original, original.replace("**y**", "y"))  # emphasis dropped
    assert differences(original, original.replace("(https://a.example)", ""))  # link lost
    assert differences(original, original.replace("摘要：x", "摘要：x  \nz"))  # a hard break added
    # "item lines" makes a field line's soft break hard, never one inside the summary's text
    fields = "## 新闻\n\n- [a](https://a.example)  \n链接：https://b.example\n摘要：x\n训练方面：y\n"
    assert differences(fields, fields.replace("b.example\n", "b.example  \n")) == []
    assert differences(fields, fields.replace("摘要：x\n", "摘要：x  \n"))
