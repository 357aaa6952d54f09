"""The 往期回顾 calendar: the archive as year blocks, shared by the archive and the web site."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from publisher.channels.base import PastIssue

CALENDAR_COLUMNS = 4


@dataclass(frozen=True)
class CalendarCell:
    """One cell of the 往期回顾 calendar: an issue (label + link) or padding (link None)."""

    label: str
    link: str | None = None


@dataclass(frozen=True)
class CalendarYear:
    year: int
    rows: tuple[tuple[CalendarCell, ...], ...]

    @property
    def digits(self) -> tuple[str, ...]:
        """The year as the header row writes it, one digit a cell: 2, 0, 2, 0."""
        return tuple(str(self.year))


def calendar(archive: Iterable[PastIssue], link_pattern: str, columns: int = CALENDAR_COLUMNS) -> list[CalendarYear]:
    """The archive as year blocks of `columns` cells a row, newest first.

    The newest year is padded with '-' at its start, so the oldest issue of the year closes its
    last row and each new issue fills the first row from the right; older (complete) years end
    with empty cells.
    """
    entries = sorted(archive, key=lambda p: p.date, reverse=True)
    years: list[CalendarYear] = []
    for k, (year, group) in enumerate(groupby(entries, key=lambda p: p.date.year)):
        cells = [CalendarCell(p.slug, link_pattern.format(date=p.slug)) for p in group]
        missing = -len(cells) % columns
        if k == 0:
            cells = [CalendarCell("-")] * missing + cells
        else:
            cells = cells + [CalendarCell("")] * missing
        rows = tuple(tuple(cells[i : i + columns]) for i in range(0, len(cells), columns))
        years.append(CalendarYear(year, rows))
    return years
