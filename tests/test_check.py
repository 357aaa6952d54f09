"""`publisher check`: limits at their boundaries, lead rules, repeats in the real corpus, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from publisher.channels.base import Rendition, check_rendition
from publisher.channels.email.limits import HTML_MAX_BYTES as EMAIL_HTML_MAX_BYTES
from publisher.channels.email.limits import check as check_email
from publisher.channels.wechat.limits import CONTENT_MAX_CHARS as WECHAT_CONTENT_MAX_CHARS
from publisher.channels.wechat.limits import DIGEST_MAX_CHARS as WECHAT_DIGEST_MAX_CHARS
from publisher.channels.wechat.limits import TITLE_MAX_CHARS as WECHAT_TITLE_MAX_CHARS
from publisher.channels.wechat.limits import check as check_wechat
from publisher.channels.zhihu.limits import check as check_zhihu

from publisher.cli import cli
from publisher.reader import read_issue
from publisher.repeats import ArchiveIndex, normalise_title, normalise_url

# ---- helpers ---------------------------------------------------------------------------------


def issue_text(date="2026-11-30", status="ready", lead="> 导读：本次2条。新闻与博文各一条。", items=None,
               extra_front=""):
    items = items or [
        "- [示例公司发布低功耗视觉芯片 | 示例科技](https://example.com/news/vision-chip)",
        "摘要：芯片集成了1TOPS的NPU。",
        "- [算子融合入门：从Conv+BN+ReLU说起 | 示例专栏](https://example.com/blog/op-fusion)",
        "摘要：融合减少访存。",
    ]
    lines = ["---", f"date: {date}", f"status: {status}"]
    if extra_front:
        lines.append(extra_front)
    lines += ["---", "", f"# 嵌入式AI简报 ({date})", ""]
    if lead is not None:
        lines += [lead, ""]
    lines += ["## 业界新闻", "", *items, ""]
    return "\n".join(lines)


def write_issue(folder: Path, text: str, name: str = "2026-11-30.md") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def rendition(channel="wechat", body="", media_type="text/html", **metadata):
    return Rendition(channel=channel, issue="2026-11-30", body=body, media_type=media_type,
                     filename="2026-11-30.html", metadata=metadata)


# ---- limits at their boundaries -------------------------------------------------------------


def test_limit_numbers_are_the_documented_ones():
    assert WECHAT_TITLE_MAX_CHARS == 32
    assert WECHAT_DIGEST_MAX_CHARS == 128
    assert WECHAT_CONTENT_MAX_CHARS == 19_999  # content < 20,000 characters
    assert EMAIL_HTML_MAX_BYTES == 102 * 1024 - 1  # HTML < 102 KB


def test_wechat_title_32_ok_33_over():
    assert check_wechat(rendition(title="标" * 32, digest="", body="x")) == []
    [v] = check_wechat(rendition(title="标" * 33, digest="", body="x"))
    assert (v.channel, v.what, v.value, v.limit) == ("wechat", "title", 33, 32)
    assert "33" in v.message and "32" in v.message


def test_wechat_digest_128_ok_129_over():
    assert check_wechat(rendition(title="t", digest="摘" * 128, body="x")) == []
    [v] = check_wechat(rendition(title="t", digest="摘" * 129, body="x"))
    assert (v.what, v.value, v.limit) == ("digest", 129, 128)


def test_wechat_content_19999_ok_20000_over():
    assert check_wechat(rendition(title="t", body="字" * 19_999)) == []
    [v] = check_wechat(rendition(title="t", body="字" * 20_000))
    assert (v.what, v.value, v.limit) == ("content", 20_000, 19_999)
    assert "20,000" in v.message


def test_email_html_bytes_at_102_kb():
    limit = 102 * 1024
    # multi-byte characters: the limit is in UTF-8 bytes, not characters
    below = "中" * ((limit - 1) // 3) + "a" * ((limit - 1) % 3)
    assert len(below.encode("utf-8")) == limit - 1
    at = below + "a"
    assert check_email(rendition("email", below)) == []
    [v] = check_email(rendition("email", at))
    assert (v.channel, v.what, v.value, v.limit) == ("email", "html", limit, limit - 1)
    assert len(at) < limit  # characters would not have caught it


def test_email_html_part_is_measured_when_body_is_text():
    r = Rendition(channel="email", issue="x", body="short", media_type="text/plain", filename="x.txt",
                  parts={"x.html": "a" * (102 * 1024)})
    [v] = check_email(r)
    assert v.value == 102 * 1024


def test_zhihu_constructs():
    body = "\n".join([
        "# 标题", "#### 四级可以", "##### 五级不行", "<h6>六级</h6>",
        "这是~~删除线~~文字", "<table><colgroup><col></colgroup></table>",
        "![本地](images/x.png)", "![空格](https://example.com/a b.png)",
        "![好](https://example.com/ok.png)", '<img src="ftp://example.com/x.png">',
        "```", "~~代码里的不算~~", "###### 代码里的也不算", "```",
    ])
    found = check_zhihu(rendition("zhihu", body, "text/markdown"))
    kinds = [(v.what, v.value) for v in found]
    assert ("heading", 5) in kinds and ("heading", 6) in kinds
    assert ("heading", 4) not in kinds
    assert sum(v.what == "strikethrough" for v in found) == 1
    assert sum(v.what == "colgroup" for v in found) == 1
    images = sorted(v.value for v in found if v.what == "image")
    assert images == ["ftp://example.com/x.png", "https://example.com/a b.png", "images/x.png"]
    assert all(v.channel == "zhihu" for v in found)


def test_channels_without_limits_pass():
    assert check_rendition(rendition("plaintext", "x" * 200_000, "text/plain")) == []


def test_limits_through_the_real_channels(project):
    """A huge issue rendered by every enabled channel: wechat content and email size reported."""
    items = []
    for n in range(40):
        items += [f"- [第{n}条新闻 | 示例](https://example.com/news/{n})", "摘要：" + "很长的摘要文字。" * 120]
    path = write_issue(project / "issues", issue_text(items=items, lead="> 导读：本次40条。"))
    result = invoke("check", "--offline", "--format", "json", str(path))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    limits = {(f["channel"], f["limit"]): f for f in doc["findings"] if f["kind"] == "limit"}
    wechat = limits[("wechat", WECHAT_CONTENT_MAX_CHARS)]
    assert wechat["value"] > 20_000 and wechat["level"] == "error"
    email = limits[("email", EMAIL_HTML_MAX_BYTES)]
    assert email["value"] >= 102 * 1024
    assert email["file"] == str(path)


# ---- lead rules ----------------------------------------------------------------------------


def test_empty_lead_is_an_error_when_ready(project):
    path = write_issue(project / "issues", issue_text(status="ready", lead=None))
    result = invoke("check", "--offline", str(path))
    assert result.exit_code == 1
    assert f"{path}:6: error: the 导读 is empty in a ready issue" in result.stderr


def test_empty_lead_is_a_warning_in_a_draft(project):
    path = write_issue(project / "issues", issue_text(status="draft", lead="> 导读："))
    result = invoke("check", "--offline", str(path))
    assert result.exit_code == 0, result.output
    assert f"{path}:8: warning: the 导读 is empty" in result.stderr
    strict = invoke("check", "--offline", "--strict", str(path))
    assert strict.exit_code == 1


def test_lead_count_mismatch_is_a_warning(project):
    path = write_issue(project / "issues", issue_text(lead="> 导读：本次5条。"))
    result = invoke("check", "--offline", "--format", "json", str(path))
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    [lead] = [f for f in doc["findings"] if f["kind"] == "lead"]
    assert lead["level"] == "warning" and lead["line"] == 8 and "本次5条" in lead["message"]
    assert invoke("check", "--offline", "--strict", str(path)).exit_code == 1


def test_clean_issue_exits_0_and_json_parses(project):
    path = write_issue(project / "issues", issue_text())
    result = invoke("check", "--offline", "--format", "json", str(path))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["errors"] == 0 and doc["warnings"] == 0 and doc["findings"] == []
    assert doc["files"] == [{"file": str(path), "readable": True, "date": "2026-11-30", "status": "ready",
                             "items": 2}]
    assert doc["links"] is None  # --offline
    text = invoke("check", "--offline", str(path))
    assert text.exit_code == 0 and f"{path}: ok" in text.stdout


def test_structure_error_keeps_file_line_and_exit_1(project):
    bad = write_issue(project / "issues", "---\ndate: 2020-01-01\nfoo: 1\n---\n# 嵌入式AI简报 (2020-01-01)\n",
                      "2020-01-01.md")
    result = invoke("check", "--offline", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:3: error: unknown front-matter key 'foo'" in result.stderr
    doc = json.loads(invoke("check", "--offline", "--format", "json", str(bad)).stdout)
    assert doc["findings"][0]["kind"] == "structure" and doc["findings"][0]["line"] == 3
    assert doc["files"][0]["readable"] is False


def test_json_finding_fields(project):
    path = write_issue(project / "issues", issue_text(status="ready", lead=None))
    doc = json.loads(invoke("check", "--offline", "--format", "json", str(path)).stdout)
    assert doc["findings"]
    for f in doc["findings"]:
        assert set(f) == {"level", "kind", "file", "line", "message", "channel", "value", "limit", "code"}
        assert isinstance(f["code"], str) and f["code"]
    assert [f["code"] for f in doc["findings"]] == ["lead-empty"]


def test_kind_comes_from_the_code_not_the_message(project):
    """A warning whose text happens to read like a 导读 count (raw HTML quoting `导读3条`) is a
    structure finding; the real 导读 mismatch is a lead finding — told apart by code."""
    items = ["- [示例 | 示例科技](https://example.com/a)", '摘要：<span title="导读3条">x</span>',
             "- [另一条 | 示例专栏](https://example.com/b)", "摘要：融合。"]
    path = write_issue(project / "issues", issue_text(lead="> 导读：本次5条。", items=items))
    doc = json.loads(invoke("check", "--offline", "--format", "json", str(path)).stdout)
    by_code = {f["code"]: f for f in doc["findings"] if "</span>" not in f["message"]}
    dropped = by_code["html-tag-dropped"]
    assert dropped["kind"] == "structure" and "导读3条" in dropped["message"]
    assert by_code["lead-count"]["kind"] == "lead" and by_code["lead-count"]["line"] == 8
    text = invoke("check", "--offline", str(path)).stderr
    assert text.index("structure (") < text.index("导读 (lead) (1)")


def test_unreadable_issue_has_the_readers_code(project):
    bad = write_issue(project / "issues", issue_text(lead="> 导读：本次2条。\n\n摘要：孤立的摘要"))
    doc = json.loads(invoke("check", "--offline", "--format", "json", str(bad)).stdout)
    [f] = doc["findings"]
    assert (f["code"], f["line"], f["kind"]) == ("summary-before-item", 10, "structure")
    assert f["message"].startswith("摘要 before any item")


# ---- repeats -------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [
    ("http://www.example.com/a/?utm_source=x&utm_medium=y#top", "https://example.com/a"),
    ("https://mp.weixin.qq.com/s?__biz=MzA3&mid=26&idx=1&sn=ab&chksm=ff&scene=21#wechat_redirect",
     "http://mp.weixin.qq.com/s?sn=ab&idx=1&mid=26&__biz=MzA3"),
    ("https://mp.weixin.qq.com/s/OwY68oZUie8WQuQeMc2CGg?from=timeline", "https://mp.weixin.qq.com/s/OwY68oZUie8WQuQeMc2CGg"),
    ("https://arxiv.org/pdf/2006.16669.pdf", "https://arxiv.org/abs/2006.16669v2"),
    ("https://github.com/JDAI-CV/dabnn/", "https://github.com/jdai-cv/dabnn"),
    ("https://zhuanlan.zhihu.com/p/123?spm=1.2", "https://zhuanlan.zhihu.com/p/123"),
])
def test_same_page_same_key(a, b):
    assert normalise_url(a) == normalise_url(b)


@pytest.mark.parametrize("a, b", [
    ("https://mp.weixin.qq.com/s/AAAA", "https://mp.weixin.qq.com/s/BBBB"),
    ("https://mp.weixin.qq.com/s?__biz=MzA3&mid=26&idx=1&sn=ab", "https://mp.weixin.qq.com/s?__biz=MzA3&mid=26&idx=2&sn=cd"),
    ("https://www.youtube.com/watch?v=abc", "https://www.youtube.com/watch?v=def"),
    ("https://example.com/a?id=1", "https://example.com/a?id=2"),
])
def test_different_pages_different_keys(a, b):
    assert normalise_url(a) != normalise_url(b)


def test_title_normalisation():
    assert normalise_title("ＭｉｎｉＬＭ：面向 Transformer！") == normalise_title("minilm:面向transformer")


def test_near_same_title_in_an_earlier_issue(tmp_path):
    earlier = issue_text(date="2026-11-02", items=["- [谷歌发布全新端侧大模型Gemma Nano，手机可跑 | 机器之心](https://a.example/1)"])
    later = issue_text(date="2026-11-30", items=[
        "- [谷歌发布全新端侧大模型Gemma Nano，手机能跑 | 新智元](https://b.example/2)",
        "- [MindSpore新版本v0.6.0-beta解读 | 示例](https://b.example/3)",
    ])
    write_issue(tmp_path, earlier, "2026-11-02.md")
    write_issue(tmp_path, issue_text(date="2026-11-16", items=["- [MindSpore新版本v0.5.0-beta解读 | 示例](https://c.example/4)"]),
                "2026-11-16.md")
    path = write_issue(tmp_path, later, "2026-11-30.md")
    repeats = ArchiveIndex(tmp_path).find(read_issue(path).issue, str(path))
    # a different version number is another release, not the same story
    assert [(r.line, r.by, r.earlier.date.isoformat(), r.earlier.line) for r in repeats] == [
        (12, "title", "2026-11-02", 12)
    ]
    assert 0.9 <= repeats[0].ratio < 1


def test_later_issues_are_not_earlier(tmp_path):
    write_issue(tmp_path, issue_text(date="2026-12-07"), "2026-12-07.md")
    path = write_issue(tmp_path, issue_text(date="2026-11-30"), "2026-11-30.md")
    assert ArchiveIndex(tmp_path).find(read_issue(path).issue) == []


def test_repeats_in_the_real_corpus(imported_corpus):
    """The stories the corpus ran twice (found by running the index over every issue)."""
    index = ArchiveIndex(imported_corpus)
    found = {}
    for path in sorted(imported_corpus.glob("*.md")):
        for r in index.find(read_issue(path).issue, str(path)):
            found[(path.stem, r.line)] = (r.by, r.earlier.date.isoformat(), r.earlier.line, r.url)
    # EasyQuant: the same paper (arXiv 2006.16669, linked as pdf then abs) and code
    # (lines of the imported sources: the importer joins the archive's soft-wrapped summary and 导读 lines)
    assert found[("2020-07-18", 57)] == ("url", "2020-07-02", 40, "https://arxiv.org/pdf/2006.16669.pdf")
    # MiniLM: arXiv 2002.10957 again, five months later
    assert found[("2020-11-30", 57)] == ("url", "2020-06-17", 34, "https://arxiv.org/abs/2002.10957")
    # Riptide: "（Ps：之前简报似乎发过）" — the editor suspected it; the repository was the earlier item
    assert found[("2020-04-26", 46)] == ("url", "2020-03-02", 71, "https://github.com/jwfromm/Riptide")
    # MindSpore v0.5.0-beta (2020-07-02) and v0.6.0-beta (2020-08-06) are two releases, not a repeat
    assert not any(k[0] == "2020-08-06" for k in found)
    assert len(found) == 3, found


def test_check_reports_corpus_repeat_with_date_and_line(imported_corpus, tmp_path, monkeypatch):
    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nissues = "{imported_corpus}"\nledger = "{tmp_path / "p.db"}"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    path = imported_corpus / "2020-11-30.md"
    result = invoke("check", "--offline", "--format", "json", str(path))
    doc = json.loads(result.stdout)
    [rep] = [f for f in doc["findings"] if f["kind"] == "repeat" and f["line"] == 57]
    assert rep["level"] == "warning" and rep["value"] == "2020-06-17"
    assert rep["limit"].endswith("2020-06-17.md:34")
    assert "2020-06-17" in rep["message"]
