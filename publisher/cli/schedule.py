"""`publisher schedule`: the publishing daemon, one tick (--once) or the upcoming runs (--list)."""

from __future__ import annotations

import os

import click

from publisher.cli import echo_json, format_option, get_settings
from publisher.cli.progress import send_progress
from publisher.scheduler import run_daemon, run_once, schedule_config, upcoming


@click.command("schedule")
@click.option("--once", is_flag=True, help="Run one publishing tick now and exit (for cron/systemd timers).")
@click.option("--list", "list_runs", is_flag=True, help="Show the upcoming runs and what each would publish.")
@format_option("text", "json")
@click.option("--test-at", hidden=True, metavar="HH:MM:SS",
              help="(tests) run every day at this time instead of [schedule] day/time.")
@click.pass_context
def schedule_command(ctx, once, list_runs, fmt, test_at) -> int:
    """Run the publishing scheduler ([schedule] day, time, timezone)."""
    settings = get_settings(ctx)
    test_at = test_at or os.environ.get("PUBLISHER_SCHEDULE_TEST_AT") or None
    cfg = schedule_config(settings, test_at)
    if once and list_runs:
        raise click.UsageError("--once and --list do not go together")
    if fmt == "json" and not list_runs:
        raise click.UsageError("--format json goes with --list")
    if list_runs and fmt == "json":
        echo_json({"schedule": cfg.describe(), "runs": [
            {"at": when.isoformat(), "publishes": [{"issue": slug, "channels": list(chs)} for slug, chs in publish],
             "not_scheduled": list(notes)} for when, publish, notes in upcoming(settings, cfg)]})
        return 0
    if list_runs:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"upcoming runs: {cfg.describe()}")
        table.add_column("run at")
        table.add_column("publishes")
        table.add_column("not scheduled")
        for when, publish, notes in upcoming(settings, cfg):
            table.add_row(when.isoformat(),
                          "\n".join(f"{slug} → {', '.join(chs)}" for slug, chs in publish) or "nothing",
                          "\n".join(notes))
        Console(width=max(120, Console().width)).print(table)
        return 0
    if once:
        with send_progress() as progress:
            reports = run_once(settings, cfg, progress=progress)
        done = sum(1 for r in reports for o in r.outcomes if o.state == "done")
        click.echo(f"published {len(reports)} issue(s) ({done} channel push(es))")
        return 0
    return run_daemon(settings, cfg)
