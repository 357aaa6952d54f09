"""The model → HTML visitor the HTML channels share (WeChat, email).

One class walks every inline and block node of `publisher.model`, dispatching each to its
`visit_<NodeClass>` method (channels/visitor.py); a node type it does not know raises
`UnknownNodeError` instead of being dropped. What
differs between channels is a parameter, not a copy of the walk:

- `styles`: tag → inline CSS. WeChat keeps only inline `style` attributes, so it passes a
  (compact) table here; email passes nothing and styles by its stylesheet, which premailer
  inlines later.
- `references`: when given, external links become numbered references `[n]` (WeChat, where
  external links do not work) collected for a 参考资料 list; `keep_link(url)` decides which
  links stay real links (mp.weixin.qq.com).
- `max_list_depth`: deeper lists are flattened into the deepest allowed level, content kept.
- `preserve_code`: code blocks keep newlines and runs of spaces as `<br>` and `&nbsp;` for
  editors that collapse whitespace inside `<pre>`.
- `highlight`: a Pygments style name; code blocks that name their language (```python) get its
  colours as inline `style` attributes on `<span>`s (no classes); "" or an unknown language:
  monochrome.
- `image_src`: maps an image's src to the src written in the HTML (or None to turn the image
  into a reference); channels use it to collect local images.
- `formula(tex, display)`: a formula's HTML (an <img> of its PNG for WeChat and email, MathML
  for the web); channels use it to collect the formula images.
- `footnotes`: the issue's footnotes by label. With `references` (WeChat) a note takes the next
  reference number and is listed with the link references; otherwise a `[n]` mark links to the
  note in `footnotes_html()` after the article.
- `classes`: True (email) writes the parts that have no tag of their own (`table-wrap`,
  `figure`, `caption`, `formula`, `footnotes`) with a class, for a stylesheet to style; with
  `styles` (WeChat) their style comes from the `.part` rules.

A paragraph that is one image whose alt text reads as a caption (it has a space or a non-ASCII
character: `![模型结构图](…)`, not `![graph-opt](…)`) is written as a centred figure with that
caption.

Every piece of user-written text goes through `markupsafe.escape`.
"""

from __future__ import annotations

import functools
import io
import mimetypes
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape
from publisher.channels.base import Channel, LocalImage, Rendition
from publisher.channels.visitor import NodeVisitor

from publisher import formulas
from publisher.errors import ConfigError, SourceError
from publisher.model import (
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
    LineBreak,
    Link,
    ListBlock,
    ListItem,
    Math,
    MathBlock,
    Paragraph,
    Quote,
    Section,
    SoftBreak,
    Strikethrough,
    Strong,
    Table,
    Text,
    plain_text,
)
from publisher.refs import is_remote  # noqa: F401 (the HTML channels import it from here)
from publisher.settings import Settings


@dataclass
class References:
    """Numbered references: one number per distinct URL, in order of first use."""

    numbers: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    NOTE = "\0note:"  # the key of a footnote (a note, not a URL: listed without an address)

    def note(self, label: str, html: Markup) -> int:
        """A footnote's number in the same sequence as the links (its text is the entry)."""
        return self.number(self.NOTE + label, html)

    def number(self, url: str, label: str = "") -> int:
        if url not in self.numbers:
            self.numbers[url] = len(self.numbers) + 1
            self.labels[url] = label
        elif label and not self.labels[url]:
            self.labels[url] = label
        return self.numbers[url]

    def entries(self) -> list[tuple[int, str, str]]:
        """(number, url, label) in numbering order; a footnote has the url "" and its text as label."""
        return [(n, "" if url.startswith(self.NOTE) else url, self.labels[url]) for url, n in self.numbers.items()]

    def __len__(self) -> int:
        return len(self.numbers)


def _attr(value: str) -> str:
    return str(escape(value))


class HtmlWriter(NodeVisitor):
    def __init__(
        self,
        *,
        styles: Mapping[str, str] | None = None,
        references: References | None = None,
        keep_link: Callable[[str], bool] = lambda url: True,
        max_list_depth: int | None = None,
        preserve_code: bool = False,
        image_src: Callable[[Image], str | None] = lambda image: image.src,
        ref_format: str = "[{n}]",
        highlight: str = "",
        formula: Callable[[str, bool], str] | None = None,
        footnotes: Iterable[Footnote] = (),
        classes: bool = False,
    ):
        self.styles = dict(styles or {})
        self.references = references
        self.keep_link = keep_link
        self.max_list_depth = max_list_depth
        self.preserve_code = preserve_code
        self.image_src = image_src
        self.ref_format = ref_format
        self.highlight = highlight  # a Pygments style name; "" = code stays monochrome
        self.formula = formula or (lambda tex, display: self.open("code") + str(escape(tex)) + "</code>")
        self.footnotes = {n.label: n for n in footnotes}
        self.classes = classes

    # -- helpers ---------------------------------------------------------------------------

    def open(self, tag: str, extra: str = "") -> str:
        """`<tag style="…">` with the channel's style for that tag (if any)."""
        style = self.styles.get(tag, "")
        if extra:
            style = f"{style};{extra}" if style else extra
        return f'<{tag} style="{_attr(style)}">' if style else f"<{tag}>"

    def part(self, tag: str, name: str, extra: str = "", attrs: str = "") -> str:
        """`<tag>` of a part without a tag of its own (`figure`, `table-wrap` …): styled by the
        `.name` rule of `styles`, or marked with `class="name"` when `classes`."""
        style = self.styles.get("." + name, "")
        if extra and not self.classes:  # with classes the stylesheet says it
            style = f"{style};{extra}" if style else extra
        cls = f' class="{name}"' if self.classes else ""
        return f'<{tag}{cls}{attrs} style="{_attr(style)}">' if style else f"<{tag}{cls}{attrs}>"

    def ref_mark(self, url: str, label: str = "") -> str:
        assert self.references is not None
        n = self.references.number(url, label)
        return self.open("sup") + _attr(self.ref_format.format(n=n)) + "</sup>"

    # -- inlines ---------------------------------------------------------------------------

    def inline(self, node: object) -> str:
        return self.dispatch(node)

    def inlines(self, nodes: Iterable[Inline]) -> str:
        return "".join(self.inline(n) for n in nodes)

    def visit_Text(self, node: Text) -> str:
        return str(escape(node.text))

    def visit_Code(self, node: Code) -> str:
        return self.open("code") + str(escape(node.text)) + "</code>"

    def visit_Strong(self, node: Strong) -> str:
        return self.open("strong") + self.inlines(node.children) + "</strong>"

    def visit_Emphasis(self, node: Emphasis) -> str:
        return self.open("em") + self.inlines(node.children) + "</em>"

    def visit_Strikethrough(self, node: Strikethrough) -> str:
        return self.open("del") + self.inlines(node.children) + "</del>"

    def visit_Link(self, node: Link) -> str:
        inner = self.inlines(node.children)
        url = node.url
        if not url:
            return inner
        if self.references is not None and not self.keep_link(url):
            label = plain_text(node.children)
            # a bare URL (its text is the URL itself) shows once, followed by its number
            return inner + self.ref_mark(url, "" if label.strip() == url else label)
        if not inner:
            inner = str(escape(url))
        title = f' title="{_attr(node.title)}"' if node.title else ""
        style = self.styles.get("a", "")
        style_attr = f' style="{_attr(style)}"' if style else ""
        return f'<a href="{_attr(url)}"{title}{style_attr}>{inner}</a>'

    def visit_Image(self, node: Image) -> str:
        src = self.image_src(node)
        if src is None:
            # an image the platform cannot show (e.g. an external URL on WeChat): a reference
            if self.references is None:
                return str(escape(node.alt or node.src))
            text = f"[{node.alt}]" if node.alt else ""
            return str(escape(text)) + self.ref_mark(node.src, node.alt)
        title = f' title="{_attr(node.title)}"' if node.title else ""
        style = self.styles.get("img", "")
        style_attr = f' style="{_attr(style)}"' if style else ""
        return f'<img src="{_attr(src)}" alt="{_attr(node.alt)}"{title}{style_attr}>'

    def visit_Math(self, node: Math) -> str:
        return self.formula(node.tex, node.display)

    def visit_FootnoteRef(self, node: FootnoteRef) -> str:
        note = self.footnotes[node.label]
        if self.references is not None:
            refs = self.references
            key = refs.NOTE + node.label
            if key in refs.numbers:
                n = refs.numbers[key]
            else:  # the note takes its number before the links inside it take theirs
                n = refs.note(node.label, Markup(""))
                refs.labels[key] = Markup(self.inlines(note.children))
            return self.open("sup") + f"[{n}]</sup>"
        return (self.open("sup") + f'<a href="#fn-{node.number}" id="fnref-{node.number}">'
                f"[{node.number}]</a></sup>")

    def footnotes_html(self, notes: Iterable[Footnote]) -> str:
        """The notes after the article (channels without `references`; WeChat lists them with
        the link references)."""
        notes = list(notes)
        if not notes or self.references is not None:
            return ""
        items = "".join(f'<li id="fn-{n.number}" value="{n.number}">{self.inlines(n.children)} '
                        f'<a href="#fnref-{n.number}" aria-label="back">↩</a></li>' for n in notes)
        return self.part("section", "footnotes") + self.open("ol") + items + "</ol></section>"

    def visit_LineBreak(self, node: LineBreak) -> str:
        return "<br>"

    def visit_SoftBreak(self, node: SoftBreak) -> str:
        return "\n"

    # -- blocks ----------------------------------------------------------------------------

    def block(self, node: object, depth: int = 0) -> str:
        return self.dispatch(node, depth)

    def blocks(self, nodes: Iterable[object], depth: int = 0) -> str:
        return "".join(self.block(n, depth) for n in nodes)

    # Internally everything is str (already escaped HTML); `html()` marks a result safe for Jinja2.
    # (Mixing str and Markup would escape the str side a second time.)
    @staticmethod
    def html(fragment: str) -> Markup:
        return Markup(fragment)

    def visit_Paragraph(self, node: Paragraph, depth: int = 0) -> str:
        figure = self.figure(node)
        return figure if figure is not None else self.open("p") + self.inlines(node.children) + "</p>"

    def figure(self, node: Paragraph) -> str | None:
        """A paragraph that is one image with a caption-like alt text, as a centred figure."""
        kids = [n for n in node.children if not (isinstance(n, Text | SoftBreak) and not getattr(n, "text", "").strip())]
        if len(kids) != 1 or not isinstance(kids[0], Image) or not is_caption(kids[0].alt):
            return None
        image = self.visit_Image(kids[0])
        if not image.startswith("<img"):
            return None  # an image the platform cannot show stays a reference
        return (self.part("figure", "figure", "margin:0 0 8px;text-align:center") + image
                + self.part("figcaption", "caption") + str(escape(kids[0].alt.strip())) + "</figcaption></figure>")

    def visit_MathBlock(self, node: MathBlock, depth: int = 0) -> str:
        return self.part("section", "formula-block", "text-align:center") + self.formula(node.tex, True) + "</section>"

    def visit_Table(self, node: Table, depth: int = 0) -> str:
        """A GFM table in a horizontally scrolling box (a wide table never widens the page)."""
        def row(cells, tag: str) -> str:
            out = []
            for k, cell in enumerate(cells):
                align = node.aligns[k] if k < len(node.aligns) else None
                out.append(self.open(tag, f"text-align:{align}" if align else "") + self.inlines(cell) + f"</{tag}>")
            return "<tr>" + "".join(out) + "</tr>"

        head = row(node.head, "th")
        body = "".join(row(r, "td") for r in node.rows)
        return (self.part("section", "table-wrap", "overflow-x:auto") + self.open("table") + "<thead>" + head
                + "</thead><tbody>" + body + "</tbody></table></section>")

    def visit_ListBlock(self, node: ListBlock, depth: int = 0) -> str:
        if self.max_list_depth is not None and depth >= self.max_list_depth:
            # too deep for the platform: flatten into the enclosing item, content kept
            return self._flattened(node)
        tag = "ol" if node.ordered else "ul"
        start = f' start="{node.start}"' if node.ordered and node.start != 1 else ""
        style = self.styles.get(tag, "")
        out = [f'<{tag}{start} style="{_attr(style)}">' if style else f"<{tag}{start}>"]
        for item in node.items:
            out.append(self.list_item(item, depth + 1))
        out.append(f"</{tag}>")
        return "".join(out)

    def list_item(self, node: ListItem, depth: int) -> str:
        self.expect(node, ListItem)
        # a list item holding one paragraph is written tight, without <p>
        if len(node.blocks) >= 1 and isinstance(node.blocks[0], Paragraph):
            head = str(self.inlines(node.blocks[0].children))
            rest = node.blocks[1:]
        else:
            head, rest = "", node.blocks
        return self.open("li") + head + self.blocks(rest, depth) + "</li>"

    def _flattened(self, node: ListBlock) -> str:
        """A list past the depth limit as lines `marker text` separated by <br>."""
        lines: list[str] = []
        for i, item in enumerate(node.items):
            marker = f"{node.start + i}. " if node.ordered else "- "
            parts: list[str] = []
            for block in item.blocks:
                if isinstance(block, Paragraph):
                    parts.append(str(self.inlines(block.children)))
                elif isinstance(block, ListBlock):
                    parts.append(self._flattened(block))
                else:
                    parts.append(self.block(block, self.max_list_depth or 0))
            lines.append(str(escape(marker)) + "<br>".join(p for p in parts if p))
        return "<br>" + "<br>".join(lines)

    def visit_CodeBlock(self, node: CodeBlock, depth: int = 0) -> str:
        lines = code_runs(node, self.highlight)
        if self.preserve_code:
            inner = "<br>".join(_preserved_line(runs) for runs in lines)
        else:
            inner = "\n".join("".join(_span(style, text, str(escape(text))) for style, text in runs) for runs in lines)
        return self.open("pre") + "<code>" + inner + "</code></pre>"

    def visit_Quote(self, node: Quote, depth: int = 0) -> str:
        return self.open("blockquote") + self.blocks(node.blocks, depth) + "</blockquote>"

    # -- issue parts -------------------------------------------------------------------------

    def brief(self, node: Brief) -> Markup:
        self.expect(node, Brief)
        return Markup(self.inlines(node.content))

    def field(self, node: Field) -> Markup:
        self.expect(node, Field)
        return Markup(self.inlines(node.value))

    def item_prefix(self, item: Item) -> str:
        """The prefixes before the title link: `[2007.02269v2] [CVPR2020] `."""
        return "".join(f"[{p}] " for p in (item.arxiv, item.venue) if p)

    def item_title(self, item: Item) -> Markup:
        """The title line of an item: prefixes, the linked display title, extra links."""
        head = str(escape(self.item_prefix(item)))
        title: tuple[Inline, ...] = (Text(item.display_title),)
        if item.title_inlines:  # markup inside the title (`**NVIDIA**`) is kept
            title = (
                *((Text(f"{item.repo}: "),) if item.repo else ()),
                *item.title_inlines,
                *((Text(f" | {item.source}"),) if item.source else ()),
            )
        if item.url:
            head += self.visit_Link(Link(item.url, title))
        else:
            head += self.inlines(title)
        if item.extra:
            head += " " + self.inlines(item.extra)
        return Markup(head)


# -- the pipeline the HTML channels share --------------------------------------------------------


class HtmlChannel(Channel):
    """One render for the HTML channels (WeChat, email): they differ by hooks, not by copies.

    `render()` collects the issue's local images (and its cover), asks `writer()` for the
    channel's HtmlWriter, writes the issue's parts in document order (reference numbers follow
    first use) — the 导读 with its `导读：` prefix, the warm-up briefs, the notes, and each section's
    note, items (title line, fields, summary with the 摘要 label where the source had it) and
    closing text — and hands them to `page()`, which lays out the page from the channel's
    template and returns the Rendition.

    Hooks: `writer(image_src)`, `remote_image(src)` and `local_image_src(src, issue)` (what an image's
    src becomes), `page(issue, writer, content, images)`.
    """

    @classmethod
    def archive_slice(cls, date, archive):
        return []  # neither shows a list of past issues (WeChat points at the account's menu)

    def writer(self, image_src: Callable[[Image], str | None], formula: Callable[[str, bool], str],
               issue: Issue) -> HtmlWriter:
        return HtmlWriter(image_src=image_src, highlight=self.settings["code"]["highlight_style"],
                          formula=formula, footnotes=issue.footnotes, classes=True)

    def formula_color(self) -> str:
        """The ink of formula images (the text colour of the page)."""
        return FORMULA_INK

    def remote_image(self, src: str) -> str | None:
        """The src written for an image on another site (None: the image becomes a reference)."""
        return src

    def local_image_src(self, src: str, issue: Issue) -> str:
        """The src written for an image next to the issue (collected for the transport)."""
        return src

    def page(self, issue: Issue, writer: HtmlWriter, content: dict[str, Any],
             images: list[LocalImage]) -> Rendition:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, issue: Issue) -> Rendition:
        images: list[LocalImage] = []
        seen: set[str] = set()

        def image_src(node: Image) -> str | None:
            if is_remote(node.src):
                return self.remote_image(node.src)
            if node.src not in seen:
                seen.add(node.src)
                images.append(local_image(node.src, self.ctx.base_dir, issue, "inline"))
            return self.local_image_src(node.src, issue)

        def formula(tex: str, display: bool) -> str:
            img = formulas.image(tex, display, self.formula_color())
            if img.name not in seen:
                seen.add(img.name)
                images.append(LocalImage(ref=img.name, data=img.data, role="inline", media_type="image/png"))
            return formula_img(w, self.local_image_src(img.name, issue), tex, img, display)

        w = self.writer(image_src, formula, issue)
        content = {
            "lead": Markup(lead_html(w, issue)),
            "briefs": [w.brief(b) for b in issue.warmup],
            "notes": Markup(w.blocks(issue.notes)),
            "sections": [section_html(w, section) for section in issue.sections],
        }
        content["footnotes"] = Markup(w.footnotes_html(issue.footnotes))
        if issue.cover and not is_remote(issue.cover):
            images.insert(0, local_image(issue.cover, self.ctx.base_dir, issue, "cover"))
        return self.page(issue, w, content, images)


FORMULA_INK = "#333333"  # email's formula images; the GitHub archive publishes the same files


def formula_img(w: HtmlWriter, src: str, tex: str, img: formulas.FormulaImage, display: bool) -> str:
    """A formula's PNG as an <img> at its size (2 image pixels a CSS pixel), on the baseline."""
    size = f"width:{img.width:g}px;max-width:100%"
    if not display:
        size += f";vertical-align:-{img.depth:g}px"
    style = ";".join(s for s in (w.styles.get(".formula", ""), size) if s)
    cls = ' class="formula"' if w.classes else ""
    return f'<img{cls} src="{_attr(src)}" alt="{_attr(tex)}" style="{_attr(style)}">'


def is_caption(alt: str) -> bool:
    """Whether an image's alt text reads as a caption: it has a space or a non-ASCII character
    (a single ASCII word such as `graph-opt` or `wechat_qrcode` is a file name, not a caption)."""
    alt = alt.strip()
    return bool(alt) and (" " in alt or not alt.isascii())


def lead_html(w: HtmlWriter, issue: Issue) -> str:
    """The 导读 as HTML paragraphs, the first one opening with `导读：`."""
    if not issue.lead:
        return ""
    first = issue.lead[0]
    return w.block(Paragraph((Text("导读："), *first.children), first.line)) + w.blocks(issue.lead[1:])


def section_html(w: HtmlWriter, section: Section) -> dict[str, Any]:
    """A section's parts as HTML for a page template: name, note, items, closing text (written
    in that order: reference numbers follow first use)."""
    note = Markup(w.inlines(section.note))
    items = [{"title": w.item_title(item),
              "fields": [(f.label, w.field(f)) for f in item.fields],
              "summary": Markup(w.blocks(item.labelled_summary("摘要：")))}
             for item in section.items]
    return {"name": section.name, "note": note, "items": items,
            "closing": Markup(w.blocks(section.closing))}


# -- helpers the HTML channels share ------------------------------------------------------------


Run = tuple[str, str]  # (inline style, text) of a piece of code


def code_runs(node: CodeBlock, style_name: str) -> list[list[Run]]:
    """The code block's lines as runs of (inline style, text); one unstyled run per line when
    there is no style, no language or no lexer for it."""
    lexer = _lexer(node.info.split()[0]) if style_name and node.info.strip() else None
    if lexer is None:
        return [[("", line)] for line in node.text.split("\n")]
    styles = token_styles(style_name)
    lines: list[list[Run]] = [[]]
    for ttype, value in lexer.get_tokens(node.text):
        css = styles(ttype)
        for i, piece in enumerate(value.split("\n")):
            if i:
                lines.append([])
            if not piece:
                continue
            runs = lines[-1]
            if runs and runs[-1][0] == css:
                runs[-1] = (css, runs[-1][1] + piece)
            else:
                runs.append((css, piece))
    return lines


def _lexer(language: str):
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language.lower(), stripnl=False, ensurenl=False, stripall=False)
    except ClassNotFound:
        return None


@functools.cache
def token_styles(style_name: str) -> Callable[[object], str]:
    """token type -> the inline CSS of `style_name` for it (colour, bold, italic; short forms)."""
    from pygments.styles import get_style_by_name
    from pygments.util import ClassNotFound

    try:
        style = get_style_by_name(style_name)
    except ClassNotFound:
        from pygments.styles import get_all_styles

        raise ConfigError(f"[code] highlight_style: unknown Pygments style {style_name!r}; known: "
                          f"{', '.join(sorted(get_all_styles()))} (or \"\" for no highlighting)") from None
    cache: dict[object, str] = {}

    def css(ttype: object) -> str:
        if ttype not in cache:
            s = style.style_for_token(ttype)
            parts = [f"color:#{s['color']}"] if s["color"] else []
            parts += ["font-weight:bold"] if s["bold"] else []
            parts += ["font-style:italic"] if s["italic"] else []
            cache[ttype] = ";".join(parts)
        return cache[ttype]

    return css


def _span(style: str, text: str, html_text: str) -> str:
    """`html_text` (the escaped `text`) in a styled span, unless it is unstyled or blank."""
    return f'<span style="{style}">{html_text}</span>' if style and text.strip() else html_text


def _preserved_line(runs: list[Run]) -> str:
    """One code line for editors that collapse whitespace: the indentation as &nbsp;, and every
    second space of a run of spaces non-breaking."""
    out, start = [], True
    for style, text in runs:
        if start:
            stripped = text.lstrip(" \t")
            indent = text[: len(text) - len(stripped)].replace("\t", "    ")
            piece = "&nbsp;" * len(indent) + str(escape(stripped)).replace("  ", " &nbsp;")
            start = not stripped
        else:
            piece = str(escape(text)).replace("  ", " &nbsp;")
        out.append(_span(style, text, piece))
    return "".join(out)


def lead_text(issue: Issue) -> str:
    """The lead (导读) as one line of plain text."""
    return " ".join(plain_text(p.children).strip() for p in issue.lead).strip()


def cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis when cut."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def local_image(src: str, base_dir: Path | None, issue: Issue, role: str) -> LocalImage:
    """A LocalImage for an image path written in the issue, relative to the issue's folder."""
    path = Path(src)
    if not path.is_absolute():
        if base_dir is None:
            raise SourceError(
                f"image {src!r} is a relative path but the issue has no folder to resolve it against; "
                "render the issue from its file, or use an absolute path or URL",
                file=issue.source_path,
            )
        path = base_dir / path
    if not path.is_file():
        raise SourceError(
            f"image {src!r} not found (looked for {path}); put the file next to the issue or fix the path",
            file=issue.source_path,
        )
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return LocalImage(ref=src, path=path, role=role, media_type=media)


def qr_image(settings: Settings) -> LocalImage | str:
    """The follow-account QR image: [newsletter] qr_image (a file), else a QR code generated from
    qr_target (PNG) when one is configured, else the account's real QR image by its public URL
    (qr_public_url, as the other channels show it)."""
    news = settings["newsletter"]
    if news.get("qr_image"):
        path = Path(news["qr_image"]).expanduser()
        if not path.is_absolute():
            path = settings.root / path
        if not path.is_file():
            raise ConfigError(
                f"[newsletter] qr_image: file {path} does not exist (set in {settings.where()}); "
                "fix the path, or leave it empty to use qr_target or qr_public_url"
            )
        media = mimetypes.guess_type(path.name)[0] or "image/png"
        return LocalImage(ref=path.name, path=path, role="qr", media_type=media)
    target = news.get("qr_target") or ""
    if not target:
        return news["qr_public_url"]  # empty: no QR code (WeChat's push refuses that)
    import segno

    buf = io.BytesIO()
    segno.make(target, error="m").save(buf, kind="png", scale=4, border=2)
    return LocalImage(ref="qr.png", data=buf.getvalue(), role="qr", media_type="image/png")


def format_setting(settings: Settings, section: str, key: str, **values: object) -> str:
    """`[section] key` formatted with str.format; a bad placeholder is a ConfigError naming it."""
    template = settings[section][key]
    try:
        return str(template).format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + k + "}" for k in values)
        raise ConfigError(
            f"[{section}] {key} = {template!r}: bad placeholder ({exc}); use only {known} "
            f"(set in {settings.where()})"
        ) from None


