"""`publisher status`: the ledger's rows (publisher.push.status_rows) as a table, TSV or JSON."""

from __future__ import annotations

import json
import os
import sys

import click

from publisher.cli import get_settings
from publisher.push import describe_counts, redact, status_rows
from publisher.report import report_link


@click.command("status")
@click.argument("issue", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default=None,
              help="table (default on a terminal), tsv (default when piped: one line per row, "
                   "tab-separated, never wrapped) or json.")
@click.pass_context
def status_command(ctx, issue, fmt) -> int:
    """Show the ledger: what went where, for every issue or for ISSUE (a date or a file).

    Also says which publisher.toml is in use (stderr; in json: "config", "folder"). json's
    "pushes" rows have "counts" as numbers (email: sent, failed, pending, ambiguous, bounced) and
    "via": what carried the push (email: smtp, ses, postmark or mailgun), or null."""
    settings = get_settings(ctx)
    ledger_path, slug, rows = status_rows(settings, issue)
    fmt = fmt or ("table" if sys.stdout.isatty() else "tsv")
    config = str(settings.file) if settings.file else None
    if fmt == "json":
        click.echo(json.dumps({"config": config, "folder": str(settings.root), "ledger": str(ledger_path),
                               "pushes": rows}, ensure_ascii=False, indent=1))
        return 0
    # which publisher.toml answered (it is searched upward from here, like git): on stderr, so
    # the rows on stdout stay one per line
    click.echo(f"config: {settings.where()}", err=True)
    if not rows:
        where = f"no ledger at {ledger_path}" if not ledger_path.exists() else f"{ledger_path}"
        click.echo(f"nothing pushed yet{' for ' + slug if slug else ''} ({where})")
        return 0
    columns = ("issue", "channel", "state", "attempts", "remote id / url", "updated", "last error")
    cells = [[r["issue"], r["channel"], r["state"], str(r["attempts"]),
              redact(" ".join(x for x in (r["remote_id"], r["url"], r["via"] and f"via {r['via']}",
                                          describe_counts(r["counts"])) if x), settings),
              r["updated"], r["last_error"] or ""] for r in rows]
    if fmt == "tsv":
        click.echo("\t".join(columns))
        for row in cells:
            click.echo("\t".join(" ".join(c.split()) for c in row))
        click.echo(report_link(settings), err=True)  # stdout stays one row per line
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"pushes ({ledger_path})")
    for col in columns:
        table.add_column(col, overflow="fold")
    colors = {"done": "green", "failed": "red", "pushing": "yellow", "pending": "cyan"}
    for row in cells:
        table.add_row(*row[:2], Text(row[2], style=colors.get(row[2], "")), row[3], Text(row[4]),
                      row[5], Text(row[6]))
    # NO_COLOR: no ANSI styling at all (rich alone would still write bold and italics)
    console = Console(color_system=None if os.environ.get("NO_COLOR") else "auto")
    console.print(table)
    console.print(report_link(settings), soft_wrap=True, highlight=False, markup=False)
    return 0
