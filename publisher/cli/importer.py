"""`publisher import`: GitHub-archive issues → canonical sources."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.cli import print_diagnostics
from publisher.errors import SourceError
from publisher.legacy import import_file


@click.command("import")
@click.argument("legacy", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the canonical sources (YYYY-MM-DD.md).")
@click.option("--force", is_flag=True, help="Overwrite an existing source that differs.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print warnings.")
@click.pass_context
def import_command(ctx: click.Context, legacy: tuple[Path, ...], out_dir: Path, force: bool, quiet: bool) -> None:
    """Import GitHub-archive issues (Jekyll Markdown) as canonical sources.

    The archive footer (往期回顾, QR code, account lines, license) and the link notes are left
    out — every channel adds its own. Known quirks are mended, each with a warning.
    """
    failed = 0
    for path in legacy:
        try:
            target, result = import_file(path, out_dir, force=force)
        except SourceError as exc:
            click.secho(str(exc), fg="red", err=True)
            failed += 1
            continue
        if not quiet:
            print_diagnostics(result.warnings)
        issue = result.read.issue
        click.echo(f"{path} → {target}  ({len(issue.sections)} sections, {issue.item_count} items)")
    if failed:
        click.secho(f"{failed} of {len(legacy)} file(s) could not be imported", fg="red", err=True)
        ctx.exit(1)
