"""Plain UTF-8 text: links dropped from running text (field lines keep their URLs)."""

from __future__ import annotations

from pathlib import Path

from publisher.channels.markdown_writer import PlainTextWriter, TemplateChannel


class PlainTextChannel(TemplateChannel):
    name = "plaintext"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/plain"
    extension = ".txt"
    transport = "publisher.transports.outbox:OutboxTransport"
    template = "plaintext/issue.txt"
    writer_class = PlainTextWriter
