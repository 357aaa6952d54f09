"""`publisher build`: every issue to every enabled channel (publisher/build.py), with progress."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.build import build
from publisher.cli import echo_json, format_option, get_settings
from publisher.cli.progress import build_progress
from publisher.errors import PublisherError


@click.command("build")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: [paths] out).")
@click.option("--force", is_flag=True, help="Render everything, even what is up to date.")
@click.option("-j", "--jobs", type=int, default=None, help="Parallel worker processes (default: CPU count).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (no progress, warnings or summary).")
@format_option("text", "json")
@click.pass_context
def build_command(ctx: click.Context, out_dir: Path | None, force: bool, jobs: int | None, quiet: bool,
                  fmt: str) -> None:
    """Render every issue in the issues folder to every enabled channel (only what changed).

    Progress goes to stderr: a bar on a terminal, plain lines otherwise."""
    settings = get_settings(ctx)
    out = out_dir or settings.path("paths", "out")
    folder = settings.path("paths", "issues")
    if folder is None or not folder.is_dir():
        raise PublisherError(f"issues folder {folder} does not exist; set [paths] issues in {settings.where()}")
    if quiet or fmt == "json":
        rendered, fresh, errors = build(settings, out, force=force, jobs=jobs,
                                        warn=None if quiet else lambda text: click.echo(text, err=True))
    else:
        with build_progress() as progress:
            rendered, fresh, errors = build(settings, out, force=force, jobs=jobs, progress=progress,
                                            warn=lambda text: click.echo(text, err=True))
    if fmt == "json":
        echo_json({"out": str(out), "rendered": rendered, "up_to_date": fresh, "failed": len(errors),
                   "errors": list(errors)})
        ctx.exit(1 if errors else 0)
    for e in errors:
        click.secho(e, fg="red", err=True)
    if not quiet:
        click.echo(f"built {rendered} rendition(s), {fresh} up to date, {len(errors)} failed → {out}", err=True)
    if errors:
        ctx.exit(1)
