"""Email through each provider's API against its local fake server (tests/provider_servers.py).

    python bench/email_providers.py                        # 100,000 recipients, every provider
    python bench/email_providers.py --n 5000 --providers postmark mailgun

For each provider: a fake server in a process of its own (keeping only the recipients, not the
bodies), and the real campaign in a child process (subscribers streamed from SQLite, every call
recorded in the ledger before it leaves and settled after, per-reader unsubscribe links and
headers); reported: recipients/s (campaign time), the sender's CPU time (recipients per
CPU-second: what an idle core would do, on a shared machine), the fake server's CPU time, and the
child's peak RSS (VmHWM), checked against the server's count. Baseline in the same run: the child's peak RSS after importing the
program and preparing the campaign, before sending.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys
from publisher.channels.base import Rendition
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.transports.providers.campaign import ProviderCampaign
settings = load_settings(sys.argv[1])
rendition = Rendition(**json.loads(open(sys.argv[2], encoding="utf-8").read()))
ledger = Ledger(settings.path("paths", "ledger"))
c = ProviderCampaign(rendition, settings, ledger, secret=settings.secret("email", "secret_env"))
def hwm():  # this process's peak RSS (VmHWM: per address space, unlike ru_maxrss, which
    # also carries the parent's size across fork + exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
import resource
base = hwm()
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
stats = c.run()
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
print(json.dumps({"sent": stats.sent, "elapsed": stats.elapsed, "remaining": stats.remaining,
                  "aborted": stats.aborted, "calls": stats.calls, "baseline_rss_kb": base, "peak_rss_kb": hwm(),
                  "cpu_s": cpu}))
"""


def run(provider: str, n: int, folder: Path, rjson: Path, child: Path, env: dict) -> dict:
    from tests.provider_support import add_subscribers, settings_for

    server = subprocess.Popen([sys.executable, "-m", "tests.provider_servers", provider], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    port = int(server.stdout.readline())
    try:
        settings = settings_for(folder, provider, f"http://127.0.0.1:{port}",
                                concurrency=8 if provider == "ses" else 2, timeout=60)
        add_subscribers(settings, n)
        proc = subprocess.Popen([sys.executable, str(child), str(folder / "publisher.toml"), str(rjson)],
                                stdout=subprocess.PIPE, env=env, cwd=folder)
        out = proc.stdout.read()
        proc.wait()
        result = json.loads(out)
        result["peak_rss_mb"] = round(result.pop("peak_rss_kb") / 1024, 1)
        result["baseline_rss_mb"] = round(result.pop("baseline_rss_kb") / 1024, 1)
        result["per_s"] = round(result["sent"] / result["elapsed"]) if result["elapsed"] else None
        # what one idle core would do: recipients per CPU-second of the sender (the machine is
        # shared; wall-clock rates move with the load, this much less)
        result["per_cpu_s"] = round(result["sent"] / result["cpu_s"]) if result["cpu_s"] else None
    finally:
        server.stdin.close()
        result["server_count"] = int(server.stdout.readline() or 0)
        result["server_cpu_s"] = float(server.stdout.readline() or 0)
        server.wait(10)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--providers", nargs="+", default=["postmark", "mailgun", "ses"])
    args = ap.parse_args()
    from tests import provider_servers as ps
    from tests.email_support import SECRET, rendition_json
    from tests.provider_support import rendition, settings_for

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_UNSUBSCRIBE_SECRET": SECRET,
           "PUBLISHER_POSTMARK_TOKEN": ps.TOKEN, "PUBLISHER_MAILGUN_API_KEY": ps.MG_KEY,
           "AWS_ACCESS_KEY_ID": ps.AWS_KEY, "AWS_SECRET_ACCESS_KEY": ps.AWS_SECRET}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rjson = tmp / "rendition.json"
        rjson.write_text(rendition_json(rendition(settings_for(tmp / "r", "postmark", "http://127.0.0.1:9"))),
                         encoding="utf-8")
        child = tmp / "child.py"
        child.write_text(CHILD, encoding="utf-8")
        results = {}
        for provider in args.providers:
            t = time.monotonic()
            results[provider] = r = run(provider, args.n, tmp / provider, rjson, child, env)
            print(f"{provider:9s} {r['sent']:>7,} recipients in {r['elapsed']:.1f} s: {r['per_s']:,}/s, "
                  f"{r['calls']:,} calls, peak RSS {r['peak_rss_mb']} MB (baseline {r['baseline_rss_mb']} MB); "
                  f"sender CPU {r['cpu_s']:.1f} s = {r['per_cpu_s']:,} recipients per CPU-second, fake server CPU "
                  f"{r['server_cpu_s']:.1f} s; server counted {r['server_count']:,} "
                  f"[{time.monotonic() - t:.0f} s with setup; load average {os.getloadavg()[0]:.1f}]", flush=True)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
