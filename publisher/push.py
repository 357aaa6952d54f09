"""The one push path: an issue → each channel's rendition → its transport → the ledger.

`publisher push`, `publisher schedule` and anything else that publishes go through
`push_issue()`. Per channel: the (issue, channel) lease is taken (another live sender → `busy`,
naming it; nothing written); then skipped when the ledger already says `done` (unless force),
else ledger.begin → render → transport.push → ledger.finish, or ledger.fail with the error; the
lease is released. One channel failing never stops the others; the caller turns any failure
(busy included) into a non-zero exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Diagnostic, PublisherError, SourceError
from .model import Issue
from .redact import redact
from .settings import Settings
from .stores.base import StoreError
from .stores.ledger import LeaseHeld, Ledger, checkpoint

log = logging.getLogger("publisher.push")

# outcome states
DONE, SKIPPED, FAILED, DRY_RUN = "done", "skipped", "failed", "dry-run"
BUSY = "busy"  # another live process holds the (issue, channel) lease: nothing was done


@dataclass(frozen=True)
class ChannelOutcome:
    channel: str
    state: str  # done | skipped | failed | busy | dry-run
    message: str = ""
    remote_id: str | None = None
    url: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.state in (FAILED, BUSY)


@dataclass
class PushReport:
    issue: Issue
    outcomes: list[ChannelOutcome] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def failed(self) -> list[ChannelOutcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def ok(self) -> bool:
        return not self.failed


def resolve_issue_path(settings: Settings, issue: str | Path) -> Path:
    """An issue named by its file, or by its date (looked up in [paths] issues)."""
    path = Path(issue)
    if path.is_file():
        return path
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(issue)):
        folder = settings.path("paths", "issues")
        candidate = (folder / f"{issue}.md") if folder else None
        if candidate is not None and candidate.is_file():
            return candidate
        raise SourceError(
            f"no issue {issue}: {candidate} does not exist ([paths] issues in {settings.where()})"
        )
    raise SourceError(f"issue file {path} does not exist")


def open_ledger(settings: Settings) -> Ledger:
    from publisher.stores import open_ledger as _open

    return _open(settings)


def _transport(channel: str):
    from .transports import get_transport

    return get_transport(channel)


def _is_test_copy(channel: str, options: Mapping[str, Any]) -> bool:
    """A push that leaves the pushes row alone (e.g. an email test copy with --to)."""
    return not _transport(channel).records_push(options)


def is_done(record, channel: str, options: Mapping[str, Any]) -> bool:
    """Whether the ledger row means there is nothing left to do for this push (the channel's
    transport decides: a WeChat draft is not done when publishing is asked for)."""
    return _transport(channel).is_done(record, options)


def push_issue(
    settings: Settings,
    issue_path: str | Path,
    channels: Iterable[str],
    *,
    force: bool = False,
    dry_run: bool = False,
    options: Mapping[str, Any] | None = None,
    ledger: Ledger | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Push one issue to the given channels; return every channel's outcome (never raises for a
    channel's failure; raises SourceError when the issue itself cannot be read). `progress(done,
    total)` gets a long push's progress (an email campaign's messages)."""
    from .channels.base import get_channel
    from .pipeline import context_for, load
    from .transports import get_transport
    from .transports.base import PushContext

    options = dict(options or {})
    channels = list(dict.fromkeys(channels))  # keep order, drop duplicates
    for channel in channels:  # a misspelt channel is a usage error, not a failed push
        get_channel(channel)
        get_transport(channel)
    ledger = ledger or open_ledger(settings)
    issue, warnings = load(issue_path)
    report = PushReport(issue=issue, warnings=list(warnings))
    if issue.status != "ready":
        report.warnings.append(Diagnostic(
            "warning", f"issue {issue.slug} has status '{issue.status}' (pushed by hand; "
            "the scheduler publishes only 'ready' issues)", str(issue_path), None))
    render_ctx = context_for(settings, issue)
    push_ctx = PushContext(settings=settings, ledger=ledger, issue=issue, dry_run=dry_run,
                           force=force, options=options, progress=progress)

    for channel in channels:
        test_copy = _is_test_copy(channel, options)
        touch_ledger = not dry_run and not test_copy
        lease = None
        if touch_ledger:
            try:
                lease = ledger.acquire(issue.slug, channel)
            except LeaseHeld as exc:
                report.outcomes.append(ChannelOutcome(channel, BUSY, str(exc)))
                continue
        try:
            report.outcomes.append(_push_channel(
                ledger, issue, channel, settings, render_ctx, dataclasses.replace(push_ctx, lease=lease),
                force=force, dry_run=dry_run, options=options, test_copy=test_copy,
                touch_ledger=touch_ledger))
        finally:
            if lease is not None:
                with contextlib.suppress(StoreError):  # e.g. disk full: a dead holder's lease is
                    lease.release()                    # taken over at once on this host
    return report


def _push_channel(ledger, issue, channel, settings, render_ctx, push_ctx, *, force, dry_run, options,
                  test_copy, touch_ledger) -> ChannelOutcome:
    """One channel, under its lease (read the row only now: another sender may just have
    finished it)."""
    from .pipeline import render
    from .transports import get_transport

    log.info("push %s %s: %s", issue.slug, channel, "dry run" if dry_run else "start")
    record = ledger.get(issue.slug, channel)
    if is_done(record, channel, options) and not force and not test_copy:
        return ChannelOutcome(channel, SKIPPED, f"already done ({record.updated_at}); --force pushes it again",
                              record.remote_id, record.url)
    if touch_ledger:
        ledger.begin(issue.slug, channel)
        checkpoint(f"push:{channel}")  # crash tests pause here, holding the lease
    try:
        settings.require_own_identity()  # no shipped example's links reach readers
        transport_cls = get_transport(channel)
        transport_cls.check_config(settings)  # e.g. no shipped placeholder reaches readers
        transport = transport_cls()
        rendition = render(issue, channel, settings, render_ctx)
        if rendition.metadata.get("click_links") and not dry_run:  # before any reader can click
            from .stores.analytics import AnalyticsStore

            AnalyticsStore(ledger).record_links(issue.slug, channel, rendition.metadata["click_links"])
        result = transport.push(rendition, push_ctx)
    except PublisherError as exc:
        message = exc.message if hasattr(exc, "message") else str(exc)
        if touch_ledger:
            message += _record_failure(ledger, issue.slug, channel, message, exc, push_ctx.lease)
        return ChannelOutcome(channel, FAILED, message)
    except Exception as exc:  # an unexpected bug: record it and go on with the other channels
        message = f"{type(exc).__name__}: {exc}"
        if touch_ledger:
            message += _record_failure(ledger, issue.slug, channel, message, exc, push_ctx.lease)
        return ChannelOutcome(channel, FAILED, message)
    if touch_ledger:
        ledger.finish(issue.slug, channel, remote_id=result.remote_id, url=result.url,
                      details=result.details)
    state = DRY_RUN if dry_run else DONE
    log.info("push %s %s: %s %s", issue.slug, channel, state, result.remote_id or "")
    summary = result.summary or (f"would push {rendition.filename}" if dry_run else "pushed")
    if test_copy and not dry_run:
        summary += " (test copy; ledger unchanged)"
    return ChannelOutcome(channel, state, summary, result.remote_id, result.url, dict(result.details))


def _record_failure(ledger: Ledger, issue: str, channel: str, message: str, exc: BaseException,
                    lease) -> str:
    """Record a failed push; '' or what could not be recorded. A sender whose lease was taken over
    leaves the row to the new holder and only adds its counts (e.g. ambiguous resends)."""
    details = getattr(exc, "details", None)
    try:
        if getattr(exc, "lease_lost", False) or (lease is not None and lease.lost.is_set()):
            ledger.add_counts(issue, channel, details or {})
        else:
            ledger.fail(issue, channel, message, details)
    except StoreError as err:
        return f" (this failure could not be recorded in the ledger: {err.message})"
    return ""


# ---- status ------------------------------------------------------------------------------------

def _counts(ledger: Ledger | None, record) -> dict[str, int]:
    """What the channel's transport counts of a push beyond its state (email: recipients by state)."""
    from .channels.base import available_channels

    if ledger is None or record.channel not in available_channels():
        return {}
    return _transport(record.channel).counts(ledger, record)


def _via(record) -> str | None:
    """What carried the push, as its channel's transport says (email: smtp or the provider)."""
    from .channels.base import available_channels

    if record.channel not in available_channels():
        return None
    return _transport(record.channel).via(record)


def describe_counts(counts: Mapping[str, int]) -> str:
    """Counts for people: `sent 3, ambiguous-resent 1`."""
    return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in counts.items())


def status_rows(settings: Settings, issue: str | None = None) -> tuple[Path, str | None, list[dict]]:
    """(the ledger's path, the issue's slug or None, one row per push): what went where, for every
    issue or for `issue` (a date or an issue file); URLs and errors with their secrets masked."""
    slug = None
    if issue:
        m = re.search(r"(\d{4}-\d{2}-\d{2})", Path(issue).name)
        if not m:
            raise PublisherError(f"'{issue}' names no issue: give a date (YYYY-MM-DD) or an issue file")
        slug = m.group(1)
    from publisher.stores import location
    from publisher.stores import open_ledger as _open

    ledger = _open(settings, existing=True)
    records = ledger.records(slug) if ledger is not None else []
    ledger_path = location(settings, "ledger")[0]
    rows = [{"issue": r.issue, "channel": r.channel, "state": r.state, "attempts": r.attempts,
             "remote_id": r.remote_id, "url": redact(r.url, settings) or None,
             "counts": _counts(ledger, r), "via": _via(r), "updated": r.updated_at,
             "last_error": redact(r.last_error, settings) or None}
            for r in records]
    rows += [{**row, "via": row.get("via")} for row in
             _pushes_the_ledger_lost(settings, ledger, slug, {(r.issue, r.channel): r for r in records})]
    rows.sort(key=lambda r: (r["issue"], r["channel"]), reverse=False)
    rows.sort(key=lambda r: r["issue"], reverse=True)
    return Path(ledger_path), slug, rows


def _pushes_the_ledger_lost(settings: Settings, ledger: Ledger | None, slug: str | None,
                            records: Mapping) -> list[dict]:
    """Pushes another store remembers that this ledger does not (each transport says which):
    shown, never "nothing pushed"."""
    from .channels.base import available_channels

    rows = []
    for name in available_channels():
        rows += _transport(name).lost_pushes(settings, ledger, slug, records)
    return rows
