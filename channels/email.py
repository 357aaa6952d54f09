"""Email: an email-safe HTML newsletter (600 px table layout, CSS inlined) plus a text/plain part.

The HTML is rendered from templates/email/email.html with the shared HTML writer, then the
stylesheet templates/email/email.css is inlined with premailer once per issue (only @media rules
stay in a <style>). The text part is rendered from the model, not scraped from the HTML. The
unsubscribe link is the literal placeholder %%UNSUBSCRIBE_URL%%, which the email transport
replaces per recipient. The .eml part is the transport's business.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Iterable

from markupsafe import Markup
from publisher.channels.base import Channel, LocalImage, Rendition, license_of
from publisher.channels.html_writer import (
    HtmlWriter,
    UnknownNodeError,
    cut,
    format_setting,
    is_remote,
    lead_text,
    local_image,
)
from publisher.channels.markdown_writer import public_src, strike_text

from publisher import limits
from publisher.model import (
    Code,
    CodeBlock,
    Emphasis,
    Image,
    Issue,
    LineBreak,
    Link,
    ListBlock,
    ListItem,
    Paragraph,
    Quote,
    SoftBreak,
    Strikethrough,
    Strong,
    Text,
)

HTML_TEMPLATE = "email/email.html"
TEXT_TEMPLATE = "email/email.txt"
CSS_TEMPLATE = "email/email.css"
UNSUBSCRIBE_PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"
PREHEADER_LIMIT = 140
GMAIL_CLIP_BYTES = limits.EMAIL_HTML_MAX_BYTES + 1  # Gmail clips HTML of this size and more


class TextWriter:
    """Model → plain text for the text/plain part. Unknown node types raise."""

    def inline(self, node: object) -> str:
        if isinstance(node, Text):
            return node.text
        if isinstance(node, Code):
            return f"`{node.text}`"
        if isinstance(node, Strong | Emphasis):
            return self.inlines(node.children)
        if isinstance(node, Strikethrough):
            return strike_text(self.inlines(node.children))
        if isinstance(node, Link):
            text = self.inlines(node.children)
            if not node.url or text.strip() == node.url:
                return text or node.url
            return f"{text} ({node.url})" if text else node.url
        if isinstance(node, Image):
            return f"[{node.alt}] ({node.src})" if node.alt else f"({node.src})"
        if isinstance(node, LineBreak | SoftBreak):
            return "\n"
        raise UnknownNodeError(f"text writer: unknown inline node type {type(node).__name__}")

    def inlines(self, nodes: Iterable[object]) -> str:
        return "".join(self.inline(n) for n in nodes)

    def block(self, node: object) -> list[str]:
        if isinstance(node, Paragraph):
            return self.inlines(node.children).split("\n")
        if isinstance(node, ListBlock):
            lines: list[str] = []
            for i, item in enumerate(node.items):
                if not isinstance(item, ListItem):
                    raise UnknownNodeError(f"text writer: unknown list item type {type(item).__name__}")
                marker = f"{node.start + i}. " if node.ordered else "- "
                body = self.blocks(item.blocks) or [""]
                lines.append(marker + body[0])
                lines.extend(textwrap.indent(line, " " * len(marker)) for line in body[1:])
            return lines
        if isinstance(node, CodeBlock):
            return ["    " + line for line in node.text.split("\n")]
        if isinstance(node, Quote):
            return ["> " + line for line in self.blocks(node.blocks)]
        raise UnknownNodeError(f"text writer: unknown block node type {type(node).__name__}")

    def blocks(self, nodes: Iterable[object]) -> list[str]:
        return [line for node in nodes for line in self.block(node)]


class EmailChannel(Channel):
    name = "email"
    media_type = "text/html"
    extension = ".html"
    transport = "publisher.transports.email:EmailTransport"
    preview_panel = "mail"
    check = staticmethod(limits.check_email)

    @classmethod
    def archive_slice(cls, date, archive):
        return []  # it shows no list of past issues

    def render(self, issue: Issue) -> Rendition:
        news = self.settings["newsletter"]
        mail = self.settings["email"]
        images: list[LocalImage] = []
        seen: set[str] = set()

        def image_src(node: Image) -> str | None:
            if is_remote(node.src):
                return node.src
            if node.src not in seen:
                seen.add(node.src)
                images.append(local_image(node.src, self.ctx.base_dir, issue, "inline"))
            # mail clients need absolute image URLs: the image's public address in the archive
            return public_src(node.src, news["image_base_url"])

        w = HtmlWriter(image_src=image_src, highlight=self.settings["code"]["highlight_style"])
        t = TextWriter()
        sections, text_sections = [], []
        for section in issue.sections:
            items, text_items = [], []
            for item in section.items:
                lines = [f"{f.label}：{t.inlines(f.value)}" for f in item.fields]
                summary = w.blocks(item.labelled_summary("摘要："))
                lines.extend(t.blocks(item.labelled_summary("摘要：")))
                items.append(
                    {
                        "title": w.item_title(item),
                        "fields": [(f.label, w.field(f)) for f in item.fields],
                        "summary": Markup(summary),
                    }
                )
                text_items.append({"title": self._text_title(item, t), "lines": lines})
            sections.append({"name": section.name, "note": Markup(w.inlines(section.note)), "items": items,
                             "closing": Markup(w.blocks(section.closing))})
            text_sections.append({"name": section.name, "note": t.inlines(section.note), "items": text_items,
                                  "closing": "\n".join(t.blocks(section.closing))})

        lead_html = ""
        if issue.lead:
            first = issue.lead[0]
            lead_html = w.block(Paragraph((Text("导读："), *first.children), first.line)) + w.blocks(issue.lead[1:])
        if issue.cover and not is_remote(issue.cover):
            images.insert(0, local_image(issue.cover, self.ctx.base_dir, issue, "cover"))

        values = {"title": issue.title, "name": news["name"], "date": issue.slug,
                  "topics": "/".join(issue.topics), "number": "" if issue.number is None else issue.number}
        subject = format_setting(self.settings, "email", "subject_template", **values)
        view_url = format_setting(self.settings, "email", "view_url", date=issue.slug)
        preheader = cut(issue.digest or lead_text(issue) or issue.tagline or issue.title, PREHEADER_LIMIT)
        common = {
            "issue": issue,
            "subject": subject,
            "preheader": preheader,
            "view_url": view_url,
            "archive_url": news["project_url"],
            "unsubscribe": UNSUBSCRIBE_PLACEHOLDER,
            "postal_address": mail["postal_address"],
            "qr_alt": f"微信公众号 {news['account']} 二维码",
            "license": license_of(issue, self.settings),
        }
        env = self.ctx.env
        html = env.get_template(HTML_TEMPLATE).render(
            lead=Markup(lead_html),
            briefs=[w.brief(b) for b in issue.warmup],
            notes=Markup(w.blocks(issue.notes)),
            sections=sections,
            **common,
        )
        css, css_name, _ = env.loader.get_source(env, CSS_TEMPLATE)
        html = inline_css(html, css)
        text = env.get_template(TEXT_TEMPLATE).render(
            lead="\n".join(t.inlines(p.children) for p in issue.lead),  # links keep their URLs
            briefs=[t.inlines(b.content) for b in issue.warmup],
            notes="\n".join("\n".join(t.block(p)) for p in issue.notes),
            sections=text_sections,
            **common,
        )
        text = re.sub(r"\n{3,}", "\n\n", text)
        metadata = {
            "subject": subject,
            "preheader": preheader,
            "view_url": view_url,
            "unsubscribe_placeholder": UNSUBSCRIBE_PLACEHOLDER,
            "html_bytes": len(html.encode("utf-8")),
            "html_limit_bytes": GMAIL_CLIP_BYTES,
        }
        return Rendition(
            channel=self.name,
            issue=issue.slug,
            body=html,
            media_type=self.media_type,
            filename=self.filename(issue),
            metadata=metadata,
            images=tuple(images),
            parts={f"{issue.slug}.txt": text},
        )

    @staticmethod
    def _text_title(item, t: TextWriter) -> str:
        prefix = "".join(f"[{p}] " for p in (item.arxiv, item.venue) if p)
        line = prefix + item.display_title
        if item.url:
            line += f" ({item.url})"
        if item.extra:
            line += " " + t.inlines(item.extra)
        return line


def media_blocks(css: str) -> list[str]:
    """The bodies of the @media rules of a stylesheet (comments ignored)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    blocks = []
    for m in re.finditer(r"@media[^{]*\{", css):
        depth, i = 1, m.end()
        while i < len(css) and depth:
            depth += {"{": 1, "}": -1}.get(css[i], 0)
            i += 1
        blocks.append(css[m.end():i - 1])
    return blocks


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html` with premailer (no network); @media rules stay in a <style>."""
    import cssutils
    from premailer import Premailer

    cssutils.log.setLevel(logging.CRITICAL)
    inlined = Premailer(
        html,
        css_text=css,
        keep_style_tags=False,
        # classes stay: the @media rules left in <style> (e.g. table.main at 100% on phones)
        # can only reach elements by them
        remove_classes=False,
        strip_important=False,
        disable_validation=True,
        allow_network=False,
        cssutils_logging_level=logging.CRITICAL,
        disable_leftover_css=False,
        cache_css_parsing=False,
    ).transform()
    # Classes are only kept where an @media rule (the one CSS left in <style>) needs them.
    hooks = set(re.findall(r"\.([A-Za-z_][\w-]*)", " ".join(media_blocks(css))))

    def keep_hooks(m: re.Match) -> str:
        kept = [c for c in m.group(1).split() if c in hooks]
        return f' class="{" ".join(kept)}"' if kept else ""

    return re.sub(r'\sclass="([^"]*)"', keep_hooks, inlined)
