"""Platform limits, the shared machinery: a `Violation` and the words every limit uses.

The limits themselves belong to their channels (`channels/<name>/limits.py`, declared as
`Channel.check`): `publisher check` reports them, the channel's transport enforces the same numbers
with the same words, and the preview shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publisher.channels.base import Rendition


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


def check_rendition(r: Rendition) -> list[Violation]:
    """Every limit of the rendition's channel, as the channel declares them (`Channel.check`)."""
    from publisher.channels.base import get_channel

    return get_channel(r.channel).check(r)


__all__ = ["Violation", "check_rendition", "over"]
