"""The canonical reader: the model it builds, and an actionable error (file:line) for bad input."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from publisher.errors import SourceError
from publisher.model import CodeBlock, Emphasis, Image, Link, ListBlock, Quote, Strong, Text
from publisher.reader import parse_issue, read_issue
from tests.conftest import EXAMPLES, SEEDS, requires_shared

GOOD = textwrap.dedent(
    """\
    ---
    date: 2026-11-23
    status: ready
    topics: [量化, 编译器]
    ---

    # 嵌入式AI简报 (2026-11-23)

    **关注模型压缩**

    > 导读：本期2条。「新闻」一条。
    「论文」一条。

    先是一些热身小新闻：

    - 第一条[热身](https://example.com/warm)；
    - 第二条。

    ## 业界新闻

    - [某芯片发布 | 某媒体](https://example.com/a)
    摘要：第一段**加粗**。
    第二段[链接](https://example.com/b)。

    ## 论文

    - [2007.02269v2] [CVPR2020] [论文标题 | 极市平台](https://example.com/c) [[原文]](https://example.com/d)
    标题：English Title
    代码：https://github.com/o/r
    摘要：总结。
      1. 一
      2. 二
    """
)


def issue_of(text: str, name: str = "t.md"):
    return parse_issue(textwrap.dedent(text), name)


def error_of(text: str, name: str = "t.md") -> SourceError:
    with pytest.raises(SourceError) as info:
        issue_of(text, name)
    return info.value


def test_model_of_a_good_issue():
    result = issue_of(GOOD)
    issue = result.issue
    assert result.warnings == []
    assert issue.date == dt.date(2026, 11, 23)
    assert issue.status == "ready"
    assert issue.brand == "嵌入式AI简报"
    assert issue.topics == ("量化", "编译器")
    assert issue.tagline == "关注模型压缩"
    assert [p.line for p in issue.lead] == [11, 12]
    assert issue.warmup_intro == "先是一些热身小新闻："
    assert len(issue.warmup) == 2 and isinstance(issue.warmup[0].content[1], Link)
    assert [s.name for s in issue.sections] == ["业界新闻", "论文"]
    news = issue.sections[0].items[0]
    assert (news.title, news.source, news.url, news.line) == ("某芯片发布", "某媒体", "https://example.com/a", 21)
    assert isinstance(news.summary[0].children[1], Strong)
    paper = issue.sections[1].items[0]
    assert (paper.arxiv, paper.venue, paper.source) == ("2007.02269v2", "CVPR2020", "极市平台")
    assert [f.label for f in paper.fields] == ["标题", "代码"]
    assert isinstance(paper.fields[1].value[0], Link)  # bare URL becomes a link
    assert isinstance(paper.extra[-1], Link) and paper.extra[-1].url == "https://example.com/d"
    assert isinstance(paper.summary[1], ListBlock) and paper.summary[1].ordered
    assert issue.item_count == 2


def test_model_is_immutable():
    issue = issue_of(GOOD).issue
    with pytest.raises(AttributeError):
        issue.title = "x"  # type: ignore[misc]


def test_sample_issue_exercises_every_construct():
    result = read_issue(EXAMPLES / "issues" / "2026-11-23.md")
    assert result.warnings == []
    issue = result.issue
    assert issue.number == 120 and issue.cover == "images/cover.png" and issue.digest and issue.author
    assert issue.publish_at == dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    kinds = set()

    def walk(node):
        kinds.add(type(node).__name__)
        for attr in ("children", "blocks", "items", "summary", "fields", "value", "content", "extra"):
            for child in getattr(node, attr, ()) or ():
                walk(child)

    for part in (*issue.lead, *issue.warmup, *issue.notes, *issue.sections):
        walk(part)
    for section in issue.sections:
        for n in section.note:
            walk(n)
    expected = {"Text", "Code", "Strong", "Emphasis", "Link", "Image", "Paragraph", "ListBlock", "ListItem",
                "CodeBlock", "Quote", "Field", "Brief", "Item", "Section"}
    assert expected <= kinds
    repo_item = issue.sections[2].items[0]
    assert repo_item.repo == "example-lab/tiny-int8-conv"
    assert isinstance(repo_item.summary[1], CodeBlock) and "  /* stride */" in repo_item.summary[1].text
    assert any(isinstance(n, Image) for b in issue.sections[0].items[0].summary for n in getattr(b, "children", ()))
    assert any(isinstance(b, Quote) for b in issue.sections[3].items[0].summary)
    assert any(isinstance(n, Emphasis) for n in issue.sections[3].items[0].summary[0].children)


# ---- errors: each names the line and says what to do ------------------------------------------


@requires_shared
def test_malformed_title_line_of_seed_001():
    path = next(SEEDS.glob("001_*.txt"))
    text = path.read_text(encoding="utf-8").replace("layout: default", "status: draft")
    with pytest.raises(SourceError) as info:
        parse_issue(text, str(path))
    err = info.value
    assert err.line == 5
    assert "malformed title line" in err.message and "15 '#'" in err.message
    assert "# 嵌入式AI简报 (2020-06-03)" in err.message
    assert str(err).startswith(f"{path}:5: error:")


def test_malformed_title_line():
    err = error_of("\n\n###### 嵌入式AI简报 (2020-06-03)\n\n## 论文\n- [a](https://x.org)\n")
    assert err.line == 3 and "malformed title line" in err.message


def test_item_without_title_text():
    err = error_of(GOOD.replace("- [某芯片发布 | 某媒体](https://example.com/a)", "- [](https://example.com/a)"))
    assert err.line == 21 and "item has no title text" in err.message


def test_summary_before_any_item():
    err = error_of(GOOD.replace("## 业界新闻\n\n", "## 业界新闻\n\n摘要：无主的摘要\n"))
    assert err.line == 21 and "摘要 before any item" in err.message


def test_summary_before_any_item_in_preamble():
    err = error_of("# 嵌入式AI简报 (2020-01-01)\n\n摘要：孤立\n\n## 论文\n- [a](https://x.org)\n")
    assert err.line == 3 and "摘要 before any item" in err.message


def test_unknown_front_matter_key():
    err = error_of(GOOD.replace("status: ready", "status: ready\nlayuot: default"))
    assert err.line == 4 and "unknown front-matter key 'layuot'" in err.message and "known keys" in err.message


def test_jekyll_layout_key_points_to_import():
    err = error_of(GOOD.replace("status: ready", "layout: default"))
    assert err.line == 3 and "publisher import" in err.message


@pytest.mark.parametrize("bad", ["2026-02-30", "2026-13-01", "someday"])
def test_invalid_date_in_front_matter(bad):
    err = error_of(GOOD.replace("date: 2026-11-23", f"date: {bad}").replace("(2026-11-23)", "()"))
    assert err.line == 2 and "invalid date" in err.message


def test_invalid_date_in_title():
    err = error_of("# 嵌入式AI简报 (2020-02-31)\n\n## 论文\n- [a](https://x.org)\n")
    assert err.line == 1 and "invalid date" in err.message


def test_title_and_front_matter_dates_disagree():
    err = error_of(GOOD.replace("(2026-11-23)", "(2026-11-22)"))
    assert err.line == 7 and "disagrees" in err.message


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "2020-01-01.md"
    path.write_bytes("# 嵌入式AI简报 (2020-01-01)\n\n## 论文\n- [a](https://x.org)\n".encode() + b"\n\xff\xfe broken\n")
    with pytest.raises(SourceError) as info:
        read_issue(path)
    assert info.value.line == 6 and "not UTF-8" in info.value.message


def test_gbk_encoded_file(tmp_path):
    path = tmp_path / "2020-01-01.md"
    path.write_bytes("# 嵌入式AI简报 (2020-01-01)\n".encode("gbk"))
    with pytest.raises(SourceError) as info:
        read_issue(path)
    assert info.value.line == 1 and "UTF-8" in info.value.message


@pytest.mark.parametrize(
    "text",
    [
        "just some notes\nnothing else\n",
        "",
        "def f():\n    return 1\n",
        "# Shopping list\n\n- milk\n",
    ],
)
def test_a_file_that_is_not_an_issue(text):
    err = error_of(text)
    assert "not an issue" in err.message and err.line >= 1


def test_binary_file(tmp_path):
    path = tmp_path / "x.md"
    path.write_bytes(b"\x00\x01\x02PNG")
    with pytest.raises(SourceError) as info:
        read_issue(path)
    assert "not an issue" in info.value.message or "UTF-8" in info.value.message


@pytest.mark.parametrize(
    "target",
    ["javascript:alert(1)", "JavaScript:alert(1)", "java&#x09;script:alert(1)", "data:text/html;base64,PHNjcmlwdD4=",
     "vbscript:msgbox(1)", "&#106;avascript:alert(1)", "java\tscript:alert(1)", " javascript:alert(1)"],
)
def test_dangerous_link_targets_are_refused(target):
    err = error_of(GOOD.replace("[链接](https://example.com/b)", f"[链接](<{target}>)"))
    assert err.line == 23 and "refused" in err.message


def test_dangerous_item_url_is_refused():
    err = error_of(GOOD.replace("(https://example.com/a)", "(javascript:alert(1))"))
    assert err.line == 21 and "'javascript:'" in err.message


def test_footer_in_a_source_is_an_error():
    err = error_of(GOOD + "\n## [往期回顾](https://x.org)\n\n| 2 | 0 |\n")
    assert "footer" in err.message and err.line == 34


# ---- warnings --------------------------------------------------------------------------------


def test_empty_link_target_is_a_warning():
    result = issue_of(GOOD.replace("[链接](https://example.com/b)", "[链接]()"))
    assert [(w.line, "empty link target" in w.message) for w in result.warnings] == [(23, True)]
    assert "链接" in str(result.issue.sections[0].items[0].summary[1])


def test_lead_count_disagreement_is_a_warning():
    result = issue_of(GOOD.replace("本期2条", "本期3条"))
    assert [w.line for w in result.warnings] == [11]
    assert "本期3条" in result.warnings[0].message and "2 items" in result.warnings[0].message


def test_same_url_twice_is_a_warning():
    result = issue_of(GOOD.replace("(https://example.com/c)", "(https://example.com/a)"))
    assert [w.line for w in result.warnings] == [27]
    assert "first on line 21" in result.warnings[0].message


def test_item_repeating_its_own_url_is_not_a_warning():
    result = issue_of(GOOD.replace("代码：https://github.com/o/r", "链接：https://example.com/c"))
    assert result.warnings == []


def test_link_note_in_source_is_dropped_with_a_warning():
    result = issue_of(GOOD.replace("## 业界新闻", "> 注：个别链接打不开，请点击文末【阅读原文】跳转\n\n## 业界新闻"))
    assert any("link note" in w.message for w in result.warnings)
    assert result.issue.notes == ()


def test_text_nodes_keep_literal_markup_characters():
    result = issue_of(GOOD.replace("第一段**加粗**。", "第一段 <script>alert(1)</script> 和 a < b。"))
    para = result.issue.sections[0].items[0].summary[0]
    text = "".join(n.text for n in para.children if isinstance(n, Text))
    assert "<script>alert(1)</script>" in text and "a < b" in text


# ---- diagnostics carry a machine code ----------------------------------------------------------


def _error(text: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        parse_issue(text, "x.md")
    return info.value


@pytest.mark.parametrize("text, line, code, wording", [
    ("# 嵌入式AI简报 (2026-11-23)\n\n摘要：孤立\n\n- 热身\n\n## 新闻\n\n- [a](https://e.com/a)\n",
     3, "summary-before-item", "摘要 before any item: a summary belongs under"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n摘要：孤立\n\n## 新闻\n\n- [a](https://e.com/a)\n",
     3, "summary-before-item", "摘要 before any item: a summary belongs under"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n## 新闻\n\n摘要：孤立\n- [a](https://e.com/a)\n",
     5, "summary-before-item", "摘要 before any item of section '新闻': a summary belongs under"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n## 新闻\n\n- [a](https://e.com/a)\n\n### 往期回顾\n",
     7, "footer", "footer (往期回顾, QR code, license) found"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n## 新闻\n\n随便一句\n", 5, "text-before-item", "text before the first item"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n### 新闻\n", 3, "heading-level", "heading level 3"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n## 新闻\n\n- [a](https://e.com/a)\n```\ncode\n", 6, "code-unclosed",
     "code block opened with ``` is never closed"),
    ("---\ndate: 2026-11-23\nfoo: 1\n---\n# 嵌入式AI简报 (2026-11-23)\n", 3, "unknown-key", "unknown front-matter key"),
    ("# 嵌入式AI简报 (2026-11-23)\n\n导读\n", 1, "no-sections", "not an issue: it has no sections"),
])
def test_errors_keep_line_and_wording_and_carry_a_code(text, line, code, wording):
    err = _error(text)
    assert (err.line, err.code) == (line, code)
    assert err.message.startswith(wording)
    [d] = err.diagnostics
    assert (d.line, d.code, d.message) == (line, code, err.message)
    assert str(err).startswith(f"x.md:{line}: error: {wording}")


def test_warnings_carry_a_code():
    text = textwrap.dedent("""\
        # 嵌入式AI简报 (2026-11-23)

        > 导读：本次3条。

        > 注：个别链接打不开，请点击文末【阅读原文】跳转

        ## 新闻

        - [a](https://e.com/a)
        摘要：见[这里]()和 <b>粗</b>。
        - [b](https://e.com/a)
        """)
    warnings = parse_issue(text, "x.md").warnings
    assert [(w.line, w.code) for w in warnings] == [
        (3, "lead-count"), (5, "link-note"), (10, "empty-link"), (10, "raw-html"), (10, "raw-html"),
        (11, "duplicate-url")]
    assert all(w.level == "warning" and w.file == "x.md" for w in warnings)


def test_every_rule_of_every_list_is_a_method():
    from publisher.reader import _Reader

    lists = [_Reader.PREAMBLE_RULES, _Reader.BODY_RULES, _Reader.SECTION_RULES, _Reader.ITEM_BODY_RULES]
    for rules in lists:
        assert len(set(rules)) == len(rules)
        for name in rules:
            assert callable(getattr(_Reader, "parse_" + name, None)), name


def test_importer_warnings_carry_codes_and_keep_the_readers():
    from publisher.legacy import import_legacy

    text = ("---\nlayout: default\n---\n\n## 嵌入式AI简报 (2026-11-23)\n\n> 导读：本次1条。\n\n## 新闻\n\n"
            "- [a](https://e.com/a)\n摘要 没有冒号[空]()\n– 破折号\n")
    result = import_legacy(text, "old.md")
    codes = [(w.line, w.code) for w in result.warnings]
    assert (5, "title-hashes") in codes and (12, "summary-colon") in codes and (12, "empty-link") in codes
    assert (13, "en-dash-bullet") in codes
    assert all(w.code for w in result.warnings)
