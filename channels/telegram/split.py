"""A Telegram post cut into messages: at block boundaries, each under the Bot API's limit.

`sendMessage` takes 1-4,096 characters of text "after entities parsing": the visible text, tags
gone and entities decoded, counted in UTF-16 code units. Blocks (paragraphs, items, code, quotes,
separated by a blank line) are packed greedily in order; a block is never cut unless it alone is
over the limit, and then it is cut at line ends (inside a line only when one line is over it),
keeping its text and losing only its inline formatting. The footer always ends the last message.
"""

from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[^>]*>")
_OPENERS = ("pre", "blockquote")
GAP = "\n\n"


def visible_length(text: str) -> int:
    """The length Telegram counts: the text without its tags, entities decoded, in UTF-16 units."""
    return len(html.unescape(_TAG.sub("", text)).encode("utf-16-le")) // 2


def _open(chunk: str) -> bool:
    """Whether `chunk` leaves a <pre> or <blockquote> open (a blank line inside it is no boundary)."""
    return any(chunk.count(f"<{t}") > chunk.count(f"</{t}>") for t in _OPENERS)


def blocks(body: str) -> list[str]:
    """The body's blocks: pieces between blank lines, a <pre> or <blockquote> kept whole."""
    out: list[str] = []
    for piece in body.strip("\n").split(GAP):
        if out and _open(out[-1]):
            out[-1] += GAP + piece
        elif piece.strip():
            out.append(piece.strip("\n"))
    return out


def _units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _cut_line(line: str, limit: int) -> list[str]:
    pieces, current, size = [], "", 0
    for ch in line:
        if size + _units(ch) > limit:
            pieces.append(current)
            current, size = "", 0
        current += ch
        size += _units(ch)
    return [*pieces, current]


def _cut(block: str, limit: int) -> list[str]:
    """A block over the limit as several blocks: its visible text, cut at line ends."""
    pre = block.lstrip().startswith("<pre")
    room = limit - 1  # a newline joining two lines
    text = html.unescape(_TAG.sub("", block))
    pieces: list[str] = []
    current: list[str] = []
    for line in (p for raw in text.split("\n") for p in _cut_line(raw, room)):
        if current and visible_length(html.escape("\n".join([*current, line]), quote=False)) > room:
            pieces.append("\n".join(current))
            current = []
        current.append(line)
    pieces.append("\n".join(current))
    wrap = ("<pre>", "</pre>") if pre else ("", "")
    return [wrap[0] + html.escape(p, quote=False) + wrap[1] for p in pieces if p.strip()]


def split_messages(body: str, footer: str, limit: int) -> list[str]:
    """`body` and then `footer` as messages of at most `limit` visible characters each."""
    units = [piece for b in blocks(body) for piece in (_cut(b, limit) if visible_length(b) > limit else [b])]
    footer_units = [piece for b in blocks(footer) for piece in (_cut(b, limit) if visible_length(b) > limit else [b])]
    messages: list[str] = []
    for unit in [*units, *footer_units]:
        if messages and visible_length(messages[-1] + GAP + unit) <= limit:
            messages[-1] += GAP + unit
        else:
            messages.append(unit)
    return messages
