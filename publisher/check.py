"""`publisher check`: everything an editor should know before publishing."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.cli import print_diagnostics
from publisher.errors import SourceError
from publisher.reader import read_issue


@click.command("check")
@click.argument("issues", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def check_command(ctx: click.Context, issues: tuple[Path, ...]) -> None:
    """Read ISSUES and report errors and warnings with file:line; exit 1 on any error."""
    errors = 0
    for path in issues:
        try:
            result = read_issue(path)
        except SourceError as exc:
            print_diagnostics([d for d in exc.diagnostics])
            errors += 1
            continue
        print_diagnostics(result.warnings)
        issue = result.issue
        click.echo(f"{path}: ok — {issue.date} {issue.status}, {len(issue.sections)} sections, "
                   f"{issue.item_count} items, {len(result.warnings)} warning(s)")
    if errors:
        ctx.exit(1)
