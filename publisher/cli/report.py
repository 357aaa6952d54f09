"""`publisher report`: the campaign report (publisher/report.py) as a self-contained HTML page or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.cli import get_settings
from publisher.errors import PublisherError
from publisher.report import default_out, gather, issue_slugs, to_html, to_json


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
    from publisher.atomic import atomic_write

    settings = get_settings(ctx)
    slugs = issue_slugs(list(issues)) or None
    data = gather(settings, slugs)
    found = {e["issue"] for e in data["issues"]}
    missing = [s for s in slugs or () if s not in found]
    if missing:
        raise PublisherError(f"{', '.join(missing)}: nothing pushed for it in the ledger "
                             f"({settings['paths']['ledger']}); push it first, or name no issue to report "
                             "on every issue")
    if fmt == "json" and out is None:
        click.echo(to_json(data))
        return 0
    path = out or default_out(settings)
    atomic_write(path, to_json(data) + "\n" if fmt == "json" else to_html(data, settings))
    click.echo(f"report written to {path}" + (f" (open {path.resolve().as_uri()})" if fmt == "html" else ""))
    return 0
