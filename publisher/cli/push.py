"""`publisher push`: one issue to channels through `publisher.push.push_issue`, and its report."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from publisher.addresses import address_problem
from publisher.cli import echo_json, format_option, get_settings, print_diagnostics
from publisher.cli.progress import send_progress
from publisher.errors import PublisherError
from publisher.push import BUSY, DONE, DRY_RUN, FAILED, SKIPPED, PushReport, push_issue, resolve_issue_path
from publisher.registry import mail_channel


@click.command("push")
@click.argument("issue")
@click.option("--channel", "-c", "channels", multiple=True, metavar="NAME",
              help="Channel to push to (repeatable).")
@click.option("--all", "all_channels", is_flag=True, help="Every channel in [channels] enabled.")
@click.option("--dry-run", is_flag=True, help="Render and report; send nothing, write no ledger row.")
@click.option("--force", is_flag=True, help="Push again to channels the ledger records as done.")
@click.option("--to", "to", metavar="ADDR", help="email: send one test copy to ADDR (ledger untouched).")
@click.option("--publish", is_flag=True, help="wechat: publish the draft (freepublish) after creating it.")
@click.option("--new-draft", is_flag=True, help="wechat: create a new draft instead of updating.")
@click.option("--after-ledger-loss", type=click.Choice(["resend", "skip"]), default=None,
              help="email: the ledger no longer records a campaign the subscribers database knows "
                   "was sent: resend (to everyone this ledger has no record of) or skip (record it "
                   "as sent, send nothing). See docs/email.md.")
@format_option("text", "json")
@click.pass_context
def push_command(ctx, issue, channels, all_channels, dry_run, force, to, publish, new_draft,
                 after_ledger_loss, fmt) -> int:
    """Push ISSUE (a file, or a date in the issues folder) to channels."""
    settings = get_settings(ctx)
    if bool(channels) == bool(all_channels):
        raise click.UsageError("name channels with --channel NAME (repeatable) or pass --all")
    names = settings.enabled_channels if all_channels else list(channels)
    if not names:
        raise PublisherError(f"[channels] enabled is empty in {settings.where()}")
    mail = mail_channel() if to or after_ledger_loss else None  # the options of the mail channel alone
    if to and mail not in names:
        raise click.UsageError(f"--to sends an email test copy: add --channel {mail}")
    if to and (problem := address_problem(to)):
        raise click.BadParameter(f"{to!r} is not an email address (like editor@example.net): {problem}",
                                 param_hint="--to")
    options: dict[str, Any] = {"publish": publish, "new_draft": new_draft}
    if to:
        options["to"] = to
    if after_ledger_loss:
        if mail not in names:
            raise click.UsageError(f"--after-ledger-loss is about an email campaign: add --channel {mail}")
        options["after_ledger_loss"] = after_ledger_loss
    path = resolve_issue_path(settings, issue)
    # --format json: stdout holds the JSON alone; what the channels print (the dry run's sample
    # message, summaries) goes to stderr
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if fmt == "json" else contextlib.nullcontext()
    with send_progress() as progress, quiet_stdout:
        report = push_issue(settings, path, names, force=force, dry_run=dry_run, options=options,
                            progress=progress)
    if fmt == "json":
        echo_json(report_json(report))
    else:
        print_report(report)
    return 1 if report.failed else 0


def report_json(report: PushReport) -> dict:
    """A push's outcome for tools: every channel's state, message, remote id/URL and details."""
    return {
        "issue": report.issue.slug,
        "ok": not report.failed,
        "warnings": [str(w) for w in report.warnings],
        "channels": [{"channel": o.channel, "state": o.state, "message": o.message, "remote_id": o.remote_id,
                      "url": o.url, "details": dict(o.details)} for o in report.outcomes],
    }


def print_report(report: PushReport) -> None:
    print_diagnostics(report.warnings)
    colors = {DONE: "green", SKIPPED: "cyan", FAILED: "red", BUSY: "red", DRY_RUN: "yellow"}
    for o in report.outcomes:
        where = f" {o.url}" if o.url and o.url not in o.message else ""
        line = f"{report.issue.slug} {o.channel}: {o.state}: {o.message}{where}"
        click.secho(line, fg=colors.get(o.state), err=o.failed)
    if report.failed:
        names = ", ".join(o.channel for o in report.failed)
        click.secho(f"{len(report.failed)} channel(s) failed: {names}; re-run to retry them "
                    "(channels already done are skipped)", fg="red", err=True)
