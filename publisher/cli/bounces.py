"""`publisher bounces`: read bounces and complaints and apply them (publisher/bounces.py)."""

from __future__ import annotations

from pathlib import Path

import click

from publisher.bounces import process_mailboxes
from publisher.cli import get_settings


@click.command("bounces")
@click.option("--mailbox", type=click.Path(path_type=Path), default=None,
              help="Read this Maildir folder or mbox file instead of the configured mailbox.")
@click.pass_context
def bounces_command(ctx: click.Context, mailbox: Path | None) -> None:
    """Read bounces and complaints from the mailbox and apply them (safe to re-run)."""
    summary = process_mailboxes(get_settings(ctx), mailbox=mailbox)
    click.echo(summary.line())
