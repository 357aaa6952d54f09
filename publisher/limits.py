"""Platform limits, the shared machinery: a `Violation` and the words every limit uses.

The limits themselves belong to their channels (`channels/<name>/limits.py`, declared as
`Channel.check`, run by channels.base.check_rendition): `publisher check` reports them, the channel's transport enforces the same numbers
with the same words, and the preview shows them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    channel: str
    what: str  # short name: "title", "digest", "content", "html", "strikethrough", …
    message: str
    value: int | str | None = None  # the measured value
    limit: int | str | None = None  # the largest value allowed (or the rule)


def over(channel: str, what: str, label: str, value: int, limit: int, unit: str) -> Violation:
    """`value` is more than the `limit` allows (at most `limit`)."""
    return Violation(
        channel,
        what,
        f"{channel} {label} is {value:,} {unit}; the limit is {limit:,} (at most)",
        value,
        limit,
    )


__all__ = ["Violation", "over"]
