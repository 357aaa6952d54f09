"""A large archive made from the corpus: its issues repeated with shifted dates (tests, bench)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
SHIFT_DAYS = 1100  # longer than the corpus spans (2019-03 to 2021-07): repeats never collide


def make_archive(corpus: Path, issues: Path, count: int, *, work: Path) -> list[Path]:
    """Write `count` canonical issues into `issues`: the corpus imported (into `work`), then
    repeated, each repeat SHIFT_DAYS later than the one before; returns them, oldest first."""
    from publisher.legacy import import_file

    imported = work / "imported"
    if not imported.is_dir():
        for path in sorted(corpus.glob("*.md")):
            import_file(path, imported)
    sources = sorted(imported.glob("*.md"))
    issues.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in range(count):
        source = sources[k % len(sources)]
        shift = dt.timedelta(days=SHIFT_DAYS * (k // len(sources)))
        written.append(shifted(source, issues, shift))
    return written


def shifted(source: Path, issues: Path, shift: dt.timedelta) -> Path:
    """A copy of the issue `source` in `issues`, its own date (file name, front matter, title)
    moved by `shift`."""
    old = source.stem
    new = (dt.date.fromisoformat(old) + shift).isoformat()
    target = issues / f"{new}.md"
    target.write_text(source.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return target
