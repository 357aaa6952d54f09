"""Zhihu column: Markdown for the editor's 导入文档 (public image URLs only, headings ≤ 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from publisher.channels.markdown_writer import MarkdownWriter, TemplateChannel, public_qr_url
from publisher.channels.zhihu import limits

from publisher.model import Issue


class ZhihuChannel(TemplateChannel):
    name = "zhihu"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/markdown"
    extension = ".md"
    transport = "publisher.transports.outbox:OutboxTransport"
    check = staticmethod(limits.check)
    template = "zhihu/issue.md"
    writer_class = MarkdownWriter
    public_images_only = True

    def extra_context(self, issue: Issue, writer: MarkdownWriter) -> dict[str, Any]:
        qr = public_qr_url(self)
        return {"qr_url": qr, "qr_images": [qr] if qr else []}
