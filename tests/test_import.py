"""The legacy importer: the whole real archive imports, nothing is lost, quirks are mended."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from publisher.errors import SourceError
from publisher.legacy import import_file, import_legacy
from publisher.reader import read_issue
from tests.conftest import CORPUS, ORACLE, corpus_files, requires_shared


def load_oracle():
    spec = importlib.util.spec_from_file_location("oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# 2019-03-31 has no 往期回顾 heading, so the oracle (which stops reading there) counts its footer
# (Editor/Project lines, CC BY-SA 2.0 badge) as content; the importer leaves footers out by design
# and the github channel writes its own after the heading. The 2.0 license itself is kept (front
# matter `license:`); see test_old_license_is_kept. Strict: if this ever passes, drop the mark.
OLD_FOOTER = {"2019-03-31.md"}


def corpus_params():
    for path in corpus_files():
        marks = [pytest.mark.xfail(strict=True, reason="legacy footer without 往期回顾 heading")] \
            if path.name in OLD_FOOTER else []
        yield pytest.param(path, id=path.name, marks=marks)


@requires_shared
def test_old_license_is_kept(tmp_path):
    target, result = import_file(CORPUS / "2019-03-31.md", tmp_path)
    lic = result.read.issue.license
    assert lic is not None and lic.url == "http://creativecommons.org/licenses/by-sa/2.0/"
    assert "2.0" in lic.name and lic.badge.endswith("/2.0/88x31.png")
    assert read_issue(target).issue.license == lic


@requires_shared
@pytest.mark.parametrize("path", list(corpus_params()))
def test_corpus_file_imports_and_keeps_everything(path, tmp_path):
    target, result = import_file(path, tmp_path)
    assert target.name == f"{result.date}.md" == path.name
    # the written source reads back on its own
    again = read_issue(target)
    assert again.issue == result.read.issue
    assert again.issue.item_count > 0
    # footer and link notes are channel conventions: gone from the source
    text = target.read_text(encoding="utf-8")
    assert "往期回顾" not in text and "layout: default" not in text and "个别链接打不开" not in text
    # nothing else is lost: the independent oracle compares the original with the issue rendered
    # back to the house style by the github channel
    from publisher import pipeline
    from publisher.settings import load_settings

    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f'[paths]\nissues = "{tmp_path}"\n', encoding="utf-8")
    settings = load_settings(cfg, cwd=tmp_path)
    rendered = tmp_path / "rendered.md"
    rendered.write_text(pipeline.render(again.issue, "github", settings).body, encoding="utf-8")
    oracle = load_oracle()
    report = oracle.compare(str(path), str(rendered))
    assert report["urls_lost"] == [], report
    assert report["text_kept"] >= 0.98, report


@requires_shared
def test_oracle_command_line_on_one_import(tmp_path):
    target, _ = import_file(CORPUS / "2020-07-18.md", tmp_path)
    run = subprocess.run([sys.executable, str(ORACLE), "--compare", str(CORPUS / "2020-07-18.md"), str(target)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


LEGACY = textwrap.dedent(
    """\
    ---
    layout: default
    ---

    ############### 嵌入式AI简报 (2020-6-3)

    **关注模型压缩**
    <font>注：PC端微信链接打不开请用手机打开</font>

    > 导读：本次2条。

    > 注：个别链接打不开，请点击文末【阅读原文】跳转

    ## 业界新闻

    - [第一条 | 媒体]()
    摘要 没有冒号的摘要。
    \t– 用短横线的子项
    - [第二条 | 媒体](https://example.com/2)
    摘要：正常。

    > 注：个别链接打不开，请点击文末【阅读原文】跳转

    ## [往期回顾](https://github.com/x/y)

    | 2 | 0 | 2 | 0 |
    |:---:|:---:|:---:|:---:|
    | [2020-05-15](../embedded-ai-report/2020-05-15.md) | | | |

    ----

    ![wechat_qrcode](../wechat_qrcode.jpg)

    - WeChat: NeuralTalk
    """
)


def test_quirks_are_mended_with_warnings():
    result = import_legacy(LEGACY, "legacy.md")
    messages = {w.line: w.message for w in result.warnings}
    assert "15 '#'" in messages[5]
    # the 2019 link note 「PC端微信链接打不开请用手机打开」 is the WeChat link note of its time:
    # left out like 【阅读原文】 (defect 8), not turned into an issue note every channel copies
    assert 8 not in messages and "PC端微信链接" not in result.text
    assert "empty link target" in messages[16]
    assert "'摘要' without a colon" in messages[17]
    assert "'–'" in messages[18]
    issue = result.read.issue
    assert issue.date.isoformat() == "2020-06-03" and issue.status == "ready"
    assert not issue.notes
    first = issue.sections[0].items[0]
    assert first.url is None and first.title == "第一条"
    assert "没有冒号的摘要" in str(first.summary)
    assert "用短横线的子项" in str(first.summary)
    assert "往期回顾" not in result.text and "WeChat:" not in result.text and "wechat_qrcode" not in result.text
    assert result.text.startswith("---\ndate: 2020-06-03\nstatus: ready\narchived: true\n---\n")


def test_not_an_archive_issue():
    with pytest.raises(SourceError) as info:
        import_legacy("hello\nworld\n", "x.md")
    assert info.value.line == 1 and "not an archive issue" in info.value.message


def test_import_refuses_to_overwrite_a_different_file(tmp_path):
    src = tmp_path / "legacy.md"
    src.write_text(LEGACY, encoding="utf-8")
    out = tmp_path / "issues"
    import_file(src, out)
    (out / "2020-06-03.md").write_text("edited by hand", encoding="utf-8")
    with pytest.raises(SourceError) as info:
        import_file(src, out)
    assert "--force" in info.value.message
    import_file(src, out, force=True)
    assert (out / "2020-06-03.md").read_text(encoding="utf-8").startswith("---")
