"""The one-way flow every command shares: source → Issue → Channel.render → Rendition → files."""

from __future__ import annotations

import os
import re
from pathlib import Path

from publisher.channels.base import Channel, PastIssue, RenderContext, Rendition, get_channel

from .errors import Diagnostic, SourceError
from .model import Issue
from .reader import read_issue
from .settings import ISSUE_FILE_RE, Settings


def issue_files(settings: Settings) -> list[Path]:
    """Every issue source in the issues folder, newest first."""
    return settings.issue_files()


def newest_issue(settings: Settings) -> Path:
    files = issue_files(settings)
    if not files:
        folder = settings.path("paths", "issues")
        raise SourceError(
            f"no issue files (YYYY-MM-DD.md) in {folder}; name an issue file, or set [paths] issues "
            f"in {settings.where()}"
        )
    return files[0]


def archive(settings: Settings, extra: Issue | None = None) -> tuple[PastIssue, ...]:
    """The archive as channels see it: every issue in the issues folder, newest first."""
    import datetime as dt

    brand = settings["newsletter"]["name"]
    entries: dict[dt.date, PastIssue] = {}
    for path in issue_files(settings):
        date = dt.date.fromisoformat(ISSUE_FILE_RE.match(path.name).group(1))
        entries[date] = PastIssue(date, f"{brand} ({date.isoformat()})")
    if extra is not None:
        entries.setdefault(extra.date, PastIssue(extra.date, f"{brand} ({extra.date.isoformat()})"))
    return tuple(sorted(entries.values(), key=lambda p: p.date, reverse=True))


def load(path: str | Path) -> tuple[Issue, list[Diagnostic]]:
    result = read_issue(path)
    return result.issue, result.warnings


def context_for(settings: Settings, issue: Issue, *, entries: tuple[PastIssue, ...] | None = None,
                env=None) -> RenderContext:
    """The context `issue` renders in; `entries` (the archive) and `env` (a template environment)
    let a build compute them once for every issue."""
    base = Path(issue.source_path).resolve().parent if issue.source_path else None
    if entries is None:
        entries = archive(settings, issue)
    elif not any(p.date == issue.date for p in entries):
        brand = settings["newsletter"]["name"]
        entries = tuple(sorted((*entries, PastIssue(issue.date, f"{brand} ({issue.slug})")),
                               key=lambda p: p.date, reverse=True))
    return RenderContext(settings=settings, archive=entries, base_dir=base, date=issue.date, shared_env=env)


def channel_for(name: str, ctx: RenderContext) -> Channel:
    """Channel `name` over the part of `ctx` it declares it reads (its archive slice)."""
    cls = get_channel(name)
    return cls(ctx.for_channel(cls))


def render(issue: Issue, channel: str, settings: Settings, ctx: RenderContext | None = None) -> Rendition:
    ctx = ctx or context_for(settings, issue)
    return channel_for(channel, ctx).render(issue)


def write_rendition(rendition: Rendition, out_dir: Path) -> list[Path]:
    """Write a rendition's body, parts and images into out_dir; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    main = out_dir / rendition.filename
    _atomic_write(main, rendition.body.encode("utf-8"))
    written.append(main)
    for name, text in rendition.parts.items():
        p = out_dir / name
        _atomic_write(p, text.encode("utf-8"))
        written.append(p)
    for name, data in rendition.binary_parts.items():
        p = out_dir / name
        _atomic_write(p, data)
        written.append(p)
    for image in rendition.images:
        if re.match(r"^[a-z]+://", image.ref) or image.ref.startswith("/"):
            continue
        target = out_dir / image.ref
        target.parent.mkdir(parents=True, exist_ok=True)
        if image.data is not None:
            _write_shared(target, image.data)
        elif image.path is not None and image.path.is_file():
            if target.resolve() != image.path.resolve():
                _write_shared(target, image.path.read_bytes())
        else:
            continue
        written.append(target)
    return written


def _write_shared(path: Path, data: bytes) -> None:
    """Write a file many renditions share (the generated QR code, an image several issues show)
    only when its content differs: parallel builds then write it once, and never race."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file of this process and thread, then rename: readers and
    parallel writers of the same path see the old file or the new one, never a part."""
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
