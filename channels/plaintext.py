"""Plain UTF-8 text: links dropped from running text (field lines keep their URLs)."""

from __future__ import annotations

from .markdown_writer import PlainTextWriter, TemplateChannel


class PlainTextChannel(TemplateChannel):
    name = "plaintext"
    media_type = "text/plain"
    extension = ".txt"
    transport = "publisher.transports.outbox:OutboxTransport"
    template = "plaintext/issue.txt"
    writer_class = PlainTextWriter
