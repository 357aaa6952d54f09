"""Email: an email-safe HTML newsletter (600 px table layout, CSS inlined) plus a text/plain part.

The HTML is rendered from templates/email.html by the pipeline the HTML channels share
(html_writer.HtmlChannel), then the stylesheet templates/email.css is inlined with premailer
once per issue (only @media rules stay in a <style>). The text part is rendered from the model by
the plain-text writer (markdown_writer.MailTextWriter), not scraped from the HTML. The
unsubscribe link is the literal placeholder %%UNSUBSCRIBE_URL%%, which the email transport
replaces per recipient. The .eml part is the transport's business.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

from publisher.channels.base import LocalImage, Rendition, license_of
from publisher.channels.email import limits, preview
from publisher.channels.html_writer import HtmlChannel, HtmlWriter, cut, format_setting, lead_text
from publisher.channels.markdown_writer import MailTextWriter, public_src

from publisher.addresses import valid_address
from publisher.clicks import rewrite_for
from publisher.model import Issue
from publisher.settings import valid_unsubscribe_url
from publisher.tokens import UNSUBSCRIBE_PLACEHOLDER  # the transports replace it per reader

HTML_TEMPLATE = "email/email.html"
TEXT_TEMPLATE = "email/email.txt"
CSS_TEMPLATE = "email/email.css"
PREHEADER_LIMIT = 140
LIST_ID_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\.[A-Za-z0-9.-]+")  # List-Id (RFC 2919)
GMAIL_CLIP_BYTES = limits.HTML_MAX_BYTES + 1  # Gmail clips HTML of this size and more


class EmailChannel(HtmlChannel):
    name = "email"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/html"
    extension = ".html"
    transport = "publisher.transports.email:EmailTransport"
    mails_subscribers = True  # its table ([email]) holds the subscriber list, sender and unsubscribe URL
    check = staticmethod(limits.check)
    config = """
[email]
from_name = ""                   # empty = [newsletter] name
from_address = "newsletter@example.org"
reply_to = ""
list_id = "newsletter.example.org"
postal_address = ""
view_url = ""                    # the "view in browser" link, {date}; empty = no link
unsubscribe_url = "https://example.org/unsubscribe?token={token}"
unsubscribe_mailto = ""
subscribers_db = "subscribers.db"
secret_env = "PUBLISHER_UNSUBSCRIBE_SECRET"
subject_template = "{title}"
# A message interrupted between the final DATA dot and the ledger commit (crash, dropped
# connection): "resend" (nobody skipped; ≤ [smtp] connections duplicates, same Message-ID) or
# "skip" (never a duplicate; those few may get nothing). See docs/email.md.
ambiguous = "resend"
# How campaigns leave: "smtp" ([smtp]) or an email service provider's HTTP API: "ses", "postmark",
# "mailgun" (their tables below; docs/email.md "Providers"). Bounces and complaints then arrive
# at `publisher serve` as webhooks (/hooks/ses, /hooks/postmark, /hooks/mailgun).
transport = "smtp"
"""
    path_keys = ("subscribers_db",)
    # values that reach mail headers (no CR/LF: header injection) and the syntax of what they are
    header_keys = {
        "from_address": (valid_address, "an address like newsletter@example.org"),
        "reply_to": (valid_address, "an address like editor@example.org"),
        "list_id": (LIST_ID_RE.fullmatch, "a list id like embedded-ai-report.example.org (RFC 2919)"),
        "unsubscribe_mailto": (valid_address, "an address like unsubscribe@example.org"),
        "from_name": (None, "a name on one line"),
        "subject_template": (None, "a subject on one line"),
        "unsubscribe_url": (valid_unsubscribe_url, "an http(s) URL with {token}"),
    }
    identity_keys = ("from_address", "list_id", "view_url", "unsubscribe_url", "unsubscribe_mailto")

    @classmethod
    def preview(cls, rendition, view):
        return preview.panel(rendition, view, UNSUBSCRIBE_PLACEHOLDER)

    def local_image_src(self, src: str, issue: Issue) -> str:
        # mail clients need absolute image URLs: the image's public address (limits.check refuses
        # one left relative)
        return public_src(src, self.settings["newsletter"]["image_base_url"], issue.date.isoformat())

    def page(self, issue: Issue, writer: HtmlWriter, content: dict, images: list[LocalImage]) -> Rendition:
        common = self._common(issue)
        env = self.ctx.env
        html = env.get_template(HTML_TEMPLATE).render(**content, **common)
        css, css_name, _ = env.loader.get_source(env, CSS_TEMPLATE)
        html = inline_css(html, css)
        text = self._text(issue, common)
        links = []
        if self.settings["analytics"]["clicks"]:  # signed redirects, counted by `publisher serve`
            html, text, links = rewrite_for(self.settings, issue.slug, html, text)
        metadata = {
            "subject": common["subject"],
            "preheader": common["preheader"],
            "view_url": common["view_url"],
            "unsubscribe_placeholder": UNSUBSCRIBE_PLACEHOLDER,
            "html_bytes": len(html.encode("utf-8")),
            "html_limit_bytes": GMAIL_CLIP_BYTES,
        }
        if links:  # (number, url, label): recorded on push, before any reader can click
            metadata["click_links"] = links
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

    def _common(self, issue: Issue) -> dict:
        """What the HTML and the text part both show: subject, preheader, links, footer."""
        news = self.settings["newsletter"]
        values = {"title": issue.title, "name": news["name"], "date": issue.slug,
                  "topics": "/".join(issue.topics), "number": "" if issue.number is None else issue.number}
        return {
            "issue": issue,
            "subject": format_setting(self.settings, "email", "subject_template", **values),
            "preheader": cut(issue.digest or lead_text(issue) or issue.tagline or issue.title, PREHEADER_LIMIT),
            "view_url": format_setting(self.settings, "email", "view_url", date=issue.slug),
            "archive_url": news["project_url"],
            "unsubscribe": UNSUBSCRIBE_PLACEHOLDER,
            "postal_address": self.settings["email"]["postal_address"],
            "qr_alt": f"微信公众号 {news['account']} 二维码",
            "license": license_of(issue, self.settings),
        }

    def _text(self, issue: Issue, common: dict) -> str:
        """The plain-text part (links keep their URLs)."""
        t = MailTextWriter()
        text_sections = []
        for section in issue.sections:
            text_items = []
            for item in section.items:
                lines = [f"{f.label}：{t.inline(f.value)}" for f in item.fields]
                lines.extend(t.blocks(item.labelled_summary("摘要：")))
                text_items.append({"title": self._text_title(item, t), "lines": lines})
            text_sections.append({"name": section.name, "note": t.inline(section.note), "items": text_items,
                                  "closing": "\n".join(t.blocks(section.closing))})
        text = self.ctx.env.get_template(TEXT_TEMPLATE).render(
            lead="\n".join(t.inline(p.children) for p in issue.lead),
            briefs=[t.inline(b.content) for b in issue.warmup],
            notes="\n".join("\n".join(t.dispatch(p)) for p in issue.notes),
            sections=text_sections,
            footnotes=t.footnote_lines(issue.footnotes),
            **common,
        )
        return re.sub(r"\n{3,}", "\n\n", text)

    @staticmethod
    def _text_title(item, t: MailTextWriter) -> str:
        prefix = "".join(f"[{p}] " for p in (item.arxiv, item.venue) if p)
        line = prefix + item.display_title
        if item.url:
            line += f" ({item.url})"
        if item.extra:
            line += " " + t.inline(item.extra)
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


_RULES: dict[tuple[str, int], tuple[list, list]] = {}


@functools.cache
def _premailer_class():
    """Premailer that turns a stylesheet into its rules once per process (premailer's own
    cache_css_parsing keeps only the parsed sheet; turning it into rules again took most of
    the email render). The options are fixed by inline_css, so the stylesheet text is the key."""
    from premailer import Premailer

    class CachedRules(Premailer):
        def _parse_style_rules(self, css_body, ruleset_index):
            key = (css_body, ruleset_index)
            if key not in _RULES:
                if len(_RULES) > 64:
                    _RULES.clear()
                _RULES[key] = super()._parse_style_rules(css_body, ruleset_index)
            rules, leftover = _RULES[key]
            return list(rules), list(leftover)

    return CachedRules


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html` with premailer (no network); @media rules stay in a <style>."""
    import cssutils

    cssutils.log.setLevel(logging.CRITICAL)
    inlined = _premailer_class()(
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
        cache_css_parsing=True,  # the stylesheet is parsed once per process, not once per issue
    ).transform()
    # Classes are only kept where an @media rule (the one CSS left in <style>) needs them.
    hooks = set(re.findall(r"\.([A-Za-z_][\w-]*)", " ".join(media_blocks(css))))

    def keep_hooks(m: re.Match) -> str:
        kept = [c for c in m.group(1).split() if c in hooks]
        return f' class="{" ".join(kept)}"' if kept else ""

    return re.sub(r'\sclass="([^"]*)"', keep_hooks, inlined)
