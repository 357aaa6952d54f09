"""The canonical issue: one immutable, typed model that every channel renders from.

Nothing here is channel-specific. Rich text (lead, briefs, summaries, field values) is a small
tree of blocks and inlines, so every channel walks the same nodes and an unhandled node is an
error rather than silently lost text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

# ---- inline nodes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Code:
    """Inline code span."""

    text: str


@dataclass(frozen=True)
class Strong:
    children: tuple[Inline, ...]


@dataclass(frozen=True)
class Emphasis:
    children: tuple[Inline, ...]


@dataclass(frozen=True)
class Strikethrough:
    """`~~struck text~~` (GitHub Flavored Markdown)."""

    children: tuple[Inline, ...]


@dataclass(frozen=True)
class Link:
    url: str
    children: tuple[Inline, ...]
    title: str | None = None


@dataclass(frozen=True)
class Image:
    src: str
    alt: str = ""
    title: str | None = None


@dataclass(frozen=True)
class LineBreak:
    """A hard line break inside a paragraph."""


@dataclass(frozen=True)
class SoftBreak:
    """A newline inside a paragraph that renders as a space or newline."""


@dataclass(frozen=True)
class Math:
    """A formula, `$…$` (inline) or `$$…$$` inside a paragraph (display): its LaTeX source."""

    tex: str
    display: bool = False


@dataclass(frozen=True)
class FootnoteRef:
    """`[^label]`: a reference to the issue's footnote `label`, numbered by first use (1, 2 …)."""

    label: str
    number: int


Inline = Text | Code | Strong | Emphasis | Strikethrough | Link | Image | LineBreak | SoftBreak | Math | FootnoteRef
INLINE_TYPES: tuple[type, ...] = (Text, Code, Strong, Emphasis, Strikethrough, Link, Image, LineBreak, SoftBreak,
                                  Math, FootnoteRef)

# ---- block nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    children: tuple[Inline, ...]
    line: int = 0


@dataclass(frozen=True)
class ListItem:
    blocks: tuple[Block, ...]
    line: int = 0


@dataclass(frozen=True)
class ListBlock:
    items: tuple[ListItem, ...]
    ordered: bool = False
    start: int = 1
    line: int = 0
    tight: bool = True  # False: a loose list (blank lines between items), written loose again


@dataclass(frozen=True)
class CodeBlock:
    text: str
    info: str = ""
    line: int = 0


@dataclass(frozen=True)
class Quote:
    blocks: tuple[Block, ...]
    line: int = 0


@dataclass(frozen=True)
class MathBlock:
    """A displayed formula, `$$ … $$` on lines of its own: its LaTeX source."""

    tex: str
    line: int = 0


Align = Literal["left", "center", "right"] | None


@dataclass(frozen=True)
class Table:
    """A GFM table: the header cells, the body rows (each a tuple of cells) and each column's
    alignment. A cell is a tuple of inline nodes."""

    head: tuple[tuple[Inline, ...], ...]
    rows: tuple[tuple[tuple[Inline, ...], ...], ...]
    aligns: tuple[Align, ...]
    line: int = 0


Block = Paragraph | ListBlock | CodeBlock | Quote | MathBlock | Table
BLOCK_TYPES: tuple[type, ...] = (Paragraph, ListItem, ListBlock, CodeBlock, Quote, MathBlock, Table)

# ---- the issue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A labelled line of an item, e.g. 标题：…, 链接：…, 代码：… (label without the colon)."""

    label: str
    value: tuple[Inline, ...]
    line: int = 0


@dataclass(frozen=True)
class Item:
    """One story: `[prefixes] [title | source](url) [extra links]`, its fields and summary."""

    title: str
    url: str | None
    source: str | None = None
    arxiv: str | None = None  # e.g. "2007.02269v2"
    venue: str | None = None  # e.g. "CVPR2020"
    repo: str | None = None  # e.g. "OAID/Tengine-lite"
    extra: tuple[Inline, ...] = ()  # what follows the main link on the title line: [[原文]](…)
    # the title as inline nodes when it has markup (`**NVIDIA**`): without repo and source, which
    # stay in `repo`/`source`; empty when the title is plain text (then `title` says it all)
    title_inlines: tuple[Inline, ...] = ()
    fields: tuple[Field, ...] = ()
    summary: tuple[Block, ...] = ()
    line: int = 0
    # where the source wrote the 摘要 label: the index of the summary block it stands before (0,
    # the house style), or None when the item has none (free lines under its fields, as written)
    summary_label: int | None = 0

    @property
    def display_title(self) -> str:
        """The title as the house style writes it: `owner/repo: title | source`."""
        title = f"{self.repo}: {self.title}" if self.repo else self.title
        return f"{title} | {self.source}" if self.source else title

    def field(self, label: str) -> Field | None:
        return next((f for f in self.fields if f.label == label), None)

    def labelled_summary(self, label: str) -> tuple[Block, ...]:
        """The summary with its label (e.g. `摘要：`) where the source has it: at the start of
        that paragraph, or a line of its own before a list or code block."""
        k, blocks = self.summary_label, list(self.summary)
        if k is None or k >= len(blocks):
            return tuple(blocks)
        if isinstance(blocks[k], Paragraph):
            blocks[k] = Paragraph((Text(label), *blocks[k].children), blocks[k].line)
        else:
            blocks.insert(k, Paragraph((Text(label),), getattr(blocks[k], "line", 0)))
        return tuple(blocks)


@dataclass(frozen=True)
class Section:
    name: str
    items: tuple[Item, ...] = ()
    note: tuple[Inline, ...] = ()
    line: int = 0
    # free text after the section's last item (a blank line, then unindented text that is not an
    # item): it belongs to the section, as the published archive shows it, not to the last item
    closing: tuple[Block, ...] = ()
    # a blank line between two of its items: the item list is loose (CommonMark), and the
    # Markdown channels keep the blank lines so it renders as the source and the archive did
    loose: bool = False


@dataclass(frozen=True)
class Brief:
    """A warm-up bullet: one short paragraph, maybe with inline links."""

    content: tuple[Inline, ...]
    line: int = 0


@dataclass(frozen=True)
class Footnote:
    """A footnote definition `[^label]: text` (GFM), numbered by the first reference to it."""

    label: str
    number: int
    children: tuple[Inline, ...]
    line: int = 0


Status = Literal["draft", "ready"]


@dataclass(frozen=True)
class License:
    """The license an issue was published under, when it differs from the configured one."""

    name: str
    url: str
    badge: str = ""


@dataclass(frozen=True)
class Issue:
    date: dt.date
    title: str  # the title line as written, without '# '
    brand: str  # the title before the date, e.g. 嵌入式AI简报
    topics: tuple[str, ...] = ()
    number: int | None = None
    tagline: str = ""
    lead: tuple[Paragraph, ...] = ()  # 导读
    warmup_intro: str = ""
    warmup: tuple[Brief, ...] = ()
    # issue-level text before the first section (not the channel's link note): a `> ` note is
    # a Quote, a plain paragraph a Paragraph, as the source wrote them
    notes: tuple[Paragraph | Quote, ...] = ()
    sections: tuple[Section, ...] = ()
    footnotes: tuple[Footnote, ...] = ()  # in the order of their numbers
    status: Status = "draft"
    archived: bool = False  # published before (imported from the archive): listed even as a draft
    publish_at: dt.datetime | None = None
    cover: str | None = None
    digest: str | None = None
    author: str | None = None
    license: License | None = None
    source_path: str | None = field(default=None, compare=False)

    @property
    def listed(self) -> bool:
        """Whether other issues and the web archive list this one: it is `ready`, or `archived`."""
        return self.status == "ready" or self.archived

    @property
    def slug(self) -> str:
        return self.date.isoformat()

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(item for section in self.sections for item in section.items)

    @property
    def item_count(self) -> int:
        return sum(len(s.items) for s in self.sections)


# ---- helpers every channel needs -----------------------------------------------------------


def plain_text(inlines: tuple[Inline, ...] | list[Inline], *, breaks: str = " ") -> str:
    """Inline nodes as plain text (links keep their text, images their alt)."""
    out: list[str] = []
    for node in inlines:
        if isinstance(node, Text | Code):
            out.append(node.text)
        elif isinstance(node, Math):
            out.append(f"$${node.tex}$$" if node.display else f"${node.tex}$")
        elif isinstance(node, FootnoteRef):
            out.append(f"[{node.number}]")
        elif isinstance(node, Strong | Emphasis | Strikethrough | Link):
            out.append(plain_text(node.children, breaks=breaks))
        elif isinstance(node, Image):
            out.append(node.alt)
        elif isinstance(node, LineBreak):
            out.append("\n")
        elif isinstance(node, SoftBreak):
            out.append(breaks)
        else:  # pragma: no cover - guarded by the walk-every-node test
            raise TypeError(f"unknown inline node {type(node).__name__}")
    return "".join(out)


def iter_formulas(node: object):
    """Every formula of a node (or tuple of nodes) as (LaTeX, display), in document order."""
    if isinstance(node, tuple | list):
        for child in node:
            yield from iter_formulas(child)
    elif isinstance(node, Math):
        yield node.tex, node.display
    elif isinstance(node, MathBlock):
        yield node.tex, True
    elif hasattr(node, "__dataclass_fields__") and not isinstance(node, Text | Code | Link | Image | CodeBlock):
        for name in node.__dataclass_fields__:
            value = getattr(node, name)
            if isinstance(value, tuple | list) or hasattr(value, "__dataclass_fields__"):
                yield from iter_formulas(value)


def _item_links(node: Item):
    if node.url:
        yield Link(node.url, (Text(node.title),))
    yield from iter_links((node.extra, node.fields, node.summary))


# what iter_links walks into, per node type (in document order)
_CHILDREN = {
    Strong: lambda n: n.children, Emphasis: lambda n: n.children, Strikethrough: lambda n: n.children,
    Paragraph: lambda n: n.children, Footnote: lambda n: n.children, ListBlock: lambda n: n.items,
    ListItem: lambda n: n.blocks, Quote: lambda n: n.blocks, Table: lambda n: (n.head, *n.rows),
    Field: lambda n: n.value, Brief: lambda n: n.content, Section: lambda n: (n.note, n.items, n.closing),
    Issue: lambda n: (n.lead, n.warmup, n.notes, n.sections, n.footnotes),
}


def iter_links(node: object):
    """Every Link and Image reachable from a node or a tuple of nodes, in document order."""
    if isinstance(node, tuple | list):
        for child in node:
            yield from iter_links(child)
    elif isinstance(node, Link):
        yield node
        yield from iter_links(node.children)
    elif isinstance(node, Image):
        yield node
    elif isinstance(node, Item):
        yield from _item_links(node)
    elif type(node) in _CHILDREN:
        yield from iter_links(_CHILDREN[type(node)](node))
