"""aijishu (极术社区) column: Markdown, title `brand | topics`, 来源/作者 lines, 【项目链接】 note."""

from __future__ import annotations

from typing import Any

from publisher.model import Issue

from .markdown_writer import MarkdownWriter, TemplateChannel
from .zhihu import public_qr_url


class AijishuChannel(TemplateChannel):
    name = "aijishu"
    media_type = "text/markdown"
    extension = ".md"
    transport = "publisher.transports.outbox:OutboxTransport"
    template = "aijishu/issue.md"
    writer_class = MarkdownWriter

    def title(self, issue: Issue) -> str:
        brand = issue.brand or self.settings["newsletter"]["name"]
        if issue.topics:
            return f"{brand} | {'/'.join(issue.topics)}"
        return issue.title

    def extra_context(self, issue: Issue, writer: MarkdownWriter) -> dict[str, Any]:
        qr = public_qr_url(self)
        return {"qr_url": qr, "qr_images": [qr] if qr else [], "source": self.settings["newsletter"]["source"]}
