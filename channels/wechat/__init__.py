"""WeChat Official Account article: HTML for the editor / draft API.

Every style is inline (the editor keeps no `<style>`, class or id), containers are `<section>`,
external links become numbered references with a 参考资料 list (they do not work inside WeChat;
readers go to the archive page through 阅读原文), lists nest at most two levels, code keeps its
newlines and indentation as `<br>`/`&nbsp;`. The body must stay under 20,000 characters.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup, escape
from publisher.channels.base import LocalImage, Rendition, license_of
from publisher.channels.html_writer import (
    HtmlChannel,
    HtmlWriter,
    References,
    cut,
    format_setting,
    lead_text,
    qr_image,
)
from publisher.channels.wechat import limits, preview

from publisher.errors import ConfigError
from publisher.model import Issue

TEMPLATE = "wechat/article.html"
THEMES = "wechat/themes/"  # a theme is THEMES + "<name>.css" ([wechat] theme)
# the numbers live in limits.py beside this module, shared with `publisher check` and the transport
DIGEST_LIMIT = limits.DIGEST_MAX_CHARS
TITLE_LIMIT = limits.TITLE_MAX_CHARS
CONTENT_LIMIT = limits.CONTENT_MAX_CHARS + 1  # content must be under this many characters
LINK_NOTE = "注：个别链接打不开，请点击文末【阅读原文】跳转"
WECHAT_HOSTS = ("mp.weixin.qq.com",)
# images served by WeChat itself survive in `content`; other external images are filtered out
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn")

_RULE = re.compile(r"([.a-z0-9][-.a-z0-9\s,]*?)\s*\{([^}]*)\}", re.I)
# what a theme may style: the tags the writer and article.html write, and the named parts
THEME_TAGS = frozenset(["ul", "ol", "li", "code", "pre", "blockquote", "sup", "a", "img", "table", "th", "td", "h1", "h2", "p", "strong", "em", "del"])
THEME_PARTS = frozenset(
    [".article", ".tagline", ".lead", ".intro", ".briefs", ".note", ".item", ".fields", ".refs-title", ".refs", ".past", ".qr", ".qr-img", ".footer", ".license", ".figure", ".caption", ".formula", ".formula-block", ".table-wrap"])


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def is_wechat_link(url: str) -> bool:
    host = _host(url)
    return any(host == h or host.endswith("." + h) for h in WECHAT_HOSTS)


def parse_styles(text: str, name: str) -> dict[str, str]:
    """`selector[, selector] { declarations }` rules (comments allowed) → {selector: "a:b;c:d"};
    a selector is a tag or a `.part` of THEME_TAGS / THEME_PARTS; a later rule adds to an earlier one."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    styles: dict[str, str] = {}
    for selectors, decls in _RULE.findall(text):
        body = ";".join(re.sub(r"\s*:\s*", ":", d.strip(), count=1) for d in decls.split(";") if d.strip())
        if re.search(r"[<>\"]|expression\(|url\(", body, re.I):
            raise ConfigError(f"theme {name}: {selectors.strip()} {{ {body[:60]} }}: no quotes, angle brackets, "
                              "url() or expression() in an inline style (font names need no quotes)")
        for sel in (x.strip().lower() for x in selectors.split(",")):
            if sel not in THEME_TAGS and sel not in THEME_PARTS:
                raise ConfigError(f"theme {name}: unknown selector {sel!r}; a theme styles the tags "
                                  f"{', '.join(sorted(THEME_TAGS))} and the parts {', '.join(sorted(THEME_PARTS))}")
            styles[sel] = f"{styles[sel]};{body}" if styles.get(sel) and body else (body or styles.get(sel, ""))
    leftover = _RULE.sub("", text).strip()
    if leftover:
        raise ConfigError(f"theme {name}: cannot read {leftover[:40]!r}; write rules as `selector {{ a:b;c:d }}`")
    return styles


@functools.lru_cache(maxsize=32)
def _parsed(text: str, name: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_styles(text, name).items())


def theme_names(env: jinja2.Environment) -> list[str]:
    """The themes found (the user's template folder and the built-in ones)."""
    try:
        names = env.list_templates(filter_func=lambda n: n.startswith(THEMES) and n.endswith(".css"))
    except TypeError:  # a loader that cannot list
        return []
    return sorted({n[len(THEMES):-4] for n in names if "/" not in n[len(THEMES):]})


def load_theme(env: jinja2.Environment, theme: str) -> dict[str, str]:
    """The theme's rules ([wechat] theme), read once per file content."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", theme or ""):
        raise ConfigError(f"[wechat] theme = {theme!r}: a theme is a name (letters, digits, - and _), "
                          f"one of {', '.join(theme_names(env))}")
    try:
        source, filename, _ = env.loader.get_source(env, f"{THEMES}{theme}.css")
    except jinja2.TemplateNotFound:
        raise ConfigError(f"[wechat] theme = {theme!r}: no file {THEMES}{theme}.css in [paths] templates nor "
                          f"built in; themes: {', '.join(theme_names(env))}") from None
    return dict(_parsed(source, filename or theme))


def style_attr(styles: dict[str, str]):
    """`st(part)` for article.html: ` style="…"` of that tag or `.part` of the theme, or nothing."""
    def st(part: str) -> Markup:
        style = styles.get(part, "")
        return Markup(f' style="{escape(style)}"') if style else Markup("")
    return st


class WeChatChannel(HtmlChannel):
    name = "wechat"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/html"
    extension = ".html"
    transport = "publisher.channels.wechat.transport:WeChatTransport"
    check = staticmethod(limits.check)
    preview = staticmethod(preview.panel)

    def theme(self) -> dict[str, str]:
        return load_theme(self.ctx.env, self.settings["wechat"]["theme"])

    def formula_color(self) -> str:
        m = re.search(r"(?:^|;)color:(#[0-9a-f]{3,6})\b", self.theme().get(".article", ""), re.I)
        return m.group(1) if m else "#333333"

    def writer(self, image_src, formula, issue) -> HtmlWriter:
        return HtmlWriter(
            styles=self.theme(),
            references=References(),
            keep_link=is_wechat_link,
            max_list_depth=2,
            preserve_code=True,
            image_src=image_src,
            highlight=self.settings["code"]["highlight_style"],
            formula=formula,
            footnotes=issue.footnotes,
        )

    def remote_image(self, src: str) -> str | None:
        # http(s) images of other sites stay; the transport downloads and uploads them
        return src if urlsplit(src).scheme.lower() in ("http", "https") else None

    def page(self, issue: Issue, writer: HtmlWriter, content: dict, images: list[LocalImage]) -> Rendition:
        news = self.settings["newsletter"]
        refs = writer.references
        assert refs is not None
        qr = qr_image(self.settings)  # a file to upload, or the public URL of the real QR image
        if not isinstance(qr, str):
            images.append(qr)

        body = self.ctx.env.get_template(TEMPLATE).render(
            issue=issue,
            st=style_attr(writer.styles),
            **content,
            link_note=LINK_NOTE,
            references=refs.entries(),
            qr=qr if isinstance(qr, str) else qr.ref,
            license=license_of(issue, self.settings),
        )
        body = re.sub(r"\n+", "\n", body).strip() + "\n"

        title = format_setting(
            self.settings,
            "wechat",
            "title_template",
            name=news["name"],
            date=issue.slug,
            title=issue.title,
            topics="/".join(issue.topics),
            number="" if issue.number is None else issue.number,
        )
        # The editor's own digest is never cut: one over the limit is reported by `publisher check`
        # (and refused by the transport) with its length; the lead, when it stands in, is cut.
        digest = " ".join(issue.digest.split()) if issue.digest else cut(lead_text(issue), DIGEST_LIMIT)
        metadata = {
            "title": title,
            "title_length": len(title),
            "title_limit": TITLE_LIMIT,
            "digest": digest,
            "author": issue.author or news["author"],
            "content_source_url": format_setting(
                self.settings, *(("wechat", "content_source_url") if self.settings["wechat"]["content_source_url"]
                                 else ("newsletter", "archive_url")), date=issue.slug),
            "content_length": len(body),
            "content_limit": CONTENT_LIMIT,
            "references": len(refs),
        }
        if issue.cover:
            metadata["cover"] = issue.cover
        return Rendition(
            channel=self.name,
            issue=issue.slug,
            body=body,
            media_type=self.media_type,
            filename=self.filename(issue),
            metadata=metadata,
            images=tuple(images),
        )
