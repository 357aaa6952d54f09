"""The one-way flow every command shares: source → Issue → Channel.render → Rendition → files."""

from __future__ import annotations

import re
from pathlib import Path

from publisher.channels.base import Channel, PastIssue, RenderContext, Rendition, get_channel

from .atomic import write_if_changed
from .errors import Diagnostic, SourceError
from .model import Issue
from .reader import read_issue
from .refs import contained, excerpt, image_bytes, is_local, issue_folder, out_path
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


_FRONT_LISTED = re.compile(
    r"\A---[ \t]*\n(?:(?!---|\.\.\.).*\n)*?(?:status:[ \t]*['\"]?ready['\"]?|archived:[ \t]*true)[ \t]*(?:#.*)?\n"
    r"(?:.*\n)*?---",
    re.M,
)


def is_listed(path: Path) -> bool:
    """True when other issues may list this one: its front matter says `status: ready` (the
    default is draft) or `archived: true` (published before, imported from the archive).

    Reads only the front matter (the first 4 KB): the archive lists are built on every render."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace").replace("\r\n", "\n")
    except OSError:
        return False
    return bool(_FRONT_LISTED.match(head))
def issue_paths(settings: Settings, args: list[str] | tuple[str, ...]) -> list[Path]:
    """What an issue argument can be, for every command: an issue file, a date (YYYY-MM-DD, looked
    up in [paths] issues) or a folder (every YYYY-MM-DD.md in it); no argument = the issues folder."""
    if not args:
        files = issue_files(settings)
        if not files:
            newest_issue(settings)  # the error naming [paths] issues
        return files
    paths: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted((p for p in path.iterdir() if ISSUE_FILE_RE.match(p.name)), reverse=True)
            if not found:
                raise SourceError(f"no issue files (YYYY-MM-DD.md) in folder {path}")
            paths += found
        elif not path.exists() and re.fullmatch(r"\d{4}-\d{2}-\d{2}", arg):
            folder = settings.path("paths", "issues")
            candidate = folder / f"{arg}.md" if folder else Path(f"{arg}.md")
            if not candidate.is_file():
                raise SourceError(
                    f"no issue {arg}: {candidate} does not exist ([paths] issues in {settings.where()})")
            paths.append(candidate)
        else:
            paths.append(path)  # a missing file is reported by the reader with its name
    return list(dict.fromkeys(paths))


def archive(settings: Settings, extra: Issue | None = None) -> tuple[PastIssue, ...]:
    """The archive as channels see it: every `ready` or `archived` issue in the issues folder (a
    draft is not published yet, so no other issue lists it), plus the issue being rendered;
    newest first."""
    import datetime as dt

    brand = settings["newsletter"]["name"]
    entries: dict[dt.date, PastIssue] = {}
    for path in issue_files(settings):
        if not is_listed(path):
            continue
        date = dt.date.fromisoformat(ISSUE_FILE_RE.match(path.name).group(1))
        entries[date] = PastIssue(date, f"{brand} ({date.isoformat()})", path)
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
    base = issue_folder(issue.source_path) if issue.source_path else None
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


def write_rendition(rendition: Rendition, out_dir: Path, *, root: Path | None = None) -> list[Path]:
    """Write a rendition's body, parts, messages (each a file) and images into out_dir; return
    the paths written.

    Every name is checked to stay under the output folder `root` (default: out_dir) with no
    symbolic link between `root` and the file (refs.out_path), and every local image it copies
    under the issue's folder, all before the first byte is written: nothing is ever written
    outside `root`, and a refused name writes nothing at all."""
    root = out_dir if root is None else root
    out_path(out_dir, rendition.filename, root=root)  # a symlinked out_dir is refused before mkdir
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, bytes]] = [(out_path(out_dir, rendition.filename, root=root),
                                        rendition.body.encode("utf-8"))]
    files += [(out_path(out_dir, name, root=root), text.encode("utf-8")) for name, text in rendition.parts.items()]
    files += [(out_path(out_dir, name, root=root), text.encode("utf-8"))
              for name, text in rendition.message_files().items()]
    files += [(out_path(out_dir, name, root=root), data) for name, data in rendition.binary_parts.items()]
    copies: list[tuple[bytes, Path]] = []
    for image in rendition.images:
        if not is_local(image.ref) or image.ref.startswith("/"):
            continue
        target = out_path(out_dir, image.ref, root=root)
        if image.data is not None:
            files.append((target, image.data))
        elif image.path is not None:
            source = issue_file(image)
            if source.is_file() and target != source:
                copies.append((image_bytes(source, image.source or image.ref), target))
    written = []
    for path, data in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(path, data)
        written.append(path)
    for data, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(target, data)
        written.append(target)
    return written


def issue_file(image) -> Path:
    """The file of a LocalImage, resolved; an image the issue names (inline or cover) must be
    inside the issue's folder (its path is that folder / ref), a configured one (the QR) may not."""
    if image.role == "qr":
        return image.path.resolve()
    written = image.source or image.ref  # relative to the issue's folder
    root = image.path
    for _ in Path(written).parts:
        root = root.parent
    source = contained(root, written) if not Path(written).is_absolute() else None
    if source is None or source != image.path.resolve():
        raise SourceError(f"image {excerpt(written)} is outside the issue's folder (a '..', an absolute path "
                          "or a symlink to elsewhere); nothing was written or uploaded: move the file beside the issue")
    return source
