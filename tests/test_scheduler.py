"""`publisher schedule`: a real daemon (a subprocess) with a trigger a few seconds ahead."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from publisher.cli import main
from publisher.errors import ConfigError
from publisher.scheduler import build_scheduler, schedule_config, stored_next_run
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from tests.push_support import add_config, write_issue

CHANNELS = ["zhihu", "plaintext"]


@pytest.fixture
def sched_project(project):
    add_config(project, """
[channels]
enabled = ["zhihu", "plaintext"]

[schedule]
day = "monday"
time = "09:00"
timezone = "UTC"
misfire_grace_hours = 1
max_late_days = 3650
jobstore = "state/schedule.db"
""")
    return project


def at_in(seconds: float) -> tuple[str, dt.datetime]:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).replace(microsecond=0)
    return when.strftime("%H:%M:%S"), when


class Daemon:
    def __init__(self, project: Path, test_at: str):
        env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_CONFIG"}
        self.log = project / f"daemon-{time.monotonic_ns()}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - lives as long as the daemon
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "publisher.cli", "schedule", "--test-at", test_at],
            cwd=project, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc.poll() is None, f"daemon exited early:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen within {timeout}s:\n{self.output()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self._out.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def attempts(project: Path, slug: str) -> dict[str, tuple[str, int]]:
    return {r.channel: (r.state, r.attempts) for r in Ledger(project / "publisher.db").records(slug)}


def test_daemon_publishes_ready_skips_draft_refuses_second_instance_stops_on_sigterm(sched_project, daemons):
    issues = sched_project / "issues"
    write_issue(issues, "2026-01-05", status="ready")
    write_issue(issues, "2026-01-12", status="draft")
    test_at, _ = at_in(7)
    daemon = Daemon(sched_project, test_at)
    daemons.append(daemon)
    daemon.wait_for("Scheduler started")

    # a second instance on the same data refuses, naming the pid that holds the lock
    second = subprocess.run([sys.executable, "-m", "publisher.cli", "schedule"], cwd=sched_project,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"pid {daemon.proc.pid} holds the lock" in second.stderr
    assert "Traceback" not in second.stderr
    # --once takes the same lock
    once = subprocess.run([sys.executable, "-m", "publisher.cli", "schedule", "--once"], cwd=sched_project,
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 1 and f"pid {daemon.proc.pid}" in once.stderr

    daemon.wait_for("finished", timeout=30)
    outbox = sched_project / "outbox"
    assert sorted(p.name for p in (outbox / "2026-01-05").iterdir()) == ["plaintext.txt", "zhihu.md"]
    assert not (outbox / "2026-01-12").exists()
    assert "skip 2026-01-12: status is draft" in daemon.output()
    assert attempts(sched_project, "2026-01-05") == {"zhihu": ("done", 1), "plaintext": ("done", 1)}
    assert attempts(sched_project, "2026-01-12") == {}

    assert daemon.stop() == 0
    assert "scheduler stopped" in daemon.output()
    assert "Traceback" not in daemon.output()
    # the lock is free again
    assert (sched_project / "state" / "schedule.db.lock").read_text() == ""


def test_run_missed_while_down_fires_exactly_once_on_restart(sched_project, daemons):
    write_issue(sched_project / "issues", "2026-01-05", status="ready")
    test_at, when = at_in(8)
    first = Daemon(sched_project, test_at)
    daemons.append(first)
    first.wait_for("Scheduler started")
    jobstore = sched_project / "state" / "schedule.db"
    assert stored_next_run(jobstore) == when
    assert first.stop() == 0

    # the run time passes while the daemon is down
    while dt.datetime.now(dt.UTC) < when + dt.timedelta(seconds=1.5):
        time.sleep(0.2)
    assert not (sched_project / "outbox").exists()

    second = Daemon(sched_project, test_at)
    daemons.append(second)
    second.wait_for("finished", timeout=30)
    assert "while the scheduler was down" in second.output()
    time.sleep(1.5)  # give a (wrong) second run the chance to happen
    assert second.stop() == 0
    assert second.output().count("publishing 2026-01-05") == 1
    assert attempts(sched_project, "2026-01-05") == {"zhihu": ("done", 1), "plaintext": ("done", 1)}
    # the job store now points at the next day's run, not the missed one
    assert stored_next_run(jobstore) == when + dt.timedelta(days=1)

    # a third start (and a manual tick) publish nothing again: the ledger says done
    third = Daemon(sched_project, test_at)
    daemons.append(third)
    third.wait_for("Scheduler started")
    assert third.stop() == 0
    assert "publishing" not in third.output()
    assert main(["schedule", "--once"]) == 0
    assert attempts(sched_project, "2026-01-05") == {"zhihu": ("done", 1), "plaintext": ("done", 1)}


def test_missed_beyond_grace_is_logged_not_run(sched_project, caplog):
    from apscheduler.schedulers.background import BackgroundScheduler

    write_issue(sched_project / "issues", "2026-01-05", status="ready")
    settings = load_settings()
    cfg = schedule_config(settings)
    cfg = type(cfg)(**{**cfg.__dict__, "misfire_grace": 1})
    # a stored job whose run came 30 s ago (beyond the 1 s grace)
    scheduler = build_scheduler(settings, cfg, BackgroundScheduler)
    scheduler.start(paused=True)
    scheduler.shutdown()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).replace(microsecond=0)
    with sqlite3.connect(cfg.jobstore) as conn:
        conn.execute("UPDATE apscheduler_jobs SET next_run_time = ?", (past.timestamp(),))
    assert stored_next_run(cfg.jobstore) == past

    caplog.set_level(logging.INFO)
    scheduler = build_scheduler(settings, cfg, BackgroundScheduler)
    scheduler.start()
    deadline = time.monotonic() + 10
    while "MISSED" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    scheduler.shutdown()
    assert "MISSED the run due at" in caplog.text
    assert not (sched_project / "outbox").exists()


def test_tick_publishes_due_issues_only(sched_project, capsys):
    issues = sched_project / "issues"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    write_issue(issues, "2026-01-05", status="ready", publish_at="2026-01-05T09:00:00")  # naive: UTC
    write_issue(issues, "2026-01-12", status="ready", publish_at=future + "+00:00")
    write_issue(issues, "2026-01-19", status="ready")  # publish_at 2026-01-19T08:00+08:00: due
    write_issue(issues, "2026-01-22", status="ready", publish_at="")  # none: never scheduled
    write_issue(issues, "2026-01-26", status="draft")

    assert main(["schedule", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "2026-01-05 → zhihu, plaintext" in listing and "2026-01-26: status is draft" in listing
    assert "no publish_at" in listing

    assert main(["schedule", "--once"]) == 0
    published = sorted(p.name for p in (sched_project / "outbox").iterdir())
    assert published == ["2026-01-05", "2026-01-19"]
    assert "published 2 issue(s)" in capsys.readouterr().out


def test_failed_channel_fails_the_tick_and_is_retried(sched_project, capsys):
    text = (sched_project / "publisher.toml").read_text().replace(
        'enabled = ["zhihu", "plaintext"]', 'enabled = ["zhihu", "plaintext", "github"]')
    (sched_project / "publisher.toml").write_text(text + '\n[github]\nrepo_path = "nowhere"\n')
    write_issue(sched_project / "issues", "2026-01-05", status="ready")
    assert main(["schedule", "--once"]) == 1
    err = capsys.readouterr().err
    assert "scheduled run incomplete: failed: 2026-01-05/github" in err
    assert main(["schedule", "--once"]) == 1
    assert attempts(sched_project, "2026-01-05") == {
        "zhihu": ("done", 1), "plaintext": ("done", 1), "github": ("failed", 2)}


@pytest.mark.parametrize("table, key", [
    ('day = "someday"', "[schedule] day"),
    ('time = "9am"', "[schedule] time"),
    ('timezone = "Mars/Olympus"', "[schedule] timezone"),
    ('timezone = ""', "[schedule] timezone"),
])
def test_schedule_config_errors_name_the_key_and_file(project, table, key, capsys):
    add_config(project, f"[schedule]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        schedule_config(load_settings())
    assert key in str(info.value) and str(project / "publisher.toml") in str(info.value)
    assert main(["schedule", "--list"]) == 1
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err


def test_issue_older_than_max_late_days_is_not_published_and_says_how(sched_project, capsys, caplog):
    text = (sched_project / "publisher.toml").read_text().replace("max_late_days = 3650", "max_late_days = 7")
    (sched_project / "publisher.toml").write_text(text)
    today = dt.datetime.now(dt.UTC)
    old = (today - dt.timedelta(days=150)).strftime("%Y-%m-%d")
    recent = (today - dt.timedelta(days=2)).strftime("%Y-%m-%d")
    write_issue(sched_project / "issues", old, status="ready", publish_at=f"{old}T08:00:00+00:00")
    write_issue(sched_project / "issues", recent, status="ready", publish_at=f"{recent}T08:00:00+00:00")

    assert main(["schedule", "--list"]) == 0
    listing = capsys.readouterr().out
    flat = re.sub(r"[\s│]", "", listing)  # the table wraps long notes
    assert f"{old}:publish_at" in flat and "max_late_days=7" in flat
    assert f"publisherpush{old}--all" in flat
    caplog.set_level(logging.INFO)
    assert main(["schedule", "--once"]) == 0
    assert sorted(p.name for p in (sched_project / "outbox").iterdir()) == [recent]
    assert any(r.levelno == logging.WARNING and "max_late_days" in r.getMessage() and old in r.getMessage()
               for r in caplog.records)
    # by hand it goes out
    assert main(["push", old, "--all"]) == 0
    assert sorted(p.name for p in (sched_project / "outbox").iterdir()) == sorted([old, recent])


def test_max_late_days_must_be_a_number(sched_project, capsys):
    text = (sched_project / "publisher.toml").read_text().replace("max_late_days = 3650", "max_late_days = -1")
    (sched_project / "publisher.toml").write_text(text)
    write_issue(sched_project / "issues", "2026-01-05", status="ready")
    assert main(["schedule", "--once"]) == 1
    err = capsys.readouterr().err
    assert "[schedule] max_late_days" in err and "Traceback" not in err


def test_schedule_once_racing_a_push_refuses_naming_the_holder(sched_project, tmp_path):
    """A `publisher push` paused inside its outbox write (holding the lease) and a
    `schedule --once` started meanwhile: the scheduler refuses the busy channels naming the
    holder, exits 1, writes nothing; after the push finishes a second tick has nothing to do."""
    write_issue(sched_project / "issues", "2026-01-05", status="ready")
    pause = tmp_path / "paused"
    env = {**os.environ, "PUBLISHER_PAUSE_AT": "push:zhihu", "PUBLISHER_PAUSE_FILE": str(pause)}
    env.pop("PUBLISHER_CONFIG", None)
    pusher = subprocess.Popen([sys.executable, "-m", "publisher", "push", "2026-01-05", "-c", "zhihu"],
                              cwd=sched_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not pause.exists() and time.monotonic() < deadline:
            assert pusher.poll() is None, pusher.communicate()
            time.sleep(0.05)
        assert pause.exists()
        env2 = {k: v for k, v in os.environ.items() if k not in ("PUBLISHER_PAUSE_AT", "PUBLISHER_CONFIG")}
        tick = subprocess.run([sys.executable, "-m", "publisher", "schedule", "--once"], cwd=sched_project,
                              env=env2, capture_output=True, text=True, timeout=120)
        assert tick.returncode == 1
        assert f"being sent by another process: pid {pusher.pid}" in tick.stderr
        assert "2026-01-05/zhihu" in tick.stderr
        assert not (sched_project / "outbox" / "2026-01-05" / "zhihu.md").exists()
        assert (sched_project / "outbox" / "2026-01-05" / "plaintext.txt").exists()  # not leased: done
    finally:
        pusher.kill()
        pusher.wait()
    # the holder was killed mid-write: its lease is taken over at once (dead pid on this host)
    assert main(["schedule", "--once"]) == 0
    assert (sched_project / "outbox" / "2026-01-05" / "zhihu.md").exists()
    assert attempts(sched_project, "2026-01-05") == {"zhihu": ("done", 2), "plaintext": ("done", 1)}
