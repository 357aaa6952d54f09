#!/usr/bin/env python3
"""Build benchmark on a large archive (a measurement, not a test).

    .venv/bin/python bench/build_scale.py [--sizes 105 210 420] [--repeat 3]

Makes archives of the corpus repeated with shifted dates (in a temporary folder) and times the
real `publisher build` command for each size: full build with `-j 1` and with the default (one
process per CPU), their ratio and the cost per issue (linear when it stays flat). On the largest
archive also: no-op build, edit one old issue, add one new issue — each with the renditions it
re-rendered — and the peak RSS of a process. Times are wall clock and CPU (of every process),
including interpreter start-up, printed beside it: on a shared machine CPU time is the steadier
figure. Goals: add one ≤ 12 renditions and ≤ 1 s beyond start-up; default ≥ 1.7× `-j 1`
on 2 cores; no-op ≤ 0.3 s beyond start-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PUBLISHER_SHARED", ROOT.parent / "shared"))
PUBLISHER = Path(sys.executable).parent / "publisher"
# runs a command and reports the peak RSS (KiB) of the largest process it waited for
# runs a command and reports the peak RSS (KiB) of its largest process and the CPU seconds of all
RSS_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print('maxrss', u.ru_maxrss, 'cpu', u.ru_utime + u.ru_stime, file=sys.stderr); "
               "sys.exit(r.returncode)")


def run(site: Path, *args: str) -> tuple[float, int, int, float]:
    """(wall seconds, renditions rendered, peak RSS KiB, CPU seconds) of one `publisher build`."""
    cmd = [sys.executable, "-c", RSS_WRAPPER, str(PUBLISHER), "--config", str(site / "publisher.toml"), "build", *args]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"build failed:\n{r.stderr[-2000:]}")
    built = int(re.search(r"built (\d+) rendition", r.stderr).group(1))
    m = re.search(r"maxrss (\d+) cpu ([\d.]+)", r.stderr)
    return seconds, built, int(m.group(1)), float(m.group(2))


def startup(repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the interpreter's start-up, best of `repeat`."""
    import resource

    times, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(times), min(cpus)


def make_site(tmp: Path, size: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.archive_support import make_archive

    site = tmp / f"site{size}"
    make_archive(SHARED / "corpus", site / "issues", size, work=tmp)
    (site / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "out"\n', encoding="utf-8")
    return site


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[105, 210, 420])
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the incremental builds")
    args = ap.parse_args()
    if not (SHARED / "corpus").is_dir():
        print(f"skipped: corpus not found at {SHARED / 'corpus'}")
        return 0
    base, base_cpu = startup(5)
    print(f"interpreter start-up: {base * 1000:.0f} ms wall, {base_cpu * 1000:.0f} ms CPU; CPUs: {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'issues':>6} {'renditions':>10} {'-j 1':>8} {'default':>8} {'speed-up':>8} {'ms/issue':>9} {'peak RSS':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp_name:
        tmp = Path(tmp_name)
        site = None
        for size in sorted(args.sizes):
            site = make_site(tmp, size)
            serial, built, rss1, _ = run(site, "--out", str(site / "out-serial"), "-j", "1")
            shutil.rmtree(site / "out", ignore_errors=True)
            parallel, built2, rss2, _ = run(site, "--out", str(site / "out"))
            assert built == built2, (built, built2)
            print(f"{size:>6} {built:>10} {serial:>7.1f}s {parallel:>7.1f}s {serial / parallel:>7.2f}x "
                  f"{parallel / size * 1000:>8.1f} {max(rss1, rss2) / 1024:>7.0f}MB")
        assert site is not None
        issues = sorted((site / "issues").glob("*.md"))

        def best(prepare, label: str) -> None:
            results = []
            for _ in range(args.repeat):
                undo = prepare()
                results.append(run(site, "--out", str(site / "out")))
                undo()
                run(site, "--out", str(site / "out"))  # back to up to date
            seconds, built, rss, cpu = min(results)
            print(f"{label:<20} {seconds * 1000:6.0f} ms wall ({(seconds - base) * 1000:5.0f} beyond start-up), "
                  f"CPU {cpu * 1000:5.0f} ms ({(cpu - base_cpu) * 1000:5.0f} beyond), {built} re-rendered, "
                  f"peak RSS {rss / 1024:.0f} MB")

        def noop():
            return lambda: None

        def edit_one():
            path = issues[len(issues) // 3]
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("摘要：", "摘要：（改）", 1), encoding="utf-8")
            return lambda: path.write_text(text, encoding="utf-8")

        def add_one():
            from tests.archive_support import shifted

            new = shifted(issues[-1], site / "issues", dt.timedelta(days=14))
            return new.unlink

        print(f"\n{len(issues)} issues:")
        best(noop, "no-op build")
        best(edit_one, "edit one old issue")
        best(add_one, "add one new issue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
