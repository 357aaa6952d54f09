"""`publisher report`: the campaign report (publisher/report.py) as a self-contained HTML page or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.cli import get_settings
from publisher.report import default_out, gather, issue_slugs, to_json, write_report


@click.command("report")
@click.argument("issues", nargs=-1)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (default: the HTML page to [paths] out/report.html; JSON to standard output).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html",
              help="html: one self-contained page with charts and tables; json: every number, per issue and channel.")
@click.pass_context
def report_command(ctx, issues, out, fmt) -> int:
    """What happened to each issue (or to ISSUE…: dates or issue files): sent, failed, bounced,
    complaints, unsubscribes, time to send, WeChat state, list growth and, with [analytics] clicks
    on, clicks per link."""
    settings = get_settings(ctx)
    slugs = issue_slugs(list(issues)) or None
    if fmt == "json" and out is None:
        click.echo(to_json(gather(settings, slugs)))
        return 0
    path = write_report(settings, slugs, out or default_out(settings), fmt)
    click.echo(f"report written to {path}" + (f" (open file://{path.resolve()})" if fmt == "html" else ""))
    return 0
