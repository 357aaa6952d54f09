"""Shared campaigns (team mode): `publisher worker` processes on one campaign, against a
latency-bound SMTP sink, on PostgreSQL and on SQLite.

    python bench/workers.py                       # 4,000 recipients, 20 ms per message, 4 connections
    python bench/workers.py --n 100000 --rss 100000,1000000
    python bench/workers.py --n 0 --rss 100000,1000000     # the RSS runs alone

The sink answers every message's final dot after --delay seconds (a provider's latency: the
senders wait, the CPU does not) and counts what it accepts. `--sink pipelining` (the default) is
a lean asyncio SMTP server in this process that offers PIPELINING, as Postfix and the big
providers do: about 0.2 ms of CPU a message. `--sink aiosmtpd` is aiosmtpd, which reads DATA a
line at a time and offers no PIPELINING: about 1.4 ms a message, 40 % of all the CPU a message
costs here, on the same two cores as the workers and PostgreSQL — it measures the sink as much
as the workers. (Postfix's smtp-sink delays only in whole seconds.) Each run writes a new
campaign (the recipients as rows, as `publisher push` does in team mode), starts K
`publisher worker --once` processes and measures the rate between the first and the last message
accepted (worker start-up excluded). Printed, all in one run:

- 1, 2 and 4 workers on PostgreSQL (goals: ≥ 1.8× and ≥ 3.2× over one worker);
- one worker on SQLite vs one on PostgreSQL (goal: PostgreSQL ≥ 80 %);
- peak RSS of one worker (its VmHWM, read by the worker process itself as it exits: os.wait4's
  ru_maxrss would carry this benchmark's own size across fork + exec) for each size in --rss, sink
  without delay (goal: flat, ≤ 60 MB), beside an idle worker's (the imports alone) as baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Session(asyncio.Protocol):
    """One SMTP session of PipeliningSink: replies in order, the final dot's after the delay."""

    def __init__(self, sink: PipeliningSink):
        self.sink, self.buf, self.data = sink, b"", False
        self.out: collections.deque = collections.deque()  # (time due, reply), in order
        self.due, self.timer = 0.0, None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.reply(b"220 sink ESMTP\r\n")

    def reply(self, text: bytes, delay: float = 0.0) -> None:
        loop = self.sink.loop
        self.due = max(self.due, loop.time() + delay)  # never ahead of an earlier, delayed reply
        self.out.append((self.due, text))
        if self.timer is None:
            self.timer = loop.call_at(self.out[0][0], self.flush)

    def flush(self) -> None:
        self.timer, now = None, self.sink.loop.time()
        while self.out and self.out[0][0] <= now:
            text = self.out.popleft()[1]
            if not self.transport.is_closing():
                self.transport.write(text)
            if text.startswith(b"221"):
                self.transport.close()
        if self.out:
            self.timer = self.sink.loop.call_at(self.out[0][0], self.flush)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.data:  # the message is discarded; only its end matters
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    self.buf = self.buf[-4:]  # an end may straddle two reads
                    return
                self.buf, self.data = self.buf[end + 5:], False
                self.sink.accepted()
                self.reply(b"250 2.0.0 queued\r\n", self.sink.delay)
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            verb, self.buf = self.buf[:4].upper(), self.buf[end + 2:]
            if verb == b"EHLO":
                self.reply(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.reply(b"354 go ahead\r\n")
                self.data, self.buf = True, b"\r\n" + self.buf  # a message may be empty
            elif verb == b"QUIT":
                self.reply(b"221 bye\r\n")
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                self.reply(b"250 ok\r\n")


class PipeliningSink:
    """A lean SMTP sink with PIPELINING on 127.0.0.1 (its own thread and event loop); `delay`
    seconds before each final dot's reply."""

    def __init__(self, delay: float):
        self.delay, self.count, self.first, self.last = delay, 0, None, None
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve() -> None:
            self.server = await self.loop.create_server(lambda: _Session(self), "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(serve()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise SystemExit("the benchmark's SMTP sink did not start on 127.0.0.1 within 10 s")

    def accepted(self) -> None:
        now = time.monotonic()
        self.count += 1
        self.first = self.first or now
        self.last = now

    def reset(self) -> None:
        self.count, self.first, self.last = 0, None, None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Sink:
    """aiosmtpd, no TLS, no AUTH, no PIPELINING; `delay` seconds before each DATA reply."""

    def __init__(self, delay: float):
        from aiosmtpd.controller import Controller

        from tests.email_support import free_port

        self.delay, self.count, self.first, self.last = delay, 0, None, None
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        now = time.monotonic()
        with self.lock:
            self.count += 1
            self.first = self.first or now
            self.last = now
        return "250 2.0.0 queued"

    def reset(self) -> None:
        with self.lock:
            self.count, self.first, self.last = 0, None, None

    def stop(self) -> None:
        self.controller.stop()


def project(folder: Path, port: int, url: str, connections: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "publisher.toml").write_text(f"""
[paths]
ledger = "publisher.db"
[database]
url = "{url}"
[email]
from_address = "news@example.org"
list_id = "embedded-ai.example.org"
unsubscribe_url = "https://news.example.org/unsubscribe?token={{token}}"
subscribers_db = "subscribers.db"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = {connections}
timeout = 30
""", encoding="utf-8")
    return folder


def start_campaign(folder: Path, n: int, template) -> None:
    from publisher import campaign as shared
    from publisher.settings import load_settings
    from publisher.stores import open_ledger, open_subscribers

    settings = load_settings(folder / "publisher.toml")
    subs = open_subscribers(settings)
    for i in range(0, n, 10_000):
        subs.add_many([(f"r{j:07d}@example.com", "", "") for j in range(i, min(n, i + 10_000))])
    shared.start(open_ledger(settings), subs, template, template.issue)


# `publisher worker --once`, printing the process's own peak RSS (VmHWM, kB) as its last stderr line
WORKER = """
import atexit, sys
atexit.register(lambda: print("VmHWM", next(l for l in open("/proc/self/status")
                                          if l.startswith("VmHWM")).split()[1], file=sys.stderr))
from publisher.cli import main
sys.exit(main(["worker", "--once"]))
"""


def run_workers(folder: Path, k: int, sink: Sink) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_UNSUBSCRIBE_SECRET": "bench-secret"}
    env.pop("PUBLISHER_CONFIG", None)
    sink.reset()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(k)]
    rss = []
    for p in procs:
        _, err = p.communicate()
        lines = err.decode().strip().splitlines()
        if p.returncode or not lines or not lines[-1].startswith("VmHWM"):
            raise SystemExit(f"worker failed: {err.decode()[-2000:]}")
        rss.append(int(lines[-1].split()[1]) / 1024)
    span = (sink.last - sink.first) if sink.count > 1 else 0.0
    return {"workers": k, "sent": sink.count, "rate": round((sink.count - 1) / span, 1) if span else None,
            "peak_rss_mb": round(max(rss), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--delay", type=float, default=0.02)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rss", default="5000,50000", help="recipient counts for the RSS runs")
    ap.add_argument("--sink", choices=("pipelining", "aiosmtpd"), default="pipelining")
    args = ap.parse_args()

    from publisher.mailmsg import build_template
    from publisher.pipeline import load, render
    from publisher.settings import load_settings
    from tests.pg_support import PgCluster

    os.environ["PUBLISHER_UNSUBSCRIBE_SECRET"] = "bench-secret"
    cluster = PgCluster()
    sink = PipeliningSink(args.delay) if args.sink == "pipelining" else Sink(args.delay)
    out: dict = {"n": args.n, "delay_ms": args.delay * 1000, "connections_per_worker": args.connections,
                 "sink": args.sink}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            base = project(Path(tmp) / "base", sink.port, "", args.connections)
            settings = load_settings(base / "publisher.toml")
            issue, _ = load(ROOT / "examples" / "neuraltalk" / "issues" / "2026-11-23.md")
            template = build_template(render(issue, "email", settings), settings)
            runs = []
            for k in (1, 2, 4) if args.n else ():  # --n 0: the RSS runs alone
                folder = project(Path(tmp) / f"pg{k}", sink.port, cluster.create_db(), args.connections)
                start_campaign(folder, args.n, template)
                runs.append(run_workers(folder, k, sink))
                print(json.dumps(runs[-1]), flush=True)
            if runs:
                one = runs[0]["rate"]
                out["postgresql"] = runs
                out["speedup_2"] = round(runs[1]["rate"] / one, 2)
                out["speedup_4"] = round(runs[2]["rate"] / one, 2)
                folder = project(Path(tmp) / "sqlite1", sink.port, "", args.connections)
                start_campaign(folder, args.n, template)
                lite = run_workers(folder, 1, sink)
                print(json.dumps(lite), flush=True)
                out["sqlite_1"] = lite
                out["pg_vs_sqlite_1_worker"] = round(one / lite["rate"], 2)
            sink.delay = 0.0
            idle = project(Path(tmp) / "idle", sink.port, cluster.create_db(), args.connections)
            out["idle_worker_rss_mb"] = run_workers(idle, 1, sink)["peak_rss_mb"]  # no campaign: the imports
            print(json.dumps({"idle_worker_rss_mb": out["idle_worker_rss_mb"]}), flush=True)
            out["rss"] = []
            for n in [int(x) for x in args.rss.split(",") if x]:
                folder = project(Path(tmp) / f"rss{n}", sink.port, cluster.create_db(), args.connections)
                start_campaign(folder, n, template)
                r = run_workers(folder, 1, sink)
                out["rss"].append({"n": n, "peak_rss_mb": r["peak_rss_mb"], "rate": r["rate"]})
                print(json.dumps(out["rss"][-1]), flush=True)
    finally:
        sink.stop()
        cluster.destroy()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
