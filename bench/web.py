"""Web benchmark: the whole site from the corpus (the newest issue's rendition carries every page,
the index, the feed and the sitemap) vs one issue's page alone, and a rebuild after adding one
issue vs a full forced build.

Run from the project root: .venv/bin/python bench/web.py  (needs ../shared/corpus or PUBLISHER_SHARED)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("PUBLISHER_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
ISSUE = """---
date: 2021-08-01
status: ready
---

# 嵌入式AI简报 (2021-08-01)

> 导读：本次1条。基准测试用的一期。

## 业界新闻

- [基准测试新闻 | 测试来源](https://example.org/bench)
摘要：一条摘要。
"""


def main() -> None:
    from publisher import pipeline
    from publisher.build import build
    from publisher.legacy import import_file
    from publisher.settings import load_settings

    corpus = sorted((SHARED / "corpus").glob("*.md"))
    if not corpus:
        raise SystemExit(f"no corpus at {SHARED / 'corpus'}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "issues").mkdir()
        for path in corpus:
            import_file(path, root / "issues")
        (root / "publisher.toml").write_text(
            '[paths]\nissues = "issues"\n[channels]\nenabled = ["web"]\n'
            '[web]\nbase_url = "https://example.org/newsletter/"\n', encoding="utf-8")
        settings = load_settings(root / "publisher.toml", cwd=root)
        files = settings.issue_files()

        def render(path: Path) -> float:
            issue, _ = pipeline.load(path)
            t = time.perf_counter()
            pipeline.render(issue, "web", settings)
            return time.perf_counter() - t

        site = min(render(files[0]) for _ in range(3))
        page = min(render(files[-1]) for _ in range(3))
        print(f"corpus: {len(files)} issues")
        print(f"whole site (newest issue's rendition): {site * 1000:8.1f} ms")
        print(f"one page (oldest issue's rendition):   {page * 1000:8.1f} ms   ratio {site / page:.1f}x")

        t = time.perf_counter()
        build(settings, root / "build", force=True, jobs=1)
        full = time.perf_counter() - t
        (root / "issues" / "2021-08-01.md").write_text(ISSUE, encoding="utf-8")
        settings = load_settings(root / "publisher.toml", cwd=root)
        t = time.perf_counter()
        build(settings, root / "build", jobs=1)
        added = time.perf_counter() - t
        print(f"full build -j1: {full:.2f} s; rebuild after adding one issue -j1: {added:.2f} s")


if __name__ == "__main__":
    main()
