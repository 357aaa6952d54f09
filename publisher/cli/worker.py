"""`publisher worker`: send the running email campaigns, with any number of other workers."""

from __future__ import annotations

import signal
import sys
import threading

import click

from publisher.cli import get_settings


def _stop(signum, frame):  # systemd's stop: finish the messages in flight, commit, leave
    raise KeyboardInterrupt


@click.command("worker")
@click.option("--once", is_flag=True, help="Exit when no running campaign is left (default: keep waiting "
                                            "for new ones).")
@click.pass_context
def worker_command(ctx: click.Context, once: bool) -> None:
    """Join every running email campaign ([database] url: on any host) and send its recipients."""
    from publisher.campaign import work
    from publisher.transports.email import Campaign

    signal.signal(signal.SIGTERM, _stop)
    # a background thread (a heartbeat) that stops on a lost database connection: one line, the run resumes
    threading.excepthook = lambda a: click.echo(f"worker thread stopped: {a.exc_type.__name__}: "
                                                f"{str(a.exc_value).strip()[:200]}", err=True)
    stopped = work(get_settings(ctx), sender=Campaign, once=once, echo=lambda line: click.echo(line, err=True))
    if stopped:
        sys.exit(1)
