"""aijishu (极术社区) column: Markdown, title `brand | topics`, 来源/作者 lines, 【项目链接】 note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from publisher.channels.markdown_writer import MarkdownWriter, TemplateChannel, public_qr_url

from publisher.model import Issue


class AijishuChannel(TemplateChannel):
    name = "aijishu"
    template_folder = Path(__file__).parent / "templates"
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
