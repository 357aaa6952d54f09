"""Benchmark: 200 links on local servers, 5 of which take 5 s to answer (timeout 6 s).

The check must take about one slow answer, not the sum of them: the slow links are waited for
side by side while the fast ones go through the other workers.

    python bench/linkcheck.py [--urls 200] [--slow 5] [--delay 5] [--timeout 6] [--hosts 10]

The links are spread over `--hosts` loopback addresses (127.0.0.1, 127.0.0.2, …), one server
each, as links of a real issue are spread over sites; [check] defaults apply otherwise
(concurrency 20, 4 per host). No cache is used.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from publisher.linkcheck import LinkChecker  # noqa: E402


def make_handler(delay: float):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            if self.path.startswith("/slow"):
                time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--urls", type=int, default=200)
    ap.add_argument("--slow", type=int, default=5)
    ap.add_argument("--delay", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=6.0)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--per-host", type=int, default=4)
    args = ap.parse_args()

    servers = []
    for n in range(1, args.hosts + 1):
        httpd = ThreadingHTTPServer((f"127.0.0.{n}", 0), make_handler(args.delay))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    bases = [f"http://127.0.0.{i + 1}:{s.server_address[1]}" for i, s in enumerate(servers)]
    # the slow links on different hosts, as they would be in an issue
    urls = [f"{bases[i % len(bases)]}/slow/{i}" for i in range(args.slow)]
    urls += [f"{bases[i % len(bases)]}/page/{i}" for i in range(args.urls - args.slow)]

    checker = LinkChecker(timeout=args.timeout, concurrency=args.concurrency, per_host=args.per_host,
                          cache_hours=0, ledger=None, allow_private=True)  # local servers
    start = time.perf_counter()
    results = checker.check(urls)
    total = time.perf_counter() - start
    for s in servers:
        s.shutdown()
        s.server_close()

    ok = sum(r.ok for r in results.values())
    serial = args.slow * args.delay
    print(f"checked {len(results)} links ({ok} ok, {len(results) - ok} dead) on {args.hosts} hosts, "
          f"{args.slow} answering after {args.delay:g} s, timeout {args.timeout:g} s, "
          f"concurrency {args.concurrency}, {args.per_host} per host")
    print(f"total time: {total:.2f} s")
    print(f"sum of the slow delays: {serial:.1f} s; ratio total/sum = {total / serial:.2f} "
          f"(1/{args.slow} = {1 / args.slow:.2f} would be perfect overlap)")
    print(f"ratio total/timeout = {total / args.timeout:.2f}")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
