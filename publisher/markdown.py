"""Markdown fragments → model nodes, through mistune 3's AST.

mistune keeps no line numbers, so callers pass the line a fragment starts on; every error raised
here names it. Link targets are checked here, once, for every channel.
"""

from __future__ import annotations

import html
import re

import mistune

from .errors import SourceError
from .model import (
    Block,
    Code,
    CodeBlock,
    Emphasis,
    FootnoteRef,
    Image,
    Inline,
    LineBreak,
    Link,
    ListBlock,
    ListItem,
    Math,
    MathBlock,
    Paragraph,
    Quote,
    SoftBreak,
    Strikethrough,
    Strong,
    Table,
    Text,
)

# One scheme allow-list for every URL; the reader checks each link target here.
from .refs import SAFE_SCHEMES, check_url  # noqa: F401

# `$…$` as pandoc reads it: the opening `$` is followed by a non-space, the closing one follows a
# non-space and is not followed by a digit, so `$5 and $10` stays text; `$$…$$` inside a line is a
# displayed formula. `$$` on lines of their own is a MathBlock (mistune's block rule).
INLINE_MATH = (r"\$\$(?P<display_math_text>(?:[^$\\]|\\.)+?)\$\$|"
               r"\$(?![$\s])(?P<math_text>(?:[^$\\\n]|\\.)*?(?:[^\s\\$]|\\.))\$(?!\d)")
FOOTNOTE_REF = re.compile(r"\[\^([^\]\s^]{1,40})\]")
MAX_FORMULA = 2000  # characters of LaTeX in one formula (the renderers are bounded by it)
MAX_FORMULAS = 500  # formulas in one issue: each is laid out once (~20 ms); WeChat's budget holds ~150


def _inline_math(inline, m: re.Match, state) -> int:
    display = m.group("display_math_text")
    if display is not None:
        state.append_token({"type": "inline_math", "raw": display, "attrs": {"display": True}})
    else:
        state.append_token({"type": "inline_math", "raw": m.group("math_text"), "attrs": {"display": False}})
    return m.end()


def _math(md) -> None:
    from mistune.plugins.math import BLOCK_MATH_PATTERN, parse_block_math

    md.block.register("block_math", BLOCK_MATH_PATTERN, parse_block_math, before="list")
    md.inline.register("inline_math", INLINE_MATH, _inline_math, before="codespan")


_parse = mistune.create_markdown(renderer=None, plugins=["url", "strikethrough", "table", _math])

# mistune's inline parser is not linear on long runs of delimiters (`a*b_` repeated: 38 s and
# 545 MB for one 1 MB line), so no fragment longer than this reaches it: a longer paragraph or
# list is a file:line error. The house style's longest line in seven years of archive is ~1,200
# characters; a fragment at the cap parses in well under a second whatever it holds, and a
# file of any size in time proportional to its length (bench/ and tests/test_source_input.py).
MAX_FRAGMENT = 20_000


def _bounded(text: str, line: int, file: str | None, what: str) -> str:
    if len(text) > MAX_FRAGMENT:
        raise SourceError(f"this {what} is {len(text):,} characters long; at most {MAX_FRAGMENT:,} are read as "
                          "Markdown at once: split it into shorter paragraphs", file=file, line=line,
                          code="paragraph-too-long")
    return text

class Converter:
    """Turns mistune tokens into model nodes; collects warnings as (line, message, code)."""

    def __init__(self, file: str | None):
        self.file = file
        self.warnings: list[tuple[int, str, str]] = []
        # footnote label -> (number, line of its first reference), numbered in reading order
        self.footnotes: dict[str, tuple[int, int]] = {}
        # every formula and the line it is on (the reader checks that each one renders)
        self.formulas: list[tuple[str, int]] = []

    def formula(self, tex: str, line: int) -> str:
        tex = tex.strip()
        if len(tex) > MAX_FORMULA:
            raise SourceError(f"formula of {len(tex):,} characters (at most {MAX_FORMULA:,}): split it",
                              file=self.file, line=line)
        self.formulas.append((tex, line))
        if len(self.formulas) > MAX_FORMULAS:
            raise SourceError(f"more than {MAX_FORMULAS} formulas in one issue: split it, or write plain values "
                              "without $…$", file=self.file, line=line)
        return tex

    def footnote_refs(self, text: str, line: int) -> list[Inline]:
        """A text run with its `[^label]` references as FootnoteRef nodes."""
        out: list[Inline] = []
        pos = 0
        for m in FOOTNOTE_REF.finditer(text):
            label = m.group(1)
            if label not in self.footnotes:
                self.footnotes[label] = (len(self.footnotes) + 1, line)
            if m.start() > pos:
                out.append(Text(text[pos:m.start()]))
            out.append(FootnoteRef(label, self.footnotes[label][0]))
            pos = m.end()
        if pos < len(text):
            out.append(Text(text[pos:]))
        return out

    # -- inlines ---------------------------------------------------------------------------

    def inlines(self, tokens: list[dict], line: int) -> tuple[Inline, ...]:
        out: list[Inline] = []
        for tok in tokens:
            if tok["type"] == "link" and not tok["attrs"].get("url", "").strip():
                self.warnings.append((line, "empty link target '[…]()': the text is kept without a link", "empty-link"))
                nodes = self.inlines(tok["children"], line)
            else:
                node = self.inline(tok, line)
                nodes = () if node is None else (node,)
            for node in nodes:
                # merge adjacent text runs (mistune splits on escapes and entities)
                if isinstance(node, Text) and out and isinstance(out[-1], Text):
                    out[-1] = Text(out[-1].text + node.text)
                else:
                    out.append(node)
        if any(isinstance(n, Text) and "[^" in n.text for n in out):
            out = [r for n in out for r in (self.footnote_refs(n.text, line) if isinstance(n, Text) else (n,))]
        return tuple(out)

    def inline(self, tok: dict, line: int) -> Inline | None:
        kind = tok["type"]
        if kind == "text":
            # mistune leaves character references as written; the model holds the characters
            # (`A&lt;B` is the text A<B), and every writer escapes for its own format, once
            return Text(html.unescape(tok["raw"]))
        if kind == "codespan":
            return Code(tok["raw"])
        if kind == "inline_math":
            return Math(self.formula(tok["raw"], line), bool(tok.get("attrs", {}).get("display")))
        if kind == "strong":
            return Strong(self.inlines(tok["children"], line))
        if kind == "emphasis":
            return Emphasis(self.inlines(tok["children"], line))
        if kind == "strikethrough":
            return Strikethrough(self.inlines(tok["children"], line))
        if kind == "link":
            url = check_url(tok["attrs"]["url"], file=self.file, line=line)
            return Link(url, self.inlines(tok["children"], line), tok["attrs"].get("title"))
        if kind == "image":
            src = check_url(tok["attrs"].get("url", ""), file=self.file, line=line)
            alt = html.unescape("".join(_raw_text(c) for c in tok.get("children", [])))
            return Image(src, alt, tok["attrs"].get("title"))
        if kind == "linebreak":
            return LineBreak()
        if kind == "softbreak":
            return SoftBreak()
        if kind == "inline_html":
            raw = tok["raw"]
            if re.fullmatch(r"<br\s*/?>", raw, re.I):
                return LineBreak()
            if re.fullmatch(r"</?(font|span|u|small|big|center)\b[^>]*>", raw, re.I):
                # presentational wrappers in old issues: keep the text, drop the tag
                self.warnings.append((line, f"HTML tag {raw} dropped; its text is kept", "html-tag-dropped"))
                return None
            self.warnings.append((line, f"raw HTML {raw[:40]} is shown as text, not markup", "raw-html"))
            return Text(raw)
        raise SourceError(f"unsupported inline Markdown ({kind})", file=self.file, line=line)

    # -- blocks ----------------------------------------------------------------------------

    def blocks(self, tokens: list[dict], line: int, item_lines: list[int] | None = None) -> tuple[Block, ...]:
        out: list[Block] = []
        for tok in tokens:
            kind = tok["type"]
            if kind == "blank_line":
                continue
            if kind in ("paragraph", "block_text"):
                out.append(Paragraph(self.inlines(tok["children"], line), line))
            elif kind == "list":
                items = []
                for child in tok["children"]:
                    item_line = item_lines.pop(0) if item_lines else line
                    items.append(ListItem(self.blocks(child["children"], item_line, item_lines), item_line))
                attrs = tok.get("attrs", {})
                out.append(ListBlock(tuple(items), bool(attrs.get("ordered")), int(attrs.get("start", 1) or 1), line,
                                     tight=tok.get("tight", True)))
            elif kind == "block_code":
                out.append(CodeBlock(tok["raw"].rstrip("\n"), tok.get("attrs", {}).get("info", "") or "", line))
            elif kind == "block_quote":
                out.append(Quote(self.blocks(tok["children"], line, item_lines), line))
            elif kind == "heading":
                # A heading inside an item's summary: keep its text as a bold paragraph.
                self.warnings.append((line, "heading inside an item is kept as a bold line", "heading-in-item"))
                out.append(Paragraph((Strong(self.inlines(tok["children"], line)),), line))
            elif kind == "block_math":
                out.append(MathBlock(self.formula(tok["raw"], line), line))
            elif kind == "table":
                out.append(self.table(tok, line))
            elif kind == "thematic_break":
                continue
            elif kind == "block_html":
                self.warnings.append((line, "raw HTML block is shown as text, not markup", "raw-html"))
                out.append(Paragraph((Text(tok["raw"].strip()),), line))
            else:
                raise SourceError(f"unsupported Markdown block ({kind})", file=self.file, line=line)
        return tuple(out)


    def table(self, tok: dict, line: int) -> Table:
        head_tok = next(c for c in tok["children"] if c["type"] == "table_head")
        body = next((c for c in tok["children"] if c["type"] == "table_body"), {"children": []})
        head = tuple(self.inlines(c["children"], line) for c in head_tok["children"])
        aligns = tuple(c["attrs"].get("align") for c in head_tok["children"])
        rows = tuple(tuple(self.inlines(c["children"], line + 2 + k) for c in row["children"])
                     for k, row in enumerate(body["children"]))
        return Table(head, rows, aligns, line)


def _raw_text(tok: dict) -> str:
    if "raw" in tok:
        return tok["raw"]
    return "".join(_raw_text(c) for c in tok.get("children", []))


def parse_inline(text: str, *, line: int, file: str | None, conv: Converter) -> tuple[Inline, ...]:
    """One line (or paragraph) of inline Markdown."""
    if not text.strip():
        return ()
    tokens = _parse(_bounded(text, line, file, "paragraph"))
    out: list[Inline] = []
    for tok in tokens:
        if tok["type"] in ("paragraph", "block_text"):
            if out:
                out.append(SoftBreak())
            out.extend(conv.inlines(tok["children"], line))
        elif tok["type"] == "blank_line":
            continue
        else:
            # something that parses as a block (a line starting with '#', '>', '1.' …): keep it
            # as literal text, which is what the editor wrote.
            out.append(Text(text.strip()))
            break
    return tuple(out)


_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def parse_blocks(lines: list[str], *, first_line: int, file: str | None, conv: Converter) -> tuple[Block, ...]:
    """A run of Markdown lines (a nested list, a code block) as blocks, items numbered by line."""
    # dedent by the list's own indentation; a lazy continuation line (unindented, continuing a
    # list item's paragraph) takes no part in it and stays as it is
    is_list = bool(lines) and bool(_LIST_MARKER.match(next((ln for ln in lines if ln.strip()), "")))
    indents = [len(ln) - len(ln.lstrip()) for ln in lines
               if ln.strip() and not (is_list and ln[:1] not in (" ", "\t") and not _LIST_MARKER.match(ln))]
    margin = min(indents, default=0)
    text = "\n".join(ln[min(margin, len(ln) - len(ln.lstrip())):] for ln in lines)
    item_lines = [first_line + i for i, ln in enumerate(lines) if _LIST_MARKER.match(ln)]
    return conv.blocks(_parse(_bounded(text, first_line, file, "list or block")), first_line, item_lines)
