"""Model nodes → house-style Markdown (and plain text), shared by the Markdown/text channels.

A writer is a visitor (channels/visitor.py): every node type has exactly one method,
`visit_<NodeClass>`. A node type without a method is an error (`UnknownNodeError`), never
silently dropped text.

The writers turn pieces of an issue (inline runs, blocks, briefs, items) into text; the page
around them — title, headings, link note, footer — is laid out by each channel's templates.
"""

from __future__ import annotations

import html
import re
import textwrap
import urllib.parse
from collections.abc import Iterable
from typing import Any, ClassVar

import jinja2
from publisher.channels.base import Channel, LocalImage, Rendition, license_of
from publisher.channels.visitor import NodeVisitor

from publisher.errors import ConfigError, SourceError
from publisher.model import (
    Block,
    Brief,
    Code,
    CodeBlock,
    Emphasis,
    Field,
    Footnote,
    FootnoteRef,
    Image,
    Inline,
    Issue,
    Item,
    License,
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
    iter_links,
)
from publisher.refs import is_http, safe_url

# What would make a Markdown engine read source text as markup: `<` opening a tag, comment or
# declaration (GitHub/cmark-gfm, kramdown, the column editors all pass raw HTML through), and `{{`
# or `{%` opening Liquid (Jekyll runs Liquid over the page before kramdown sees it). Written as
# entities, they show as the same characters on every engine and are never markup.
_HTML_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_LIQUID_OPEN = re.compile(r"\{(?=[{%])")
# Characters that end or break a Markdown link destination.
_URL_BREAKERS = re.compile(r"[\s<>\"`]")


def escape_text(text: str) -> str:
    """Source text as Markdown text that no engine reads as HTML, Liquid or a character reference
    (the model holds decoded characters: `A&lt;B` in a source is the text `A<B`)."""
    return _LIQUID_OPEN.sub("&#123;", _HTML_OPEN.sub("&lt;", _ENTITY_LIKE.sub("&amp;", text)))


def markdown_url(url: str) -> str:
    """A URL for a Markdown link or image: refused schemes dropped, breaking characters encoded."""
    return _URL_BREAKERS.sub(lambda m: f"%{ord(m.group(0)):02X}", safe_url(url.strip()))


# `&` that a Markdown renderer would read as the start of a character reference.
_ENTITY_LIKE = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
# The label written before an item's summary, and the colon every labelled line uses.
SUMMARY_LABEL = "摘要"
COLON = "："


class MarkdownWriter(NodeVisitor):
    """House-style Markdown: `- [title | source](url)`, labelled field lines, `摘要：` lines.

    `hard_break` ends each line of a multi-line item (fields, summary lines) so Markdown
    renderers keep the line breaks; the GitHub archive writes two spaces, like its editors.
    `list_indent` indents a list inside an item's summary (the archive uses four spaces).
    """

    hard_break = "  "
    list_indent = "    "
    liquid = False  # Jekyll: code that holds `{{`/`{%` must not reach Liquid either
    bare_urls = True  # a link written as its own address is written back bare

    def __init__(self, image_base: str = "", date: str = "") -> None:
        # where local images are published (for editors that import images from the web only),
        # and the issue's date for a `{date}` in it
        self.image_base = image_base
        self.date = date

    # ---- inlines -----------------------------------------------------------------------

    def inline(self, nodes: Iterable[Inline]) -> str:
        nodes = list(nodes)
        out = []
        for k, node in enumerate(nodes):
            nxt = nodes[k + 1] if k + 1 < len(nodes) else None
            if self.bare_urls and bare_url(node) and (nxt is None or isinstance(nxt, SoftBreak | LineBreak)
                                   or (isinstance(nxt, Text) and nxt.text[:1].isspace())):
                out.append(node.children[0].text)  # a bare URL stays bare: GitHub links it itself
            else:
                out.append(self.dispatch(node))
        return "".join(out)

    def visit_Text(self, node: Text) -> str:
        return escape_text(node.text)

    def escape(self, text: str) -> str:
        """Plain source text (titles, names, labels) as this writer writes text."""
        return escape_text(text)

    def escape_url(self, url: str) -> str:
        """A configured URL for a template (also inside an HTML attribute of a footer)."""
        return html.escape(safe_url(url))

    def visit_Code(self, node: Code) -> str:
        if self.liquid and _LIQUID_OPEN.search(node.text):
            # a code span is verbatim to Markdown but not to Liquid: write it as HTML with entities
            return "<code>" + html.escape(node.text).replace("{", "&#123;") + "</code>"
        runs = [len(r) for r in re.findall(r"`+", node.text)]
        fence = "`" * (max(runs, default=0) + 1)
        pad = " " if node.text.startswith("`") or node.text.endswith("`") else ""
        return f"{fence}{pad}{node.text}{pad}{fence}"

    def visit_Strong(self, node: Strong) -> str:
        return f"**{self.inline(node.children)}**"

    def visit_Emphasis(self, node: Emphasis) -> str:
        return f"*{self.inline(node.children)}*"

    def visit_Strikethrough(self, node: Strikethrough) -> str:
        return f"~~{self.inline(node.children)}~~"

    def link_title(self, title: str | None) -> str:
        return ' "' + escape_text(title).replace("\\", "\\\\").replace('"', '\\"') + '"' if title else ""

    def visit_Link(self, node: Link) -> str:
        return f"[{self.inline(node.children)}]({markdown_url(node.url)}{self.link_title(node.title)})"

    def visit_Image(self, node: Image) -> str:
        alt = self.escape_link_text(escape_text(node.alt))
        return f"![{alt}]({markdown_url(public_src(node.src, self.image_base, self.date))}{self.link_title(node.title)})"

    def visit_LineBreak(self, node: LineBreak) -> str:
        return "  \n"

    def visit_Math(self, node: Math) -> str:
        """The LaTeX source, as GitHub and the column editors read it."""
        return self.liquid_raw(f"$${node.tex}$$" if node.display else f"${node.tex}$", node.tex)

    def liquid_raw(self, text: str, tex: str) -> str:
        """TeX is full of braces: for Jekyll, a formula with `{{`/`{%` is kept from Liquid."""
        if not (self.liquid and _LIQUID_OPEN.search(tex)):
            return text
        if re.search(r"\{%-?\s*endraw", tex):
            raise SourceError("a formula contains '{% endraw %}', which the Jekyll archive cannot show verbatim")
        return "{% raw %}" + text + "{% endraw %}"

    def visit_FootnoteRef(self, node: FootnoteRef) -> str:
        return f"[^{node.label}]"

    def footnote(self, note: Footnote) -> str:
        """A footnote definition, `[^label]: text` (GFM)."""
        return f"[^{note.label}]: {self.inline(note.children)}".replace("\n", " ")

    def footnote_lines(self, notes: Iterable[Footnote]) -> list[str]:
        return [self.footnote(n) for n in notes]

    def visit_SoftBreak(self, node: SoftBreak) -> str:
        return "\n"

    # ---- blocks (each returns its lines) -------------------------------------------------

    def blocks(self, blocks: Iterable[Block]) -> list[str]:
        out: list[str] = []
        for block in blocks:
            out.extend(self.dispatch(block))
        return out

    def visit_Paragraph(self, node: Paragraph) -> list[str]:
        return self.inline(node.children).split("\n")

    def visit_ListBlock(self, node: ListBlock) -> list[str]:
        out: list[str] = []
        for k, item in enumerate(node.items):
            marker = f"{node.start + k}. " if node.ordered else "- "
            if k and not node.tight:
                out.append("")  # a loose list stays loose: a blank line between its items
            out.extend(self.list_item(item, marker))
        return out

    def list_item(self, item: ListItem, marker: str) -> list[str]:
        self.expect(item, ListItem)
        lines = self.blocks(item.blocks) or [""]
        pad = " " * len(marker)
        return [marker + lines[0]] + [(pad + ln) if ln.strip() else "" for ln in lines[1:]]

    def visit_CodeBlock(self, node: CodeBlock) -> list[str]:
        runs = [len(r) for r in re.findall(r"^`{3,}", node.text, re.M)]
        fence = "`" * max(3, max(runs, default=0) + 1)
        info = re.sub(r"[^\w+#.-]", "", node.info)
        lines = [fence + info, *node.text.rstrip("\n").split("\n"), fence]
        if self.liquid and _LIQUID_OPEN.search(node.text):
            if re.search(r"\{%-?\s*endraw", node.text):
                raise SourceError(
                    f"code block on line {node.line} contains '{{% endraw %}}', which the Jekyll archive cannot "
                    "show verbatim; write it as '{ % endraw % }'",
                    line=node.line,
                )
            lines = ["{% raw %}", *lines, "{% endraw %}"]
        return lines

    def visit_Quote(self, node: Quote) -> list[str]:
        return [f"> {ln}" if ln else ">" for ln in self.blocks(node.blocks)]

    def visit_MathBlock(self, node: MathBlock) -> list[str]:
        lines = ["$$", *node.tex.split("\n"), "$$"]
        if self.liquid and _LIQUID_OPEN.search(node.tex):
            self.liquid_raw("", node.tex)  # refuses an endraw inside
            lines = ["{% raw %}", *lines, "{% endraw %}"]
        return lines

    def table_cell(self, cell) -> str:
        return self.inline(cell).replace("\n", " ").replace("|", "\\|").strip()

    def visit_Table(self, node: Table) -> list[str]:
        """A GFM table: header, delimiter row with the alignments, body rows."""
        marks = {"left": ":---", "center": ":---:", "right": "---:", None: "---"}
        width = len(node.head)
        rows = [node.head, *(tuple(r) + ((),) * (width - len(r)) for r in node.rows)]
        lines = ["| " + " | ".join(self.table_cell(c) for c in row[:width]) + " |" for row in rows]
        lines.insert(1, "| " + " | ".join(marks[node.aligns[k] if k < len(node.aligns) else None]
                                          for k in range(width)) + " |")
        return lines

    # ---- issue parts -------------------------------------------------------------------

    def brief(self, brief: Brief) -> str:
        self.expect(brief, Brief)
        return self.inline(brief.content)

    def field(self, f: Field) -> str:
        self.expect(f, Field)
        return f"{self.escape(f.label)}{COLON}{self.inline(f.value)}"

    def item_prefixes(self, item: Item) -> str:
        return "".join(f"[{self.escape(p)}] " for p in (item.arxiv, item.venue) if p)

    def item_title(self, item: Item) -> str:
        """The display title as Markdown: markup inside the title (`**NVIDIA**`) is kept."""
        if not item.title_inlines:
            return self.escape_link_text(self.escape(item.display_title))
        title = self.inline(item.title_inlines)
        if item.repo:
            title = f"{self.escape_link_text(self.escape(item.repo))}: {title}"
        return f"{title} | {self.escape_link_text(self.escape(item.source))}" if item.source else title

    def item_head(self, item: Item) -> str:
        title = self.item_title(item)
        head = f"[{title}]({markdown_url(item.url)})" if item.url is not None else title
        return self.item_prefixes(item) + head + self.inline(item.extra)

    def escape_link_text(self, text: str) -> str:
        return text.replace("[", r"\[").replace("]", r"\]")

    def summary_units(self, item: Item) -> list[tuple[list[str], bool]]:
        """The summary as (lines, is_paragraph) units, one a block, the 摘要 label where the
        source had it (lists and code indented under the item)."""
        units: list[tuple[list[str], bool]] = []
        for block in item.labelled_summary(SUMMARY_LABEL + COLON):
            written = self.dispatch(block)
            if isinstance(block, ListBlock | CodeBlock | Table | MathBlock):
                written = [(self.list_indent + ln) if ln.strip() else "" for ln in written]
            units.append((written, isinstance(block, Paragraph)))
        return units

    def summary_lines(self, item: Item) -> list[str]:
        return [ln for lines, _ in self.summary_units(item) for ln in lines]

    def item(self, item: Item) -> str:
        """One item as a list entry: head line, field lines, summary lines.

        Each line of the house style (head, field, summary paragraph) ends with `hard_break`
        where the next line would otherwise run on into it; soft breaks inside a paragraph stay
        soft, and code and list lines are written verbatim (no trailing spaces)."""
        self.expect(item, Item)
        units: list[tuple[list[str], bool]] = [([f"- {self.item_head(item)}"], True)]
        units += [([self.field(f)], True) for f in item.fields]
        units += self.summary_units(item)
        out: list[str] = []
        for k, (lines, is_para) in enumerate(units):
            lines = list(lines)
            nxt = units[k + 1] if k + 1 < len(units) else None
            if is_para and nxt is not None and nxt[1] and lines and lines[-1].strip():
                lines[-1] += self.hard_break
            out.extend(lines)
        return "\n".join(out)

    def closing(self, blocks: Iterable[Block]) -> str:
        """Free blocks (a section's closing text): blank lines between them."""
        return "\n\n".join("\n".join(self.dispatch(b)) for b in blocks)


class PlainTextWriter(MarkdownWriter):
    """Plain text: links keep their text, emphasis and code lose their marks, images their
    address (the alt text stays). Field lines keep the URL text of their links."""

    hard_break = ""
    list_indent = "    "

    def visit_Text(self, node: Text) -> str:
        return node.text

    def escape(self, text: str) -> str:
        return text

    def escape_url(self, url: str) -> str:
        return safe_url(url)

    def visit_Code(self, node: Code) -> str:
        return node.text

    def visit_Strong(self, node: Strong) -> str:
        return self.inline(node.children)

    def visit_Strikethrough(self, node: Strikethrough) -> str:
        return strike_text(self.inline(node.children))

    def visit_Emphasis(self, node: Emphasis) -> str:
        return self.inline(node.children)

    def visit_Link(self, node: Link) -> str:
        return self.inline(node.children)

    def visit_Image(self, node: Image) -> str:
        return node.alt

    def visit_LineBreak(self, node: LineBreak) -> str:
        return "\n"

    def visit_FootnoteRef(self, node: FootnoteRef) -> str:
        return f"[{node.number}]"

    def footnote(self, note: Footnote) -> str:
        return f"[{note.number}] {self.inline(note.children)}"

    def table_cell(self, cell) -> str:
        return self.inline(cell).replace("\n", " ").strip()

    def visit_Table(self, node: Table) -> list[str]:
        """A table as lines of cells separated by ` | ` (the header first)."""
        return [" | ".join(self.table_cell(c) for c in row) for row in (node.head, *node.rows)]

    def visit_CodeBlock(self, node: CodeBlock) -> list[str]:
        return node.text.rstrip("\n").split("\n")

    def visit_Quote(self, node: Quote) -> list[str]:
        return self.blocks(node.blocks)

    def field(self, f: Field) -> str:
        self.expect(f, Field)
        parts = []
        for node in f.value:
            if isinstance(node, Link):
                text = self.inline(node.children).strip()
                parts.append(node.url if not text or text == node.url else f"{text} {node.url}")
            else:
                parts.append(self.dispatch(node))
        return f"{f.label}{COLON}{''.join(parts)}"

    def escape_link_text(self, text: str) -> str:
        return text

    def item_head(self, item: Item) -> str:
        return self.item_prefixes(item) + item.display_title + self.inline(item.extra)


class MailTextWriter(PlainTextWriter):
    """The text/plain part of an email: plain text that keeps what a reader of a text mail needs
    to follow it — a link's URL after its text, code in backticks, an image's address, quotes
    and code blocks marked, list continuation lines indented under their marker."""

    bare_urls = False

    def visit_Code(self, node: Code) -> str:
        return f"`{node.text}`"

    def visit_Link(self, node: Link) -> str:
        text = self.inline(node.children)
        if not node.url or text.strip() == node.url:
            return text or node.url
        return f"{text} ({node.url})" if text else node.url

    def visit_Image(self, node: Image) -> str:
        return f"[{node.alt}] ({node.src})" if node.alt else f"({node.src})"

    def visit_ListBlock(self, node: ListBlock) -> list[str]:
        lines: list[str] = []
        for i, item in enumerate(node.items):
            self.expect(item, ListItem)
            marker = f"{node.start + i}. " if node.ordered else "- "
            body = self.blocks(item.blocks) or [""]
            lines.append(marker + body[0])
            lines.extend(textwrap.indent(line, " " * len(marker)) for line in body[1:])
        return lines

    def visit_CodeBlock(self, node: CodeBlock) -> list[str]:
        return ["    " + line for line in node.text.split("\n")]

    def visit_Quote(self, node: Quote) -> list[str]:
        return ["> " + line for line in self.blocks(node.blocks)]


def bare_url(node: object) -> bool:
    """A link written as its own address (`https://…` in the source, autolinked): one that
    reads the same written bare (no markup, entity, Liquid brace or backslash in it), where only
    whitespace or the end of a line follows it."""
    if not (isinstance(node, Link) and not node.title and len(node.children) == 1
            and isinstance(node.children[0], Text)):
        return False
    text = node.children[0].text
    return (re.fullmatch(r"https?://[^\s<>\[\]`*~\\{}]+", text) is not None and not _ENTITY_LIKE.search(text)
            and (text == node.url or urllib.parse.unquote(node.url) == text))


def strike_text(text: str) -> str:
    """Struck-through text for plain text: each character overlaid with U+0336 (a stroke that
    text mail clients and terminals show), so a correction still reads as one."""
    return "".join(ch + "\u0336" if not ch.isspace() else ch for ch in text)


class JekyllWriter(MarkdownWriter):
    """The GitHub archive: read by cmark-gfm on github.com and by Jekyll (Liquid, then kramdown)."""

    liquid = True


def lines_of(paragraphs: Iterable[Paragraph], writer: MarkdownWriter) -> list[str]:
    """The lines of a run of paragraphs (the lead)."""
    out: list[str] = []
    for p in paragraphs:
        out.extend(writer.dispatch(p))
    return out


# ---- the channels built on these writers ---------------------------------------------------


def public_src(src: str, base: str, date: str = "") -> str:
    """A local image path as its public URL under [newsletter] image_base_url (when set; `{date}`
    in it is the issue's date, for sites that keep each issue's images in a folder of its own)."""
    if not base or re.match(r"^[a-z][a-z0-9+.-]*:", src, re.I) or src.startswith("/"):
        return src
    return base.replace("{date}", date).rstrip("/") + "/" + src.lstrip("./")


class TemplateChannel(Channel):
    """A channel whose page is a Jinja2 template fed with the issue's parts written by a writer.

    Subclasses name their `template` (looked up in the user's template folder first) and may
    override `title()` and `extra_context()`; conventions (headings, link notes, footers) live in
    the templates and brand words in settings["newsletter"].
    """

    template: ClassVar[str]
    writer_class: ClassVar[type[MarkdownWriter]] = MarkdownWriter
    past_limit: ClassVar[int | None] = 10  # how many past issues the 往期回顾 list shows (None: all)
    public_images_only: ClassVar[bool] = False

    @classmethod
    def archive_slice(cls, date, archive):
        """The 往期回顾 list: the last `past_limit` issues before this one (None: the default slice)."""
        if cls.past_limit is None:
            return super().archive_slice(date, archive)
        return [p for p in archive if p.date < date][: cls.past_limit]

    # -- overridable -------------------------------------------------------------------------

    def title(self, issue: Issue) -> str:
        return issue.title

    def extra_context(self, issue: Issue, writer: MarkdownWriter) -> dict[str, Any]:
        return {}

    # -- the render ----------------------------------------------------------------------

    def render(self, issue: Issue) -> Rendition:
        base = self.settings["newsletter"]["image_base_url"] if self.public_images_only else ""
        writer = self.writer_class(image_base=base, date=issue.date.isoformat())
        newsletter = self.settings["newsletter"]
        esc = writer.escape
        lic = license_of(issue, self.settings)
        context = {
            "issue": issue,
            "title": esc(self.title(issue)),
            "tagline": esc(issue.tagline or newsletter["tagline"]),
            "lead": lines_of(issue.lead, writer),
            "notes": ["\n".join(writer.dispatch(note)) for note in issue.notes],
            "warmup_intro": esc(issue.warmup_intro),
            "warmup": [writer.brief(b) for b in issue.warmup],
            "sections": [
                {
                    "name": esc(s.name),
                    "note": writer.inline(s.note),
                    "items": [writer.item(item) for item in s.items],
                    "loose": s.loose,
                    "closing": writer.closing(s.closing),
                }
                for s in issue.sections
            ],
            "footnotes": writer.footnote_lines(issue.footnotes),
            "author": esc(issue.author or newsletter["author"]),
            # every URL passes the one allow-list; attribute-safe for the HTML of the GitHub footer
            "license": License(esc(lic.name), writer.escape_url(lic.url), writer.escape_url(lic.badge)),
            "past": [
                {"title": esc(p.title), "date": p.slug, "url": markdown_url(newsletter["archive_url"].format(date=p.slug))}
                for p in self.ctx.past_issues(issue.date, self.past_limit)
            ],
            "channel": self.settings.data.get(self.name, {}),
        }
        context.update(self.extra_context(issue, writer))
        try:
            template = self.ctx.env.get_template(self.template)
        except jinja2.TemplateNotFound:
            raise ConfigError(
                f"channel {self.name}: template {self.template} not found in [paths] templates "
                f"({self.settings.where()}) nor in the built-in templates"
            ) from None
        try:
            body = template.render(**context)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "filename", None) or self.template
            line = getattr(exc, "lineno", None)
            raise ConfigError(f"template {where}" + (f" line {line}" if line else "") + f": {exc}") from None
        body = re.sub(r"\n{4,}", "\n\n\n", body).rstrip("\n") + "\n"
        images, image_refs = self.images(issue, context)
        return Rendition(
            channel=self.name,
            issue=issue.slug,
            body=body,
            media_type=self.media_type,
            filename=self.filename(issue),
            metadata={"title": self.title(issue), "images": image_refs, "author": issue.author or newsletter["author"]},
            images=images,
        )

    def images(self, issue: Issue, context: dict[str, Any]) -> tuple[tuple[LocalImage, ...], list[str]]:
        """Images of the issue: local ones are handed to the transport; every ref is listed."""
        local: list[LocalImage] = []
        refs: list[str] = []
        for node in iter_links(issue):
            if not isinstance(node, Image):
                continue
            refs.append(node.src)
            if is_http(node.src):
                if self.public_images_only and re.search(r"\s", node.src):
                    raise SourceError(
                        f"image {node.src!r} has spaces in its URL, which the {self.name} editor rejects; "
                        "encode them as %20",
                        file=issue.source_path,
                    )
                continue
            if self.public_images_only and self.settings["newsletter"]["image_base_url"]:
                continue  # written as its public URL; the image is published with the archive
            if self.public_images_only:
                raise SourceError(
                    f"image {node.src!r} is not a public http(s) URL; the {self.name} editor only imports "
                    "images from the web: upload it and use its https:// address, or set [newsletter] image_base_url "
                    "to where the archive publishes images",
                    file=issue.source_path,
                )
            base = self.ctx.base_dir
            local.append(LocalImage(ref=node.src, path=(base / node.src) if base else None))
        for extra in context.get("qr_images", ()):
            refs.append(extra)
        return tuple(local), refs


def public_qr_url(channel: TemplateChannel) -> str:
    """[newsletter] qr_public_url, checked: the column editors import images from the web only
    (empty: the footer has no QR code)."""
    url = channel.settings["newsletter"]["qr_public_url"]
    if url and (not is_http(url) or re.search(r"\s", url)):
        raise ConfigError(
            f"[newsletter] qr_public_url must be a public http(s) URL without spaces for the {channel.name} "
            f"channel, got {url!r}: set it in {channel.settings.where()}"
        )
    return url
