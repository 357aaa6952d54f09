"""What the click redirect adds to a request, on loopback (figures, not a test).

    .venv/bin/python bench/clicks.py [--n 5000] [--warmup 300]

Runs `publisher serve`'s app (waitress, [serve] threads) with [analytics] clicks on and one issue's
links recorded, then, over one keep-alive connection, alternates GET /healthz (the baseline: the
same server, parser and socket, no work) and GET /r/<issue>/<n>.<sig> (verify the signature, look
up the link, count the click in the ledger, answer 302). Prints p50/p99/max of each and the added
latency (redirect − baseline) at p50 and p99; the goal is ≤ 5 ms added at p99. A last line gives the
commits the ledger took (the clicks table must hold exactly the redirects made).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher import pipeline  # noqa: E402
from publisher.analytics import serve_app  # noqa: E402
from publisher.settings import load_settings  # noqa: E402
from publisher.stores.analytics import AnalyticsStore  # noqa: E402
from publisher.stores.ledger import Ledger  # noqa: E402
from publisher.unsubscribe import serve_in_thread  # noqa: E402

ISSUE = ROOT / "examples" / "neuraltalk" / "issues" / "2026-11-23.md"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="requests of each kind")
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args()
    os.environ.update(PUBLISHER_UNSUBSCRIBE_SECRET="bench-unsub", PUBLISHER_CLICK_SECRET="bench-click-secret")
    os.environ.pop("PUBLISHER_REPORT_SECRET", None)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "publisher.toml").write_text(
            '[paths]\nledger = "publisher.db"\n[email]\nsubscribers_db = "subscribers.db"\n'
            '[analytics]\nclicks = true\nbase_url = "https://news.example.org"\n', encoding="utf-8")
        settings = load_settings(d / "publisher.toml")
        issue, _ = pipeline.load(ISSUE)
        rendition = pipeline.render(issue, "email", settings)
        links = rendition.metadata["click_links"]
        ledger = Ledger(settings.path("paths", "ledger"))
        AnalyticsStore(ledger).record_links(issue.slug, "email", links)
        import re

        paths = [urlsplit(u).path for u in dict.fromkeys(
            re.findall(r'href="(https://news\.example\.org/r/[^"]+)"', rendition.body))]
        server = serve_in_thread(serve_app(settings), threads=settings["serve"]["threads"])
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)

        def timed(path: str, want: int) -> float:
            t = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            took = time.perf_counter() - t
            if r.status != want:
                raise SystemExit(f"{path}: {r.status}, expected {want}")
            return took * 1000

        for k in range(args.warmup):
            timed("/healthz", 200)
            timed(paths[k % len(paths)], 302)
        base, redirect = [], []
        for k in range(args.n):
            base.append(timed("/healthz", 200))
            redirect.append(timed(paths[k % len(paths)], 302))
        conn.close()
        server.shutdown()
        total = ledger.connect().execute("SELECT SUM(count) FROM clicks").fetchone()[0]
    print(f"loopback, {args.n} of each, one keep-alive connection, [serve] threads {settings['serve']['threads']}")
    for name, xs in (("GET /healthz (baseline)", base), ("GET /r/… (redirect)", redirect)):
        print(f"  {name:26} p50 {statistics.median(xs):6.3f} ms  p99 {pct(xs, 99):6.3f} ms  "
              f"max {max(xs):6.3f} ms")
    print(f"  added by the redirect:     p50 {statistics.median(redirect) - statistics.median(base):6.3f} ms  "
          f"p99 {pct(redirect, 99) - pct(base, 99):6.3f} ms  (goal ≤ 5 ms at p99)")
    print(f"  clicks counted in the ledger: {total} (redirects made: {args.n + args.warmup})")


if __name__ == "__main__":
    main()
