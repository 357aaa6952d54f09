"""`publisher build`: every issue to every enabled channel, in parallel, re-rendering only what changed.

Each rendition (issue × channel) is fingerprinted with exactly what it reads: the issue's source
bytes and the images folder beside it; the config tables its channel reads
(`Channel.config_reads()`); the channel's templates (`<channel>/…` in the user's template
folder, the built-in ones and the channel's own folder); the slice of the archive it shows
(`Channel.archive_slice()`: the github calendar shows every issue up to its date, the 往期回顾
lists the last 10 before it, email and wechat none) — and, for a channel that reads their
sources (`Channel.reads_sources`: the web site's carrier), those sources' bytes; and the program's code. Adding a new issue
therefore re-renders that issue only, and editing one channel's config or template re-renders
that channel only. A manifest in the output folder keeps each rendition's fingerprint and files;
the files of an issue that is gone (deleted, renamed) are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_write
from .errors import PublisherError
from .settings import Settings

MANIFEST = ".build-manifest.json"

# progress(done, total): called after each issue is rendered (the CLI draws a bar or prints lines)
Progress = Callable[[int, int], None]
# warn(text): a source warning of an issue rendered (the CLI prints it on stderr)
Warn = Callable[[str], None]


def _tree_stamp(folder: Path | None, h) -> None:
    """Feed every file's relative path, size and mtime under folder into hash h."""
    if folder is None or not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            p = Path(root) / name
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def code_fingerprint() -> str:
    """The program itself: its version and the files of its code and built-in templates."""
    import importlib.util

    from . import __version__

    h = hashlib.sha256(__version__.encode())
    for package in ("publisher", "publisher.channels", "publisher.templates"):
        spec = importlib.util.find_spec(package)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            h.update(f"\0{package}\0".encode())
            _tree_stamp(Path(loc), h)
    return h.hexdigest()


def channel_fingerprint(name: str, settings: Settings, code_fp: str) -> str:
    """What every rendition of channel `name` reads besides the issue: its config tables and
    its templates (and the code)."""
    from publisher.channels.base import get_channel

    cls = get_channel(name)
    h = hashlib.sha256(f"{code_fp}\0{name}\0".encode())
    tables = {t: settings.data.get(t) for t in cls.config_reads()}
    h.update(json.dumps(tables, sort_keys=True, ensure_ascii=False, default=str).encode())
    for folder in cls.template_folders(settings):
        if folder.is_dir():  # a user folder without this channel's templates changes nothing
            h.update(f"\0{folder}\0".encode())
            _tree_stamp(folder, h)
    return h.hexdigest()


def rendition_fingerprint(channel_fp: str, source_fp: str, shown: list[str]) -> str:
    """One rendition's key: its channel's inputs, its source, and the archive entries it shows."""
    h = hashlib.sha256(f"{channel_fp}\0{source_fp}\0".encode())
    h.update("\n".join(shown).encode())
    return h.hexdigest()[:32]


def fingerprints(settings: Settings, files: list[Path], channels: list[str]) -> dict[tuple[str, str], str]:
    """(issue file name, channel) -> the fingerprint of that rendition's inputs."""
    import datetime as dt

    from publisher.channels.base import get_channel

    from . import pipeline
    from .settings import ISSUE_FILE_RE

    code_fp = code_fingerprint()
    entries = pipeline.archive(settings)
    line = {id(p): f"{p.slug}\t{p.title}" for p in entries}
    chans = {name: (get_channel(name), channel_fingerprint(name, settings, code_fp)) for name in channels}
    folder_stamps: dict[Path, str] = {}
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return digests[path]

    read = {id(p): f"{p.slug}\t{p.title}\t{digest(p.path) if p.path else ''}" for p in entries}
    keys: dict[tuple[str, str], str] = {}
    for path in files:
        images = path.parent / "images"  # images beside the issues that it may reference
        if images not in folder_stamps:
            h = hashlib.sha256()
            _tree_stamp(images, h)
            folder_stamps[images] = h.hexdigest()
        source_fp = digest(path) + folder_stamps[images]
        date = dt.date.fromisoformat(ISSUE_FILE_RE.match(path.name).group(1))
        for name, (cls, channel_fp) in chans.items():
            shown = [(read if cls.reads_sources else line)[id(p)] for p in cls.archive_slice(date, entries)]
            keys[path.name, name] = rendition_fingerprint(channel_fp, source_fp, shown)
    return keys


# ---- worker side -----------------------------------------------------------------------------

# per process: settings, the archive and one template environment for every issue it renders
_worker: dict = {}


def _init_worker(config: str | None, cwd: str) -> None:
    from .settings import load_settings

    _setup_worker(load_settings(config, cwd=Path(cwd)))


def _setup_worker(settings: Settings) -> None:
    from publisher.channels.base import template_env

    from . import pipeline

    _worker.clear()
    _worker.update(settings=settings, archive=pipeline.archive(settings))
    try:
        _worker["env"] = template_env(settings)
    except PublisherError:
        _worker["env"] = None  # every channel that needs templates reports it


def render_one(path: str, channels: list[str], out: str) -> dict:
    """Render one issue to the given channels; returns files written per channel, or the error."""
    from . import pipeline

    settings = _worker["settings"]
    try:
        issue, warnings = pipeline.load(path)
    except PublisherError as exc:
        return {"path": path, "written": {}, "warnings": [], "errors": {name: str(exc) for name in channels}}
    ctx = pipeline.context_for(settings, issue, entries=_worker["archive"], env=_worker["env"])
    written: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for name in channels:  # one channel failing does not stop the others
        try:
            rendition = pipeline.channel_for(name, ctx).render(issue)
            files = pipeline.write_rendition(rendition, Path(out) / name, root=Path(out))
            written[name] = [str(f) for f in files]
        except PublisherError as exc:
            errors[name] = f"[{name}] {exc}"
    return {"path": path, "written": written, "warnings": [str(w) for w in warnings], "errors": errors}


# ---- the build -------------------------------------------------------------------------------


def build(settings: Settings, out: Path, *, force: bool = False, jobs: int | None = None,
          warn: Warn | None = None, progress: Progress | None = None) -> tuple[int, int, list[str]]:
    """Build everything stale; return (rendered pairs, up-to-date pairs, errors).

    `jobs`: worker processes (None: one per CPU; 1: render in this process); `warn` gets each
    source warning, `progress` each issue rendered."""
    files = settings.issue_files()
    channels = settings.enabled_channels
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            manifest = {}
    except (OSError, ValueError):
        manifest = {}
    keys = fingerprints(settings, files, channels)

    todo: dict[str, list[str]] = {}
    fresh = 0
    for path in files:
        stale = []
        for name in channels:
            entry = manifest.get(f"{path.name}/{name}")
            if (not force and isinstance(entry, dict) and entry.get("key") == keys[path.name, name]
                    and all(map(os.path.exists, entry.get("files", ())))):
                fresh += 1
            else:
                stale.append(name)
        if stale:
            todo[str(path)] = stale

    results: list[dict] = []
    total = len(todo)
    workers = min(jobs or os.cpu_count() or 1, total)
    if workers <= 1:
        _setup_worker(settings)
        for p, chans in todo.items():
            results.append(render_one(p, chans, str(out)))
            if progress:
                progress(len(results), total)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        config = str(settings.file) if settings.file else None
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config, str(settings.root))) as pool:
            futures = [pool.submit(render_one, p, chans, str(out)) for p, chans in todo.items()]
            for f in as_completed(futures):
                results.append(f.result())
                if progress:
                    progress(len(results), total)

    errors: list[str] = []
    rendered = 0
    for res in sorted(results, key=lambda r: r["path"]):
        name = Path(res["path"]).name
        for chan, message in res["errors"].items():
            errors.append(message)
            manifest.pop(f"{name}/{chan}", None)
        for w in res["warnings"] if warn else ():
            warn(w)
        for chan, written in res["written"].items():
            manifest[f"{name}/{chan}"] = {"key": keys[name, chan], "files": written}
            rendered += 1
    # forget issues that are gone, and remove the files only they had
    names = {p.name for p in files}
    gone = {k: v for k, v in manifest.items() if k.split("/")[0] not in names}
    manifest = {k: v for k, v in manifest.items() if k not in gone}
    _remove_outputs(gone, manifest, out)
    if not results and not gone and manifest_path.exists():
        return rendered, fresh, errors  # nothing changed: the manifest stays as it is
    atomic_write(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return rendered, fresh, errors


def _remove_outputs(gone: dict, kept: dict, out: Path) -> None:
    """Delete the files of `gone` entries that no kept entry lists, inside `out` only."""
    keep = {f for entry in kept.values() if isinstance(entry, dict) for f in entry.get("files", ())}
    root = out.resolve()
    for entry in gone.values():
        for f in entry.get("files", ()) if isinstance(entry, dict) else ():
            path = Path(f).resolve()
            if f in keep or not path.is_relative_to(root) or path == root:
                continue
            path.unlink(missing_ok=True)
