"""Telegram's limit: `sendMessage` text is 1-4,096 characters after entities parsing
(core.telegram.org/bots/api#sendmessage), counted as split.visible_length counts them."""

from __future__ import annotations

from publisher.channels.base import Rendition
from publisher.channels.telegram.split import visible_length

from publisher.limits import Violation

MESSAGE_MAX_CHARS = 4096


def check(r: Rendition) -> list[Violation]:
    out = []
    for n, message in enumerate(r.messages or (r.body,), 1):
        size = visible_length(message)
        if size > MESSAGE_MAX_CHARS:
            out.append(Violation("telegram", "message", f"telegram message {n} is {size:,} characters; the limit "
                                 f"is {MESSAGE_MAX_CHARS:,} (at most)", size, MESSAGE_MAX_CHARS))
        elif not message.strip():
            out.append(Violation("telegram", "message", f"telegram message {n} is empty", 0, "1 character"))
    return out
