"""`publisher schedule`: the weekly publishing daemon (APScheduler 3, jobs kept in SQLite).

On each run ("tick") every issue in the issues folder whose status is `ready` and whose
publish_at has come (a naive publish_at is read in [schedule] timezone; none = never scheduled) is
pushed to every enabled channel through `push_issue` — the ledger makes a second push of the
same issue to the same channel a no-op, so a tick can be repeated safely.

The job has a fixed id and lives in a SQLAlchemy job store ([schedule] jobstore). On start the
job is re-added with replace_existing=True but keeping a stored next run time that is already
past, so a run missed while the daemon was down fires once on restart (coalesce=True, within
misfire_grace_hours). One daemon per data: a lock file beside the job store holds its pid.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError, PublisherError, SourceError
from .settings import Settings

log = logging.getLogger("publisher.schedule")

JOB_ID = "publisher-weekly-publish"
JOB_FUNC = "publisher.scheduler:scheduled_tick"
# a scheduled run publishes: on WeChat that is the draft *and* its publication (freepublish)
SCHEDULED_OPTIONS = {"publish": True, "new_draft": False}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

# the settings the stored job runs with (a job in a persistent store refers to a function by
# name, so it cannot carry the settings object itself)
_RUNTIME: dict[str, Settings] = {}


# ---- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleConfig:
    day: str  # apscheduler day_of_week: mon … sun
    hour: int
    minute: int
    second: int
    timezone: ZoneInfo
    misfire_grace: int  # seconds
    jobstore: Path

    def trigger(self):
        from apscheduler.triggers.cron import CronTrigger

        if self.day == "*":  # the hidden --test-at option: every day at a given second
            return CronTrigger(hour=self.hour, minute=self.minute, second=self.second, timezone=self.timezone)
        return CronTrigger(day_of_week=self.day, hour=self.hour, minute=self.minute, second=self.second,
                           timezone=self.timezone)

    def describe(self) -> str:
        when = "every day" if self.day == "*" else f"every {WEEKDAYS[_DAY_ABBR.index(self.day)]}"
        return f"{when} at {self.hour:02d}:{self.minute:02d}:{self.second:02d} {self.timezone.key}"


_DAY_ABBR = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def schedule_config(settings: Settings, test_at: str | None = None) -> ScheduleConfig:
    """[schedule] validated; every error names the key and the config file."""
    sched = settings["schedule"]
    where = settings.where()
    tz_name = str(sched["timezone"]).strip()
    if not tz_name:
        raise ConfigError(f"[schedule] timezone is not set: set it in {where}, e.g. \"Asia/Shanghai\"")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[schedule] timezone {tz_name!r} is not a known IANA time zone "
                          f"(e.g. \"Asia/Shanghai\"): fix it in {where}") from None
    day_name = str(sched["day"]).strip().lower()
    if day_name in WEEKDAYS:
        day = _DAY_ABBR[WEEKDAYS.index(day_name)]
    elif day_name in _DAY_ABBR:
        day = day_name
    else:
        raise ConfigError(f"[schedule] day {sched['day']!r} is not a weekday: use one of "
                          f"{', '.join(WEEKDAYS)} in {where}")
    hour, minute, second = _clock(str(sched["time"]), f"[schedule] time in {where}", seconds=False)
    if test_at:
        day = "*"
        hour, minute, second = _clock(test_at, "--test-at", seconds=True)
    grace_hours = sched["misfire_grace_hours"]
    if grace_hours < 0:
        raise ConfigError(f"[schedule] misfire_grace_hours must be 0 or more, not {grace_hours}: fix it in {where}")
    jobstore = settings.path("schedule", "jobstore")
    if jobstore is None:
        raise ConfigError(f"[schedule] jobstore is not set: set it in {where}, e.g. \"schedule.db\"")
    # 0 hours = no grace: a run more than a second late is reported missed, not run
    return ScheduleConfig(day, hour, minute, second, tz, max(1, int(grace_hours * 3600)), jobstore)


def _clock(value: str, where: str, *, seconds: bool) -> tuple[int, int, int]:
    parts = value.strip().split(":")
    ok = len(parts) in ((2, 3) if seconds else (2,)) and all(p.isdigit() for p in parts)
    if ok:
        h, m, s = (int(p) for p in [*parts, "0"][:3])
        if h < 24 and m < 60 and s < 60:
            return h, m, s
    form = "HH:MM or HH:MM:SS" if seconds else "HH:MM (24-hour)"
    raise ConfigError(f"{where}: {value!r} is not a time of day; use {form}, e.g. 09:00")


# ---- what is due -------------------------------------------------------------------------------


def publish_time(issue, tz: ZoneInfo) -> dt.datetime | None:
    """An issue's publish_at as an aware datetime (naive = in the schedule's time zone)."""
    if issue.publish_at is None:
        return None
    return issue.publish_at if issue.publish_at.tzinfo else issue.publish_at.replace(tzinfo=tz)


LATE = "max_late_days"  # in the reason of an issue too late to publish automatically


def max_late(settings: Settings) -> dt.timedelta:
    days = settings["schedule"].get("max_late_days", 7)
    if not isinstance(days, int | float) or isinstance(days, bool) or days < 0:
        raise ConfigError(f"[schedule] max_late_days must be a number of days, 0 or more, not {days!r}: "
                          f"fix it in {settings.where()}")
    return dt.timedelta(days=days)


def scan_issues(settings: Settings, tz: ZoneInfo, at: dt.datetime):
    """(path, issue, reason) for every issue file, oldest first; reason is None when it is due.
    A due issue whose publish_at is more than [schedule] max_late_days past is not due: an old
    `ready` issue must not go out by surprise."""
    from .pipeline import issue_files, load

    late = max_late(settings)
    out = []
    for path in reversed(issue_files(settings)):
        try:
            issue, _ = load(path)
        except SourceError as exc:
            out.append((path, None, f"cannot be read: {exc}"))
            continue
        when = publish_time(issue, tz)
        if issue.status != "ready":
            reason = f"status is {issue.status} (only ready issues are published)"
        elif when is None:
            # never guess: an imported archive is all `ready` and must not go out again
            reason = "no publish_at (set it to schedule the issue, or use `publisher push`)"
        elif when > at:
            reason = f"publish_at {when.isoformat()} has not come"
        elif at - when > late:
            reason = (f"publish_at {when.isoformat()} is {(at - when).days} days past, more than "
                      f"[schedule] {LATE} = {settings['schedule'].get('max_late_days', 7)}: not published "
                      f"automatically; publish it by hand with `publisher push {issue.slug} --all` "
                      "(or give it a new publish_at)")
        else:
            reason = None
        out.append((path, issue, reason))
    return out


def run_tick(settings: Settings, *, now: dt.datetime | None = None, progress=None) -> list:
    """Publish every due issue to every enabled channel; return the push reports.
    Raises PublisherError after the whole tick when any channel failed (the job is then
    reported failed; the ledger has the details and the next tick retries). `progress(done,
    total)`: as push_issue's.

    One tick at a time over every host sharing the ledger ([database] url): the tick holds the
    lease ("*", "schedule"); a scheduler on another host that ticks meanwhile skips its tick (the
    issue is then done, or its next tick finds what is left)."""
    from .push import open_ledger
    from .stores.ledger import LeaseHeld

    ledger = open_ledger(settings)
    try:
        lease = ledger.acquire(TICK_LEASE[0], TICK_LEASE[1], command="publisher schedule (tick)")
    except LeaseHeld as exc:
        h = exc.holder
        log.info("another scheduler is running this tick (pid %s on %s, %s): skipped here",
                 h["pid"], h["host"], h["command"])
        return []
    try:
        return _tick(settings, ledger, now=now, progress=progress)
    finally:
        lease.release()


TICK_LEASE = ("*", "schedule")  # the lease a tick holds (the leases table: issue, channel)


def _tick(settings: Settings, ledger, *, now: dt.datetime | None, progress) -> list:
    from .push import is_done, push_issue

    cfg = schedule_config(settings)
    now = now or dt.datetime.now(cfg.timezone)
    channels = settings.enabled_channels
    _bounces(settings)  # before mailing: never mail an address that bounced or complained since
    reports, failures, unreadable = [], [], []
    for path, issue, reason in scan_issues(settings, cfg.timezone, now):
        if issue is None:
            log.error("%s %s", path, reason)
            unreadable.append(path.name)
            continue
        if reason:
            log.log(logging.WARNING if LATE in reason else logging.INFO, "skip %s: %s", issue.slug, reason)
            continue
        pending = [c for c in channels if not is_done(ledger.get(issue.slug, c), c, SCHEDULED_OPTIONS)]
        if not pending:
            log.debug("%s: already done on every channel", issue.slug)
            continue
        log.info("publishing %s to %s", issue.slug, ", ".join(pending))
        try:
            report = push_issue(settings, path, pending, ledger=ledger, options=SCHEDULED_OPTIONS,
                                progress=progress)
        except PublisherError as exc:  # e.g. the file changed since the scan and no longer reads
            log.error("%s: %s", path, exc)
            unreadable.append(path.name)
            continue
        for o in report.outcomes:
            level = logging.ERROR if o.failed else logging.INFO
            log.log(level, "%s %s: %s: %s", issue.slug, o.channel, o.state, o.message)
            if o.failed:
                failures.append(f"{issue.slug}/{o.channel}")
        reports.append(report)
    if reports:
        _bounces(settings)  # after the campaign: the SMTP-time rejections are in; DSNs follow later
    if failures or unreadable:
        raise PublisherError(
            "scheduled run incomplete: "
            + "; ".join(filter(None, [
                f"failed: {', '.join(failures)}" if failures else "",
                f"unreadable: {', '.join(unreadable)}" if unreadable else "",
            ]))
            + " (see `publisher status`; the next run retries)")
    return reports


def _bounces(settings: Settings) -> None:
    """Process bounces and complaints when [bounces] is configured; a failure is logged, not fatal."""
    from .bounces import configured, process_mailboxes

    if not configured(settings):
        return
    try:
        log.info("%s", process_mailboxes(settings).line())
    except PublisherError as exc:
        log.error("bounce processing failed (the next run retries): %s", exc)


def scheduled_tick() -> None:
    """The stored job's function (referred to by name from the job store)."""
    settings = _RUNTIME.get("settings")
    if settings is None:  # pragma: no cover - only if a job runs outside `publisher schedule`
        from .settings import load_settings

        settings = load_settings()
    run_tick(settings)


# ---- the lock ----------------------------------------------------------------------------------


class ScheduleLock:
    """An fcntl lock file beside the job store holding the pid of the daemon that owns the data."""

    def __init__(self, jobstore: Path):
        self.path = jobstore.with_name(jobstore.name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise PublisherError(
                    f"another `publisher schedule` is running (pid {holder} holds the lock {self.path}); "
                    "stop it first, or use a different [schedule] jobstore") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> ScheduleLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- the daemon --------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised in the main thread by the SIGTERM handler to leave scheduler.start()."""


def stored_next_run(jobstore: Path) -> dt.datetime | None:
    """The next run time of our job as the job store has it (None: no store, job or time)."""
    from .stores.jobs import next_run_timestamp

    when = next_run_timestamp(jobstore, JOB_ID)
    return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC)


def build_scheduler(settings: Settings, cfg: ScheduleConfig, scheduler_cls=None):
    """A scheduler with our job (re-)added, keeping a missed run's stored next run time."""
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    cls = scheduler_cls or BlockingScheduler
    cfg.jobstore.parent.mkdir(parents=True, exist_ok=True)
    scheduler = cls(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{cfg.jobstore}")},
        timezone=cfg.timezone,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": cfg.misfire_grace},
    )
    trigger = cfg.trigger()
    now = dt.datetime.now(cfg.timezone)
    kwargs = {}
    stored = stored_next_run(cfg.jobstore)
    if stored is not None and stored <= now:
        # a run came while the daemon was down: keep it, so it fires (once) on start
        kwargs["next_run_time"] = stored.astimezone(cfg.timezone)
        log.info("a run was due at %s while the scheduler was down; it runs now",
                 kwargs["next_run_time"].isoformat())
    scheduler.add_job(JOB_FUNC, trigger, id=JOB_ID, name="publish ready issues", replace_existing=True,
                      coalesce=True, misfire_grace_time=cfg.misfire_grace, max_instances=1, **kwargs)

    def on_event(event):
        if event.code == EVENT_JOB_MISSED:
            log.error("MISSED the run due at %s: the scheduler was down longer than "
                      "[schedule] misfire_grace_hours; run `publisher schedule --once` to publish now",
                      event.scheduled_run_time.isoformat())
        elif event.code == EVENT_JOB_ERROR:
            log.error("FAILED the run due at %s: %s: %s", event.scheduled_run_time.isoformat(),
                      type(event.exception).__name__, event.exception)
        else:
            log.info("run due at %s finished", event.scheduled_run_time.isoformat())

    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    return scheduler


def _setup_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_publisher", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._publisher = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.INFO)


def run_once(settings: Settings, cfg: ScheduleConfig, *, progress=None) -> list:
    """One publishing tick now, under the scheduler's lock (for cron/systemd timers); the reports."""
    _setup_logging()
    _RUNTIME["settings"] = settings
    with ScheduleLock(cfg.jobstore):
        return run_tick(settings, progress=progress)


def run_daemon(settings: Settings, cfg: ScheduleConfig) -> int:
    """Run the scheduler until SIGTERM or Ctrl-C (the job store keeps its next run)."""
    _setup_logging()
    _RUNTIME["settings"] = settings
    with ScheduleLock(cfg.jobstore):
        scheduler = build_scheduler(settings, cfg)

        def on_sigterm(signum, frame):
            raise _Stop()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        log.info("scheduler started (pid %d): %s; job store %s", os.getpid(), cfg.describe(), cfg.jobstore)
        try:
            scheduler.start()
        except (KeyboardInterrupt, _Stop):
            log.info("stopping")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if scheduler.running:
                scheduler.shutdown(wait=True)
            signal.signal(signal.SIGTERM, previous)
        log.info("scheduler stopped")
    return 0


def upcoming(settings: Settings, cfg: ScheduleConfig, count: int = 5):
    """(run time, [(issue slug, channels still to do)], [skipped notes]) for the next runs."""
    from .push import is_done

    trigger = cfg.trigger()
    now = dt.datetime.now(cfg.timezone)
    times = []
    stored = stored_next_run(cfg.jobstore)
    if stored is not None and stored <= now:
        times.append(stored.astimezone(cfg.timezone))
    prev = None
    t = trigger.get_next_fire_time(None, now)
    while t is not None and len(times) < count:
        times.append(t)
        prev = t
        t = trigger.get_next_fire_time(prev, prev + dt.timedelta(seconds=1))
    from .stores import open_ledger as open_existing

    ledger = open_existing(settings, existing=True)
    channels = settings.enabled_channels
    scheduled: set[str] = set()
    noted: set[str] = set()
    rows = []
    for when in times:
        publish, notes = [], []
        for _path, issue, reason in scan_issues(settings, cfg.timezone, when):
            if issue is None or issue.slug in scheduled:
                continue
            todo = [c for c in channels
                    if ledger is None or not is_done(ledger.get(issue.slug, c), c, SCHEDULED_OPTIONS)]
            if not todo:
                continue
            if reason is None:
                publish.append((issue.slug, todo))
                scheduled.add(issue.slug)
            elif (issue.status != "ready" or issue.publish_at is None or LATE in reason) \
                    and issue.slug not in noted:
                notes.append(f"{issue.slug}: {reason}")
                noted.add(issue.slug)
        rows.append((when, publish, notes))
    return rows
