"""Progress callbacks for the commands: a rich bar on a terminal, plain lines otherwise.

The domain modules report progress by calling `progress(done, total)`; they never draw it. A
command opens one of these context managers and passes the callable it yields.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from publisher.registry import mail_channel

Progress = Callable[[int, int], None]


def _console():
    from rich.console import Console

    # NO_COLOR: no ANSI colours (rich honours it for colours, not for bold or the bar's own style)
    return Console(stderr=True, color_system=None if os.environ.get("NO_COLOR") else "auto")


@contextmanager
def build_progress() -> Iterator[Progress]:
    """`publisher build`: a transient bar on a terminal, else one line per tenth of the work."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        with Bar("building", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                 console=_console(), transient=True) as bar:
            task = bar.add_task("building", total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    step = {"next": 0}

    def plain(done: int, total: int) -> None:
        if done >= step["next"] or done == total:
            click.echo(f"rendered {done}/{total} issue(s)", err=True)
            step["next"] = done + max(1, total // 10)

    yield plain


@contextmanager
def send_progress(label: str | None = None) -> Iterator[Progress | None]:
    """A push's messages sent (email): a bar on a terminal, started at the first report; None off
    a terminal (the transport then prints a line `email: done/total` every few seconds). The bar is
    labelled `label`, by default the name of the channel that mails subscribers (the one that reports)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress as Bar

    bar = Bar(console=_console(), transient=False)
    task = None

    def report(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = bar.add_task(label or mail_channel(), total=total or None)
            bar.start()
        bar.update(task, completed=done, total=total or None)

    try:
        yield report
    finally:
        if task is not None:
            bar.stop()


@contextmanager
def link_progress(minimum: int) -> Iterator[Progress | None]:
    """`publisher check`: one rewritten line of links checked, on a terminal, for `minimum` links
    or more (None off a terminal: the link check reports nothing)."""
    if not sys.stderr.isatty():
        yield None
        return

    def report(done: int, total: int) -> None:
        if total >= minimum:
            click.echo(f"\rchecking links: {done}/{total}", nl=done == total, err=True)

    yield report
