"""`publisher build`: parallel workers, atomic writes, progress and quiet output."""

from __future__ import annotations

import threading
from pathlib import Path

from publisher.atomic import atomic_write
from publisher.build import build
from publisher.settings import load_settings


def _settings(tmp_path: Path, issues: Path, out: Path):
    toml = tmp_path / "publisher.toml"
    # a generated QR code: every wechat rendition writes the same wechat/qr.png
    toml.write_text(f'[paths]\nissues = "{issues}"\nout = "{out}"\n[newsletter]\n'
                    'qr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n',
                    encoding="utf-8")
    return load_settings(toml)


def test_atomic_write_races_on_one_target(tmp_path: Path) -> None:
    """Many writers of one file (as parallel build workers all write wechat/qr.png): every write
    succeeds, the file is always one writer's whole content, no temporary file is left."""
    target = tmp_path / "wechat" / "qr.png"
    errors: list[BaseException] = []
    payloads = [bytes([n]) * 50_000 for n in range(8)]

    def writer(data: bytes) -> None:
        try:
            for _ in range(100):
                atomic_write(target, data)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in payloads
    assert sorted(p.name for p in target.parent.iterdir()) == ["qr.png"]


def test_atomic_write_gives_ordinary_permissions(tmp_path: Path) -> None:
    """mkstemp creates 0600; an output file (published by a web server, committed to git) gets
    the permissions any other new file would."""
    from publisher.atomic import _UMASK

    path = atomic_write(tmp_path / "a.txt", "文本")
    assert path.read_text(encoding="utf-8") == "文本"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_UMASK


def test_parallel_corpus_builds_never_collide(imported_corpus: Path, tmp_path: Path) -> None:
    """The whole corpus, every channel, in parallel worker processes, several times over: no
    channel fails (all wechat renditions write the same qr.png), nothing is left half-written."""
    out = tmp_path / "build"
    settings = _settings(tmp_path, imported_corpus, out)
    n_issues = len(list(imported_corpus.glob("*.md")))
    for _ in range(3):
        rendered, fresh, errors = build(settings, out, force=True, jobs=4)
        assert errors == []
        assert (rendered, fresh) == (n_issues * len(settings.enabled_channels), 0)
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert (out / "wechat" / "qr.png").read_bytes().startswith(b"\x89PNG")
