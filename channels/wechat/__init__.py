"""WeChat Official Account article: HTML for the editor / draft API.

Every style is inline (the editor keeps no `<style>`, class or id), containers are `<section>`,
external links become numbered references with a 参考资料 list (they do not work inside WeChat;
readers go to the archive page through 阅读原文), lists nest at most two levels, code keeps its
newlines and indentation as `<br>`/`&nbsp;`. The body must stay under 20,000 characters.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

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
from publisher.channels.wechat.themes import (  # noqa: F401 (the theme API, importable from the channel)
    THEME_PARTS,
    THEME_TAGS,
    THEMES,
    load_theme,
    parse_styles,
    theme_names,
)

from publisher.model import Issue
from publisher.refs import is_http

TEMPLATE = "wechat/article.html"
# the numbers live in limits.py beside this module, shared with `publisher check` and the transport
DIGEST_LIMIT = limits.DIGEST_MAX_CHARS
TITLE_LIMIT = limits.TITLE_MAX_CHARS
CONTENT_LIMIT = limits.CONTENT_MAX_CHARS + 1  # content must be under this many characters
LINK_NOTE = "注：个别链接打不开，请点击文末【阅读原文】跳转"
WECHAT_HOSTS = ("mp.weixin.qq.com",)
# images served by WeChat itself survive in `content`; other external images are filtered out
WECHAT_IMAGE_HOSTS = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn")




def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def is_wechat_link(url: str) -> bool:
    host = _host(url)
    return any(host == h or host.endswith("." + h) for h in WECHAT_HOSTS)


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
    config = """
[wechat]
app_id = ""
app_secret_env = "PUBLISHER_WECHAT_SECRET"
api_base = "https://api.weixin.qq.com"
token_mode = "stable_token"             # or "token" (cgi-bin/token)
title_template = "{name}({date})"
theme = "default"                       # wechat/themes/<name>.css: default, jade, ink, or your own in [paths] templates
need_open_comment = 0
only_fans_can_comment = 0
publish_poll_seconds = 300              # give up polling freepublish/get after this long
publish_settle_hours = 24.0             # a submit whose answer was lost is submitted again only if its
                                        # draft stays in the box, unpublished, this long
default_cover = ""                      # cover (thumb) image when an issue has none; empty = the QR code
content_source_url = ""                 # 阅读原文 link ({date}); empty = [newsletter] archive_url
# Remote images (<img> of other sites) are downloaded, converted and uploaded on push:
remote_image_max_bytes = 20971520       # download cap per image (20 MB)
remote_image_timeout = 20.0             # seconds per image, connection and transfer together
"""
    path_keys = ("default_cover",)

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
        return src if is_http(src) else None

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
