"""Team mode on PostgreSQL (issue 22): processes on different hosts share one truth.

A "host" here is a process with its own PUBLISHER_HOST identity and its own project folder,
all pointing [database] url at one PostgreSQL database: the pid check of a lease is valid only
on the same host, so a lease left by another host is taken over only after its heartbeat stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from publisher.stores.ledger import Ledger
from tests.conftest import EXAMPLES
from tests.test_wechat_push import APP_ID, DRAFT_ADD, ISSUE, SECRET, SUBMIT
from tests.wechat_server import WeChatServer


def _host(root: Path, name: str, server: WeChatServer, url: str) -> Path:
    folder = root / name
    shutil.copytree(EXAMPLES / "issues", folder / "issues")
    (folder / "publisher.toml").write_text(
        f'[paths]\nissues = "issues"\nout = "build"\n[database]\nurl = "{url}"\n'
        f'[wechat]\napp_id = "{APP_ID}"\napi_base = "{server.url}"\npublish_poll_seconds = 10\n'
        '[newsletter]\nqr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n',
        encoding="utf-8")
    return folder


def _push(folder: Path, host: str, *args: str, pause_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "PUBLISHER_HOST": host, "PUBLISHER_WECHAT_SECRET": SECRET}
    env.pop("PUBLISHER_CONFIG", None)
    if pause_at:
        env.update(PUBLISHER_PAUSE_AT=pause_at, PUBLISHER_PAUSE_FILE=str(folder / "paused"))
    return subprocess.Popen([sys.executable, "-m", "publisher", "push", ISSUE, "--channel", "wechat",
                             "--publish", *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_hosts_racing_the_same_wechat_push_make_one_draft(tmp_path, pg_cluster):
    report = []
    for trial in range(4):
        url = pg_cluster.create_db()
        with WeChatServer() as srv:
            srv.state.publish_seconds = 0.2
            a, b = (_host(tmp_path / f"t{trial}", h, srv, url) for h in ("host-a", "host-b"))
            procs = [_push(a, "host-a"), _push(b, "host-b")]
            outs = [p.communicate(timeout=120)[0] for p in procs]
            report.append((srv.count(DRAFT_ADD), srv.count(SUBMIT), [p.returncode for p in procs]))
            assert srv.count(DRAFT_ADD) == 1 and srv.count(SUBMIT) <= 1, (report[-1], outs)
            assert any(p.returncode == 0 for p in procs), outs
            for p, out in zip(procs, outs, strict=True):  # the loser says who holds it, or finds it done
                assert p.returncode == 0 or ("being sent by another process" in out and "on host-" in out), out
            # whichever lost, a re-run from either host completes without a second draft
            again = _push(b, "host-b")
            out = again.communicate(timeout=120)[0]
            assert again.returncode == 0, out
            assert srv.count(DRAFT_ADD) == 1 and srv.count(SUBMIT) == 1 and len(srv.state.published) == 1
    print("\ntwo-host races (draft_add, submit, exit codes):", report)


@pytest.mark.slow
def test_a_lease_left_on_another_host_waits_for_its_heartbeat_then_is_taken_over(tmp_path, pg_cluster):
    url = pg_cluster.create_db()
    with WeChatServer() as srv:
        srv.state.publish_seconds = 0.2
        a, b = _host(tmp_path, "host-a", srv, url), _host(tmp_path, "host-b", srv, url)
        child = _push(a, "host-a", pause_at="wechat:after-draft-add")
        deadline = time.monotonic() + 60
        while not (a / "paused").exists():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        child.kill()  # host A dies after draft/add, before the ledger knows the draft
        child.wait()
        # host B cannot check host A's pid: A's lease holds until its heartbeat is stale
        busy = _push(b, "host-b")
        out = busy.communicate(timeout=120)[0]
        assert busy.returncode != 0, out
        assert f"pid {child.pid} on host-a" in out and "push" in out, out
        assert srv.count(DRAFT_ADD) == 1
        ledger = Ledger(url)
        with ledger.transaction() as conn:  # a minute passes without a heartbeat
            conn.execute("UPDATE leases SET heartbeat = heartbeat - 3600")
        done = _push(b, "host-b")
        out = done.communicate(timeout=120)[0]
        assert done.returncode == 0, out
        assert srv.count(DRAFT_ADD) == 1 and srv.count(SUBMIT) == 1 and len(srv.state.published) == 1
        assert ledger.leases() == []


@pytest.mark.slow
def test_schedulers_on_two_hosts_publish_each_tick_once(tmp_path, pg_cluster):
    from tests.push_support import write_issue

    for trial in range(3):
        url = pg_cluster.create_db()
        hosts = []
        for name in ("host-a", "host-b"):
            folder = tmp_path / f"t{trial}" / name
            write_issue(folder / "issues", "2026-01-05", status="ready")
            (folder / "publisher.toml").write_text(
                f'[paths]\nissues = "issues"\n[database]\nurl = "{url}"\n[channels]\nenabled = ["zhihu", '
                '"plaintext"]\n[schedule]\nday = "monday"\ntime = "09:00"\ntimezone = "UTC"\n'
                'misfire_grace_hours = 1\nmax_late_days = 3650\njobstore = "schedule.db"\n', encoding="utf-8")
            hosts.append(folder)
        env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_CONFIG"}
        procs = [subprocess.Popen([sys.executable, "-m", "publisher", "schedule", "--once"], cwd=f,
                                  env={**env, "PUBLISHER_HOST": f.name}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for f in hosts]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        rows = {r.channel: r.attempts for r in Ledger(url).records("2026-01-05")}
        assert rows == {"zhihu": 1, "plaintext": 1}, (rows, outs)  # one tick published, once
        published = [f.name for f in hosts if (f / "outbox" / "2026-01-05").exists()]
        assert len(published) == 1, outs
        # a later tick on the other host finds the issue done everywhere: nothing happens
        other = next(f for f in hosts if f.name not in published)
        late = subprocess.run([sys.executable, "-m", "publisher", "schedule", "--once"], cwd=other,
                              env={**env, "PUBLISHER_HOST": other.name}, capture_output=True, text=True)
        assert late.returncode == 0, late.stderr
        assert {r.channel: r.attempts for r in Ledger(url).records("2026-01-05")} == rows
        assert not (other / "outbox" / "2026-01-05").exists()
