"""Zhihu column: Markdown for the editor's 导入文档 (public image URLs only, headings ≤ 4)."""

from __future__ import annotations

import re
from typing import Any

from publisher import limits
from publisher.errors import ConfigError
from publisher.model import Issue

from .markdown_writer import MarkdownWriter, TemplateChannel


def public_qr_url(channel: TemplateChannel) -> str:
    """[newsletter] qr_public_url, checked: the column editors import images from the web only
    (empty: the footer has no QR code)."""
    url = channel.settings["newsletter"]["qr_public_url"]
    if url and not re.match(r"^https?://\S+$", url):
        raise ConfigError(
            f"[newsletter] qr_public_url must be a public http(s) URL without spaces for the {channel.name} "
            f"channel, got {url!r}: set it in {channel.settings.where()}"
        )
    return url


class ZhihuChannel(TemplateChannel):
    name = "zhihu"
    media_type = "text/markdown"
    extension = ".md"
    transport = "publisher.transports.outbox:OutboxTransport"
    check = staticmethod(limits.check_zhihu)
    template = "zhihu/issue.md"
    writer_class = MarkdownWriter
    public_images_only = True

    def extra_context(self, issue: Issue, writer: MarkdownWriter) -> dict[str, Any]:
        qr = public_qr_url(self)
        return {"qr_url": qr, "qr_images": [qr] if qr else []}
