"""`publisher build`: every issue to every enabled channel, in parallel, re-rendering only what changed.

What a rendition depends on is fingerprinted: the issue's source bytes, and — shared by all
issues — the configuration, the templates (built-in and the user's), the channel code and the
list of issues in the archive (往期回顾 lists depend on it). A manifest in the output folder keeps
the fingerprint each file was made from; an unchanged pair is skipped without importing any
channel, so a no-op build costs little more than interpreter start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import click

from .atomic import atomic_write
from .cli import get_settings
from .errors import PublisherError
from .settings import Settings

MANIFEST = ".build-manifest.json"


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


def global_fingerprint(settings: Settings, issue_names: list[str]) -> str:
    """What every rendition depends on besides its own source."""
    import importlib.util

    from . import __version__

    h = hashlib.sha256()
    h.update(__version__.encode())
    h.update(json.dumps(settings.data, sort_keys=True, ensure_ascii=False, default=str).encode())
    h.update("\n".join(issue_names).encode())
    templates = importlib.util.find_spec("publisher.templates")
    channels = importlib.util.find_spec("publisher.channels")
    for spec in (templates, channels):
        for loc in (spec.submodule_search_locations or []) if spec else []:
            _tree_stamp(Path(loc), h)
    _tree_stamp(settings.path("paths", "templates"), h)
    return h.hexdigest()


def issue_fingerprint(path: Path, global_fp: str) -> str:
    h = hashlib.sha256(global_fp.encode())
    h.update(path.read_bytes())
    # images next to the issue that it may reference
    _tree_stamp(path.parent / "images", h)
    return h.hexdigest()[:32]


# ---- worker side -----------------------------------------------------------------------------

_worker_settings: Settings | None = None


def _init_worker(config: str | None, cwd: str) -> None:
    global _worker_settings
    from .settings import load_settings

    _worker_settings = load_settings(config, cwd=Path(cwd))


def render_one(path: str, channels: list[str], out: str, settings: Settings | None = None) -> dict:
    """Render one issue to the given channels; returns files written per channel, or the error."""
    from . import pipeline

    settings = settings or _worker_settings
    assert settings is not None
    try:
        issue, warnings = pipeline.load(path)
    except PublisherError as exc:
        return {"path": path, "written": {}, "warnings": [], "errors": {name: str(exc) for name in channels}}
    ctx = pipeline.context_for(settings, issue)
    written: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for name in channels:  # one channel failing does not stop the others
        try:
            rendition = pipeline.channel_for(name, ctx).render(issue)
            written[name] = [str(f) for f in pipeline.write_rendition(rendition, Path(out) / name)]
        except PublisherError as exc:
            errors[name] = f"[{name}] {exc}"
    return {"path": path, "written": written, "warnings": [str(w) for w in warnings], "errors": errors}


# ---- the command -----------------------------------------------------------------------------


def build(settings: Settings, out: Path, *, force: bool = False, jobs: int | None = None,
          echo=click.echo, progress=None) -> tuple[int, int, list[str]]:
    """Build everything stale; return (rendered pairs, up-to-date pairs, errors). `echo` prints
    the sources' warnings; `progress(done, total, result)` is called as each issue finishes."""
    files = settings.issue_files()
    channels = settings.enabled_channels
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    gfp = global_fingerprint(settings, [p.name for p in files])

    todo: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    fresh = 0
    for path in files:
        key = issue_fingerprint(path, gfp)
        keys[str(path)] = key
        stale = []
        for name in channels:
            entry = manifest.get(f"{path.name}/{name}")
            if not force and entry and entry["key"] == key and all(Path(f).exists() for f in entry["files"]):
                fresh += 1
            else:
                stale.append(name)
        if stale:
            todo[str(path)] = stale

    results: list[dict] = []
    report = progress or (lambda done, total, result: None)
    if progress:
        report(0, len(todo), None)
    if len(todo) <= 1 or jobs == 1:
        for p, chans in todo.items():
            results.append(render_one(p, chans, str(out), settings))
            report(len(results), len(todo), results[-1])
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        workers = min(jobs or os.cpu_count() or 2, len(todo))
        config = str(settings.file) if settings.file else None
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config, str(settings.root))) as pool:
            futures = [pool.submit(render_one, p, chans, str(out)) for p, chans in todo.items()]
            for f in as_completed(futures):
                results.append(f.result())
                report(len(results), len(todo), results[-1])

    errors: list[str] = []
    rendered = 0
    for res in sorted(results, key=lambda r: r["path"]):
        name = Path(res["path"]).name
        for chan, message in res["errors"].items():
            errors.append(message)
            manifest.pop(f"{name}/{chan}", None)
        for w in res["warnings"]:
            echo(w, err=True)
        for chan, written in res["written"].items():
            manifest[f"{name}/{chan}"] = {"key": keys[res["path"]], "files": written}
            rendered += 1
    # forget issues that are gone
    names = {p.name for p in files}
    manifest = {k: v for k, v in manifest.items() if k.split("/")[0] in names}
    atomic_write(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    return rendered, fresh, errors


class _Progress:
    """Build progress on stderr: a rich bar on a terminal, else one plain line per issue."""

    def __init__(self, out: Path):
        self.out = out
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int, result: dict | None) -> None:
        if result is None:  # start
            if sys.stderr.isatty() and total:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                self.bar = Progress(TextColumn("building"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.description}"),
                                    console=Console(stderr=True, color_system=None if os.environ.get("NO_COLOR") else "auto"),
                                    transient=True)
                self.bar.start()
                self.task = self.bar.add_task("", total=total)
            return
        name = Path(result["path"]).name
        if self.bar is not None:
            self.bar.update(self.task, completed=done, description=name)
            if done == total:
                self.bar.stop()
            return
        failed = f", {len(result['errors'])} failed" if result["errors"] else ""
        click.echo(f"[{done}/{total}] {name}: {len(result['written'])} channel(s){failed}", err=True)


@click.command("build")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: [paths] out).")
@click.option("--force", is_flag=True, help="Render everything, even what is up to date.")
@click.option("-j", "--jobs", type=int, default=None, help="Parallel worker processes (default: CPU count).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (no progress, warnings or summary).")
@click.pass_context
def build_command(ctx: click.Context, out_dir: Path | None, force: bool, jobs: int | None, quiet: bool) -> None:
    """Render every issue in the issues folder to every enabled channel (only what changed).

    Progress goes to stderr: a bar on a terminal, one line per issue otherwise."""
    settings = get_settings(ctx)
    out = out_dir or settings.path("paths", "out")
    folder = settings.path("paths", "issues")
    if folder is None or not folder.is_dir():
        raise PublisherError(f"issues folder {folder} does not exist; set [paths] issues in {settings.where()}")
    echo = (lambda *a, **k: None) if quiet else click.echo
    rendered, fresh, errors = build(settings, out, force=force, jobs=jobs, echo=echo,
                                    progress=None if quiet else _Progress(out))
    for e in errors:
        click.secho(e, fg="red", err=True)
    if not quiet:
        click.echo(f"built {rendered} rendition(s), {fresh} up to date, {len(errors)} failed → {out}", err=True)
    if errors:
        ctx.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
