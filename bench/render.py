#!/usr/bin/env python3
"""Render benchmark: every corpus issue through every channel, against a bare mistune parse.

    .venv/bin/python bench/render.py [--repeat N]

Prints ms per issue per channel, the ratio of all six channels together to the floor (mistune
parsing the same files to HTML), and how long `publisher build` takes when nothing changed,
beside the interpreter's own start-up. Goals: all six ≤ 4× the floor (issue 26; premailer stays the inliner); no-op build < 0.3 s beyond start-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PUBLISHER_SHARED", ROOT.parent / "shared")) / "corpus"


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not CORPUS.is_dir():
        print(f"skipped: corpus not found at {CORPUS}")
        return 0

    import mistune
    from publisher.channels.base import available_channels

    from publisher import pipeline
    from publisher.legacy import import_file
    from publisher.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    issues_dir = tmp / "issues"
    for path in sorted(CORPUS.glob("*.md")):
        import_file(path, issues_dir)
    (tmp / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "out"\n', encoding="utf-8")
    settings = load_settings(tmp / "publisher.toml", cwd=tmp)
    sources = sorted(issues_dir.glob("*.md"))
    texts = [p.read_text(encoding="utf-8") for p in sources]
    issues = [pipeline.load(p)[0] for p in sources]
    channels = [c for c in available_channels() if c in settings.enabled_channels]

    md = mistune.create_markdown()
    floor = best_of(lambda: [md(t) for t in texts], args.repeat)
    parse = best_of(lambda: [pipeline.load(p) for p in sources], args.repeat)

    ctxs = [pipeline.context_for(settings, i) for i in issues]
    per_channel = {}
    for name in channels:
        objs = [pipeline.channel_for(name, c) for c in ctxs]
        per_channel[name] = best_of(lambda objs=objs: [o.render(i) for o, i in zip(objs, issues, strict=True)],
                                    args.repeat)
    n = len(issues)
    print(f"corpus: {n} issues, channels: {', '.join(channels)} (best of {args.repeat})")
    print(f"{'channel':<12}{'ms/issue':>10}")
    for name, t in per_channel.items():
        print(f"{name:<12}{t / n * 1000:>10.2f}")
    total = sum(per_channel.values())
    print(f"{'read (ours)':<12}{parse / n * 1000:>10.2f}")
    print(f"{'all six':<12}{total / n * 1000:>10.2f}")
    print(f"{'floor':<12}{floor / n * 1000:>10.2f}   (bare mistune → HTML of the same files)")
    print(f"ratio all six / floor: {total / floor:.2f}x   (goal ≤ 4x)")
    print(f"ratio read + all six / floor: {(total + parse) / floor:.2f}x")

    # code highlighting ([code] highlight_style): its cost in WeChat characters (budget 20,000)
    # and time, over the corpus plus the shipped example (the corpus has no fenced code)
    import dataclasses

    example = Path(__file__).resolve().parent.parent / "examples" / "neuraltalk" / "issues" / "2026-11-23.md"
    pairs = list(zip(issues, ctxs, strict=True)) + [(pipeline.load(example)[0], None)]
    for style in ("", settings["code"]["highlight_style"]):
        data = {k: dict(v) for k, v in settings.data.items()}
        data["code"]["highlight_style"] = style
        styled = dataclasses.replace(settings, data=data)
        start = time.perf_counter()
        sizes = [len(pipeline.render(i, "wechat", styled).body)
                 for i, _ in pairs]
        ms = (time.perf_counter() - start) / len(pairs) * 1000
        print(f"wechat, highlight_style={style or '(off)'!r}: largest {max(sizes):,} chars "
              f"(limit 19,999), example issue {sizes[-1]:,} chars, {ms:.2f} ms/issue")

    # WeChat themes ([wechat] theme): the largest corpus issue per theme (budget 20,000), and the
    # typesetting fixture (formulas, footnotes, a table, a caption): its first render (matplotlib
    # lays out every formula) and a warm one (formula images cached by their LaTeX)
    fixture = ROOT / "tests" / "fixtures" / "typeset" / "2026-12-07.md"
    for theme in ("default", "jade", "ink"):
        data = {k: dict(v) for k, v in settings.data.items()}
        data["wechat"]["theme"] = theme
        themed = dataclasses.replace(settings, data=data)
        sizes = [len(pipeline.render(i, "wechat", themed, pipeline.context_for(themed, i)).body) for i in issues]
        print(f"wechat theme {theme!r}: largest corpus issue {max(sizes):,} chars (limit 19,999)")
    if fixture.is_file():
        typeset = pipeline.load(fixture)[0]
        tctx = pipeline.context_for(settings, typeset)
        start = time.perf_counter()
        pipeline.render(typeset, "wechat", settings, tctx)
        first = time.perf_counter() - start
        warm = {name: best_of(lambda name=name: pipeline.render(typeset, name, settings, tctx), args.repeat)
                for name in channels}
        print(f"typesetting fixture: first wechat render {first * 1000:.0f} ms (formula images made); warm: "
              + ", ".join(f"{n} {t * 1000:.2f}" for n, t in warm.items()) + " ms")

    # no-op build, in a fresh process each time, against interpreter start-up
    exe = Path(sys.executable).parent / "publisher"
    cmd = [str(exe), "--config", str(tmp / "publisher.toml"), "build"]
    subprocess.run(cmd, capture_output=True, check=False)  # first, full build
    noop = statistics.median(
        best_of(lambda: subprocess.run(cmd, capture_output=True, check=False), 1) for _ in range(args.repeat)
    )
    start = statistics.median(
        best_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 1) for _ in range(args.repeat)
    )
    print(f"no-op build: {noop * 1000:.0f} ms; interpreter start-up: {start * 1000:.0f} ms; "
          f"beyond start-up: {(noop - start) * 1000:.0f} ms (goal < 300 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
