"""Benchmark of `publisher preview` (a measurement, not a test).

    python bench/preview.py [--rounds N] [--channel NAME]

1. re-render: the time to render the largest corpus issue for each channel (goal ≤ 100 ms), and
   to build the whole preview page for one channel;
2. live update: the time from saving the issue file to the page in headless Chromium
   (/usr/bin/chromium) showing the edit in its title and in the rendition on screen (goal ≤ 200 ms
   median), through the real preview server.

Reads the corpus from ../shared/corpus (or $PUBLISHER_SHARED/corpus) and imports it into a
temporary folder; falls back to the README demo issues when the corpus is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PUBLISHER_SHARED", ROOT.parent / "shared"))
CHROMIUM = Path("/usr/bin/chromium")


# the edit is on screen: in the page title and in the rendition of the tab shown (its frame)
SHOWS_JS = """(token) => {
  if (!document.title.includes(token)) return false;
  const tab = [...document.querySelectorAll('.tab')].find(t => !t.hidden);
  if (!tab) return false;
  const frame = tab.querySelector('iframe');
  const doc = frame && frame.offsetParent !== null ? frame.contentDocument : null;
  return (doc && doc.body ? doc.body.innerText : tab.innerText).includes(token);
}"""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def setup(tmp: Path) -> Path:
    """An issues folder in tmp: the imported corpus, else the demo issues."""
    from publisher.legacy import import_file

    issues = tmp / "issues"
    corpus = SHARED / "corpus"
    if corpus.is_dir():
        for path in sorted(corpus.glob("*.md")):
            import_file(path, issues)
        print(f"corpus: {len(list(issues.glob('*.md')))} issues imported from {corpus}")
    else:
        shutil.copytree(ROOT / "examples" / "neuraltalk" / "issues", issues)
        print(f"corpus not found at {corpus}; using the demo issues")
    (tmp / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "build"\n', encoding="utf-8")
    return issues


def bench_render(settings, issue_path: Path, rounds: int) -> None:
    from publisher.channels.base import get_channel

    from publisher import pipeline, preview

    print(f"\n== re-render {issue_path.name} ({issue_path.stat().st_size:,} bytes), median of {rounds} ==")
    for name in settings.enabled_channels:
        try:
            get_channel(name)
        except Exception as exc:  # a channel not written yet
            print(f"  {name:10s} skipped: {exc}")
            continue
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            issue, _ = pipeline.load(issue_path)
            try:
                pipeline.render(issue, name, settings)
            except Exception as exc:
                print(f"  {name:10s} render error: {exc}")
                break
            times.append(time.perf_counter() - start)
        if times:
            page_times = []
            for _ in range(rounds):
                start = time.perf_counter()
                preview.build_page(settings, issue_path, [name], inline_images=False, live_version=1)
                page_times.append(time.perf_counter() - start)
            verdict = "ok" if statistics.median(times) <= 0.1 else "OVER 100 ms"
            print(f"  {name:10s} load+render {ms(statistics.median(times))} (max {ms(max(times))})  "
                  f"whole preview page {ms(statistics.median(page_times))}  [{verdict}]")
    start = time.perf_counter()
    preview.build_page(settings, issue_path, settings.enabled_channels, inline_images=False, live_version=1)
    print(f"  all enabled channels, one page: {ms(time.perf_counter() - start)}")


def bench_reload(settings, issue_path: Path, rounds: int, channel: str | None) -> None:
    from publisher import preview
    from publisher.settings import load_settings

    print(f"\n== save → updated page in Chromium, {issue_path.name}, {rounds} edits ==")
    if not CHROMIUM.exists():
        print(f"  skipped: {CHROMIUM} not found")
        return
    from playwright.sync_api import sync_playwright

    config = settings.file
    live = preview.LivePreview(lambda: load_settings(config), issue_path, [channel] if channel else None)
    live.rebuild()
    server = preview.start_server(live, 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    threading.Thread(target=live.watch, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    original = issue_path.read_text(encoding="utf-8")
    marker_line = next(i for i, line in enumerate(original.split("\n")) if line.startswith("# "))
    results, renders = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("http*://**", lambda route: route.continue_() if "127.0.0.1" in route.request.url
                       else route.fulfill(status=204))
            page.goto(url)
            page.wait_for_load_state("load")
            for n in range(rounds):
                token = f"BENCH{n}X{time.monotonic_ns()}"
                lines = original.split("\n")
                lines[marker_line] = lines[marker_line] + token
                text = "\n".join(lines)
                time.sleep(0.3)  # let the page settle so each round starts from a loaded page
                start = time.perf_counter()
                issue_path.write_text(text, encoding="utf-8")
                page.wait_for_function(SHOWS_JS, arg=token, timeout=10_000, polling="raf")
                results.append(time.perf_counter() - start)
                renders.append(live.render_seconds)
            browser.close()
    finally:
        issue_path.write_text(original, encoding="utf-8")
        live.stop()
        server.shutdown()
        server.server_close()
    verdict = "ok" if statistics.median(results) <= 0.2 else "OVER 200 ms"
    what = channel or "all enabled channels"
    print(f"  page: {what}; inotify (watchfiles), reported {preview.WATCH_STEP_MS} ms after the last write")
    print(f"  save → updated page: median {ms(statistics.median(results))}, min {ms(min(results))}, "
          f"max {ms(max(results))}  [{verdict}]")
    print(f"  of which server re-render: median {ms(statistics.median(renders))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--channel", default=None, help="reload benchmark for one channel (default: all enabled)")
    args = parser.parse_args()

    from publisher.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        issues = setup(Path(tmp))
        settings = load_settings(Path(tmp) / "publisher.toml")
        largest = max(issues.glob("*.md"), key=lambda p: p.stat().st_size)
        bench_render(settings, largest, args.rounds)
        bench_reload(settings, largest, args.rounds, args.channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
