"""Telegram: the issue posted to a chat or channel by a bot (Bot API `sendMessage`, HTML).

Written the way docs/architecture.md's "Write a channel" says, with no file of the core changed:
this folder (the class, its writer, its templates, its limit, its transport) and one entry-point
line. Telegram's HTML knows <b> <i> <s> <code> <pre> <a href> <blockquote> and newlines; a post
over 4,096 visible characters is several messages (`Rendition.messages`, split.py), the footer last.
Local images are not uploaded: an image is its alt text, or a link when it has a public address.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from publisher.channels.base import Rendition, license_of
from publisher.channels.markdown_writer import MarkdownWriter, TemplateChannel
from publisher.channels.telegram.limits import MESSAGE_MAX_CHARS, check
from publisher.channels.telegram.split import split_messages

from publisher.model import (
    Code,
    CodeBlock,
    Emphasis,
    Image,
    Issue,
    Item,
    Link,
    Quote,
    Strikethrough,
    Strong,
    Text,
)
from publisher.refs import is_http, safe_url


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


class TelegramWriter(MarkdownWriter):
    """The model as Telegram's HTML subset; every text escaped, every URL through refs.safe_url."""

    hard_break = ""
    list_indent = ""
    bare_urls = False

    def visit_Text(self, node: Text) -> str:
        return _esc(node.text)

    def escape(self, text: str) -> str:
        return _esc(text)

    def escape_url(self, url: str) -> str:
        return html.escape(safe_url(url))

    def escape_link_text(self, text: str) -> str:
        return text

    def visit_Code(self, node: Code) -> str:
        return f"<code>{_esc(node.text)}</code>"

    def visit_Strong(self, node: Strong) -> str:
        return f"<b>{self.inline(node.children)}</b>"

    def visit_Emphasis(self, node: Emphasis) -> str:
        return f"<i>{self.inline(node.children)}</i>"

    def visit_Strikethrough(self, node: Strikethrough) -> str:
        return f"<s>{self.inline(node.children)}</s>"

    def link(self, url: str | None, text: str) -> str:
        href = self.escape_url(url or "")
        return f'<a href="{href}">{text}</a>' if href else text

    def visit_Link(self, node: Link) -> str:
        return self.link(node.url, self.inline(node.children))

    def visit_Image(self, node: Image) -> str:
        alt = _esc(node.alt or "image")
        return self.link(node.src, alt) if is_http(node.src) else alt

    def visit_LineBreak(self, node) -> str:
        return "\n"

    def visit_Math(self, node) -> str:
        return f"<code>{_esc(super().visit_Math(node))}</code>"

    def visit_MathBlock(self, node) -> list[str]:
        return [f"<pre>{_esc(node.tex)}</pre>"]

    def visit_FootnoteRef(self, node) -> str:
        return f"[{node.number}]"

    def footnote(self, note) -> str:
        return f"[{note.number}] {self.inline(note.children)}"

    def table_cell(self, cell) -> str:
        return self.inline(cell).replace("\n", " ").strip()

    def visit_Table(self, node) -> list[str]:
        """Telegram has no tables: the rows as lines, cells separated by ` | `."""
        return [" | ".join(self.table_cell(c) for c in row) for row in (node.head, *node.rows)]

    def visit_CodeBlock(self, node: CodeBlock) -> list[str]:
        return f"<pre>{_esc(node.text.rstrip(chr(10)))}</pre>".split("\n")

    def visit_Quote(self, node: Quote) -> list[str]:
        return ["<blockquote>" + "\n".join(self.blocks(node.blocks)) + "</blockquote>"]

    def item_head(self, item: Item) -> str:
        title = self.item_title(item)
        head = self.link(item.url, title) if item.url is not None else title
        return self.item_prefixes(item) + head + self.inline(item.extra)


class TelegramChannel(TemplateChannel):
    name = "telegram"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/html"
    extension = ".html"
    transport = "publisher.channels.telegram.transport:TelegramTransport"
    # `.txt` templates: the writer has escaped every value already (only .html/.htm/.xml templates
    # are autoescaped, see channels/base.py)
    template = "telegram/issue.txt"
    footer_template = "telegram/footer.txt"
    writer_class = TelegramWriter
    past_limit = 0
    config = '''
[telegram]
chat_id = ""
api_base = "https://api.telegram.org"
token_env = "PUBLISHER_TELEGRAM_TOKEN"
link_previews = false
'''
    check = staticmethod(check)

    def render(self, issue: Issue) -> Rendition:
        page = super().render(issue)
        lic = license_of(issue, self.settings)
        archive = self.settings["newsletter"]["archive_url"].format(date=issue.slug)
        footer = self.ctx.env.get_template(self.footer_template).render(
            license_name=_esc(lic.name), license_url=html.escape(safe_url(lic.url)),
            archive_url=html.escape(safe_url(archive)))
        messages = split_messages(page.body, footer, MESSAGE_MAX_CHARS)
        # local images are not posted (no upload): the rendition hands none to the transport
        return dataclasses.replace(page, body="\n\n".join(messages) + "\n", messages=tuple(messages), images=(),
                                   metadata={**page.metadata, "messages": len(messages)})
