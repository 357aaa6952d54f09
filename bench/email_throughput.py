"""Email delivery throughput against Postfix's smtp-sink, compared with Postfix's smtp-source.

    python bench/email_throughput.py                 # 10,000 recipients, ~20 KB, 4 connections
    python bench/email_throughput.py --n 2000 --rss-n 0

Both senders deliver the same number of ~20 KB messages over the same number of SMTP sessions,
reusing connections (`smtp-source -d`), to one smtp-sink on 127.0.0.1. Ours runs the real
campaign (personalised message per recipient, ledger rows `sending` → `sent` committed per
message, subscribers streamed from SQLite) in a child process; its rate is sent / campaign time.
Then a run with --rss-n recipients (default 100,000) in a child process reports its peak RSS
(its VmHWM, read by the child itself: os.wait4's ru_maxrss would carry this benchmark's size
across fork + exec). Also printed: the measured ambiguous window (time from the
`sending` commit to the `sent` commit, which includes the server's reply to the final dot) and
the part we control (250 received → `sent` committed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"

CHILD = r"""
import json, sys, time
from publisher.channels.base import Rendition
from publisher.stores.ledger import Ledger
from publisher.settings import load_settings
from publisher.transports.email import run_campaign
settings = load_settings(sys.argv[1])
rendition = Rendition(**json.loads(open(sys.argv[2], encoding="utf-8").read()))
ledger = Ledger(settings.path("paths", "ledger"))
with ledger.acquire(rendition.issue, "email") as lease:  # as `publisher push` does: lease + heartbeat
    stats = run_campaign(rendition, settings, ledger, lease=lease)
w, a = stats.windows, stats.accept_to_commit
pct = lambda d, p: d.quantile(p) * 1000 if d else None
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({"sent": stats.sent, "elapsed": stats.elapsed, "remaining": stats.remaining, "peak_rss_kb": hwm,
                  "failed": stats.failed, "faults": stats.faults, "aborted": stats.aborted,
                  "window_ms": {"p50": pct(w, .5), "p99": pct(w, .99), "max": pct(w, 1)},
                  "accept_to_commit_ms": {"p50": pct(a, .5), "p99": pct(a, .99), "max": pct(a, 1)}}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"smtp-sink did not start on port {port}")


def make_rendition(size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from publisher import pipeline
    from publisher.settings import load_settings

    settings = load_settings(ROOT / "config" / "default.toml")
    issue, _ = pipeline.load(ROOT / "examples" / "neuraltalk" / "issues" / "2026-11-23.md")
    r = pipeline.render(issue, "email", settings)
    text = r.parts[f"{r.issue}.txt"]
    body = r.body
    # pad the HTML to about `size` bytes of message (QP grows CJK text ~3x; pad with ASCII)
    from publisher.mailmsg import sample_eml

    current = len(sample_eml(r, settings))
    if current < size:
        filler = "<p>" + ("Embedded AI newsletter benchmark padding text. " * 40) + "</p>\n"
        pad = "".join(filler for _ in range((size - current) // len(filler) + 1))[: size - current]
        body = body.replace("</body>", pad + "</body>") if "</body>" in body else body + pad
    return {"channel": r.channel, "issue": r.issue, "body": body, "media_type": r.media_type,
            "filename": r.filename, "metadata": dict(r.metadata), "parts": {f"{r.issue}.txt": text}}


def project(folder: Path, port: int, n: int, connections: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from publisher.subscribers import SubscriberDB

    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "publisher.toml"
    cfg.write_text(f"""
[paths]
ledger = "publisher.db"
[email]
from_address = "news@example.org"
unsubscribe_url = "https://example.org/unsubscribe?token={{token}}"
subscribers_db = "subscribers.db"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = {connections}
max_retries = 3
""", encoding="utf-8")
    db = SubscriberDB(folder / "subscribers.db")
    batch = []
    for i in range(n):
        batch.append((f"reader{i:07d}@example.com", f"Reader {i}", ""))
        if len(batch) == 5000:
            db.add_many(batch)
            batch = []
    if batch:
        db.add_many(batch)
    return cfg


def run_child(cfg: Path, rendition: Path) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_UNSUBSCRIBE_SECRET": "bench-secret"}
    env.pop("PUBLISHER_CONFIG", None)
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg), str(rendition)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    _, status, usage = os.wait4(p.pid, 0) if p.returncode is None else (0, 0, None)
    if p.returncode != 0:
        raise SystemExit(f"campaign child failed:\n{err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage


def peak_rss_mb(cfg: Path, rendition: Path) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_UNSUBSCRIBE_SECRET": "bench-secret"}
    env.pop("PUBLISHER_CONFIG", None)
    pid = os.fork()
    if pid == 0:  # child: exec the campaign, output to a file
        fd = os.open(str(cfg.parent / "out.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.execve(sys.executable, [sys.executable, "-c", CHILD, str(cfg), str(rendition)], env)
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit("RSS child failed")
    result = json.loads((cfg.parent / "out.json").read_text().strip().splitlines()[-1])
    return result, result["peak_rss_kb"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rss-n", type=int, default=100_000, help="recipients for the RSS run (0 = skip)")
    args = ap.parse_args()
    if not (os.path.exists(SINK) and os.path.exists(SOURCE)):
        print(f"skipped: Postfix's smtp-sink/smtp-source not found ({SINK}, {SOURCE}); apt-get install postfix")
        return
    port = free_port()
    sink_cmd = [SINK, "-c", f"127.0.0.1:{port}", "256"]
    if os.geteuid() == 0:
        sink_cmd[1:1] = ["-u", "nobody"]
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with tempfile.TemporaryDirectory(prefix="email-bench-") as tmp:
            tmp = Path(tmp)
            rendition = tmp / "rendition.json"
            rendition.write_text(json.dumps(make_rendition(args.size), ensure_ascii=False), encoding="utf-8")
            cfg = project(tmp / "run", port, args.n, args.connections)
            sys.path.insert(0, str(ROOT))
            from publisher.channels.base import Rendition

            from publisher.mailmsg import sample_eml
            from publisher.settings import load_settings

            size = len(sample_eml(Rendition(**json.loads(rendition.read_text())), load_settings(cfg)))
            ours, _ = run_child(cfg, rendition)
            if ours["sent"] != args.n:
                raise SystemExit(f"campaign sent {ours['sent']} of {args.n}: {ours}")
            ours_rate = ours["sent"] / ours["elapsed"]

            t0 = time.monotonic()
            subprocess.run([SOURCE, "-d", "-s", str(args.connections), "-m", str(args.n), "-l", str(size),
                            "-f", "news@example.org", "-t", "reader@example.com", f"127.0.0.1:{port}"],
                           check=True, stdout=subprocess.DEVNULL)
            src_rate = args.n / (time.monotonic() - t0)

            print(f"messages: {args.n} x {size} bytes, {args.connections} SMTP sessions, smtp-sink on 127.0.0.1")
            print(f"publisher (personalised, ledger on): {ours_rate:8.0f} msg/s  ({ours['elapsed']:.2f} s)")
            print(f"postfix smtp-source -d:              {src_rate:8.0f} msg/s")
            print(f"ratio: {ours_rate / src_rate:.0%} of smtp-source (goal >= 70%)")
            w, a = ours["window_ms"], ours["accept_to_commit_ms"]
            print(f"ambiguous window (sending commit -> sent commit): p50 {w['p50']:.3f} ms, "
                  f"p99 {w['p99']:.3f} ms, max {w['max']:.3f} ms; in flight at most {args.connections} "
                  "messages (one per connection)")
            print(f"250 received -> sent committed: p50 {a['p50']:.3f} ms, p99 {a['p99']:.3f} ms, "
                  f"max {a['max']:.3f} ms")
            if args.rss_n:
                cfg2 = project(tmp / "rss", port, args.rss_n, args.connections)
                res, rss = peak_rss_mb(cfg2, rendition)
                print(f"peak RSS, {args.rss_n} recipients: {rss:.1f} MB (goal <= 150 MB); "
                      f"sent {res['sent']} in {res['elapsed']:.1f} s")
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
