"""The (issue, channel) lease in the ledger: one sender at a time, dead or silent holders taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from publisher.stores import ledger as ledger_mod
from publisher.stores.ledger import LeaseHeld, Ledger


def _foreign(ledger: Ledger, *, host: str, pid: int, heartbeat: float) -> None:
    with ledger.transaction() as conn:
        conn.execute("DELETE FROM leases WHERE issue = '2026-11-23' AND channel = 'email'")
        conn.execute("INSERT INTO leases VALUES ('2026-11-23', 'email', 'tok', ?, ?, '', "
                     "'publisher push 2026-11-23', '2026-11-23T01:00:00+00:00', ?)", (pid, host, heartbeat))


@pytest.fixture
def where(tmp_path, db_url):
    """The ledger on both backends: a SQLite file, or a PostgreSQL database."""
    return db_url or tmp_path / "l.db"


def test_second_acquire_refuses_naming_the_holder_and_release_frees_it(where):
    ledger = Ledger(where)
    lease = ledger.acquire("2026-11-23", "email")
    with pytest.raises(LeaseHeld) as info:
        Ledger(where).acquire("2026-11-23", "email")
    assert f"pid {os.getpid()}" in str(info.value) and "publisher status 2026-11-23" in str(info.value)
    Ledger(where).acquire("2026-11-23", "wechat").release()  # another channel is free
    lease.release()
    Ledger(where).acquire("2026-11-23", "email").release()
    assert ledger.leases() == []


def test_dead_holder_on_this_host_is_taken_over_at_once(where):
    ledger = Ledger(where)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer runs
    _foreign(ledger, host=ledger_mod._HOST, pid=child.pid, heartbeat=time.time())
    ledger.acquire("2026-11-23", "email").release()


def test_live_holder_elsewhere_refuses_until_its_heartbeat_is_stale(where):
    ledger = Ledger(where)
    _foreign(ledger, host="other-host", pid=1, heartbeat=time.time())
    with pytest.raises(LeaseHeld, match="pid 1 on other-host"):
        ledger.acquire("2026-11-23", "email")
    _foreign(ledger, host="other-host", pid=1, heartbeat=time.time() - ledger_mod.LEASE_STALE - 1)
    ledger.acquire("2026-11-23", "email").release()


def test_a_holder_whose_lease_was_taken_over_learns_it(where, monkeypatch):
    monkeypatch.setattr(ledger_mod, "LEASE_BEAT", 0.05)
    ledger = Ledger(where)
    lease = ledger.acquire("2026-11-23", "email")
    _foreign(ledger, host="other-host", pid=1, heartbeat=time.time())  # someone took it over
    assert lease.lost.wait(5)
    lease.release()  # releases nothing of the new holder's
    assert [r["host"] for r in ledger.leases()] == ["other-host"]
