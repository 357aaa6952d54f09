"""One test per fidelity defect of issue 11 (numbered as in the issue), and the import default.

Each test renders real sources through the real channels; the Markdown outputs are read back with
markdown-it-py (an independent CommonMark renderer), the HTML ones with the stdlib HTML parser.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from publisher.channels.base import check_rendition

from publisher.legacy import import_legacy
from publisher.model import Link, Strikethrough, Strong
from publisher.pipeline import render
from publisher.reader import parse_issue, read_issue
from publisher.settings import load_settings

from .conftest import CORPUS, requires_shared
from .test_channels_markdown import make_settings

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py is in the test extra")
MD = markdown_it.MarkdownIt("commonmark").enable("strikethrough")

ALL = ["github", "zhihu", "aijishu", "plaintext", "wechat", "email"]

HEAD = """---
date: {date}
status: {status}
{extra}---

# 测试简报 ({date})：主题

**一句话标语**

> 导读：本次2条。{lead}

## 业界新闻

- [第一条 | 来源](https://example.org/one)
摘要：第一条的摘要。
{body}
"""


def write_issue(folder: Path, date="2099-01-01", status="ready", extra="", lead="", body="") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{date}.md"
    path.write_text(HEAD.format(date=date, status=status, extra=extra, lead=lead, body=body), encoding="utf-8")
    return path


def settings_for(tmp_path: Path, issues: Path):
    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f'[paths]\nissues = "{issues.as_posix()}"\n[newsletter]\nqr_public_url = '
                   '"https://example.org/qr.png"\n', encoding="utf-8")
    return load_settings(cfg)


def renditions(tmp_path: Path, path: Path) -> dict:
    settings = settings_for(tmp_path, path.parent)
    issue = read_issue(path).issue
    return {name: render(issue, name, settings) for name in ALL}


def tokens(markdown: str):
    """Every token of a Markdown text, inline children flattened, with its nesting depth."""
    out, depth = [], 0
    for t in MD.parse(markdown):
        if t.nesting == -1:
            depth -= 1
        out.append((depth, t))
        if t.nesting == 1:
            depth += 1
        for c in t.children or ():
            out.append((depth, c))
    return out


# ---- 1. a free paragraph after a section's last item -----------------------------------------


def test_1_paragraph_after_the_last_item_belongs_to_the_section(tmp_path):
    body = ("- [第二条 | 来源](https://example.org/two)\n摘要：第二条的摘要。\n\n"
            "手机厂商这边，[小米](https://example.org/mi)发布了新机。\n\n- 收尾列表一\n- 收尾列表二\n")
    path = write_issue(tmp_path / "issues", body=body)
    issue = read_issue(path).issue
    section = issue.sections[0]
    assert len(section.items) == 2
    assert "手机厂商" not in str(section.items[-1].summary)
    assert "手机厂商" in str(section.closing) and "收尾列表二" in str(section.closing)
    out = renditions(tmp_path, path)
    # github: the paragraph is a top-level block after the item list, as the archive shows it
    toks = tokens(out["github"].body)
    para = [d for d, t in toks if t.type == "inline" and t.content.startswith("手机厂商")]
    assert para == [1], para  # inside one paragraph only: not inside the list
    for name, r in out.items():
        text = r.body if name != "email" else r.body + r.parts[f"{issue.slug}.txt"]
        assert text.count("手机厂商这边") == (2 if name == "email" else 1), name
        assert text.index("第二条的摘要") < text.index("手机厂商这边"), name


@requires_shared
def test_1_corpus_2020_02_16_closing_paragraph():
    result = import_legacy((CORPUS / "2020-02-16.md").read_bytes(), "2020-02-16.md")
    last = result.read.issue.sections[-1]
    assert "手机厂商这边" in str(last.closing)
    assert "手机厂商这边" not in str(last.items[-1])


# ---- 2. a link target broken across a line ------------------------------------------------------


def test_2_link_target_broken_across_lines_stays_a_link(tmp_path):
    body = ("- [第二条 | 来源](https://example.org/two)\n摘要：见[小米10系列](https://example.org/mi10\n)和"
            "[三星](https://example.org/s20\n)。\n")
    path = write_issue(tmp_path / "issues", body=body)
    item = read_issue(path).issue.sections[0].items[1]
    links = [n.url for n in item.summary[0].children if isinstance(n, Link)]
    assert links == ["https://example.org/mi10", "https://example.org/s20"]
    out = renditions(tmp_path, path)
    hrefs = [t.attrs["href"] for _, t in tokens(out["github"].body) if t.type == "link_open"]
    assert "https://example.org/mi10" in hrefs and "https://example.org/s20" in hrefs
    assert 'href="https://example.org/mi10"' in out["email"].body
    assert "https://example.org/mi10" in out["wechat"].body  # as a numbered reference
    assert "(https://example.org" not in out["wechat"].body and "\n)" not in out["github"].body


@requires_shared
def test_2_corpus_2020_02_16_link_across_lines():
    result = import_legacy((CORPUS / "2020-02-16.md").read_bytes(), "2020-02-16.md")
    urls = [n.url for n in _walk(result.read.issue.sections[-1].closing) if isinstance(n, Link)]
    assert "https://mp.weixin.qq.com/s/2UPZrm3CmJAMK3raRdJP1g" in urls


def _walk(node):
    from publisher.model import iter_links

    return list(iter_links(node))


# ---- 3. links in the 导读 keep their URLs in the email text part ---------------------------------


def test_3_email_text_part_keeps_the_lead_links(tmp_path):
    path = write_issue(tmp_path / "issues", lead="「新闻」[芯片发布](https://example.org/lead-link)。")
    email = renditions(tmp_path, path)["email"]
    text = email.parts["2099-01-01.txt"]
    lead_line = next(line for line in text.splitlines() if line.startswith("导读"))
    assert "https://example.org/lead-link" in lead_line


# ---- 4. character references decoded once ---------------------------------------------------------


def test_4_entity_is_shown_once_escaped(tmp_path):
    path = write_issue(tmp_path / "issues", body="- [第二条 | 来源](https://example.org/two)\n摘要：A&lt;B 与 R&amp;D。\n")
    out = renditions(tmp_path, path)
    for name in ("wechat", "email"):
        assert "A&lt;B" in out[name].body and "&amp;lt;" not in out[name].body, name
        assert "R&amp;D" in out[name].body and "&amp;amp;" not in out[name].body, name
    assert "A<B 与 R&D" in out["email"].parts["2099-01-01.txt"]
    assert "A<B 与 R&D" in out["plaintext"].body
    # Markdown: what GitHub shows is A<B again
    html = MD.render(out["github"].body)
    assert "A&lt;B 与 R&amp;D" in html


# ---- 5. strikethrough ---------------------------------------------------------------------------


def test_5_strikethrough_in_every_channel(tmp_path):
    path = write_issue(tmp_path / "issues", body="- [第二条 | 来源](https://example.org/two)\n摘要：价格~~999元~~899元。\n")
    issue = read_issue(path).issue
    assert any(isinstance(n, Strikethrough) for n in issue.sections[0].items[1].summary[0].children)
    out = renditions(tmp_path, path)
    assert "~~" not in out["wechat"].body and "~~" not in out["email"].body
    assert re.search(r"<del[^>]*>999元</del>", out["wechat"].body)
    assert re.search(r"<del[^>]*>999元</del>", out["email"].body)
    struck = "9\u03369\u03369\u0336元\u0336"
    assert struck in out["plaintext"].body and struck in out["email"].parts["2099-01-01.txt"]
    assert "<s>999元</s>" in MD.render(out["github"].body)
    # zhihu cannot import strikethrough: `check` says so instead of the editor finding out
    assert [v.what for v in check_rendition(out["zhihu"])] == ["strikethrough"]


# ---- 6. a digest over 128 characters is reported, not cut ----------------------------------------


def test_6_long_digest_is_reported_by_check(tmp_path, monkeypatch):
    digest = "很长的摘要" * 30  # 150 characters
    path = write_issue(tmp_path / "issues", extra=f"digest: {digest}\n")
    wechat = renditions(tmp_path, path)["wechat"]
    assert wechat.metadata["digest"] == digest  # whole, not cut
    [v] = [v for v in check_rendition(wechat) if v.what == "digest"]
    assert v.value == 150 and v.limit == 128
    # and through the command an editor runs
    from .test_check import invoke

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    result = invoke("check", "--offline", "--format", "json", str(path))
    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    assert any(f["kind"] == "limit" and "digest" in f["message"] and f["level"] == "error" for f in doc["findings"])


# ---- 7. drafts are not listed; no empty 往期回顾 ---------------------------------------------------


def test_7_draft_is_not_listed_and_no_empty_heading(tmp_path):
    issues = tmp_path / "issues"
    write_issue(issues, date="2099-01-01")
    write_issue(issues, date="2099-01-08", status="draft")
    write_issue(issues, date="2099-01-15", status="draft", extra="archived: true\n")
    latest = write_issue(issues, date="2099-01-22")
    out = renditions(tmp_path, latest)
    for name in ("github", "zhihu", "aijishu", "plaintext"):
        body = out[name].body
        assert "2099-01-01" in body and "2099-01-15" in body, name
        assert "2099-01-08" not in body, name
    first = renditions(tmp_path, issues / "2099-01-01.md")
    for name in ("zhihu", "aijishu", "plaintext"):
        assert "往期回顾" not in first[name].body, name


# ---- 8. link notes: once on GitHub, the WeChat-only note nowhere else ----------------------------


@requires_shared
def test_8_2019_issue_link_notes(tmp_path, imported_corpus):
    settings = make_settings(tmp_path, imported_corpus)
    issue = read_issue(imported_corpus / "2019-03-31.md").issue
    github = render(issue, "github", settings).body
    assert github.count("个别链接打不开") == 2  # after the warm-up (here: the tagline) and at the end
    assert "PC端微信链接" not in github
    head = github.split("## ", 1)[0]
    assert head.count("注：") == 1
    for name in ("zhihu", "plaintext", "email"):
        r = render(issue, name, settings)
        assert "PC端微信链接" not in r.body and "PC端微信链接" not in "".join(r.parts.values()), name


# ---- 9. soft breaks stay soft, code verbatim -------------------------------------------------------


def test_9_soft_breaks_and_code_verbatim(tmp_path):
    body = ("- [第二条 | 来源](https://example.org/two)\n摘要：第一段。\n"
            "  1. 第一点，它的说明\n     在下一行继续\n  2. 第二点\n"
            "```python\nx = 1\n\ndef f():\n    return x\n```\n")
    path = write_issue(tmp_path / "issues", body=body)
    github = renditions(tmp_path, path)["github"].body
    code = github.split("```python\n", 1)[1].split("```", 1)[0]
    # indented under the item, otherwise verbatim: no trailing spaces, nothing added
    assert textwrap.dedent(code).strip("\n") == "x = 1\n\ndef f():\n    return x"
    assert not re.search(r"\S[ \t]+$", code, re.M)
    item_html = MD.render(github)
    assert "第一点，它的说明\n在下一行继续" in item_html  # a soft break: one paragraph, no <br />
    assert "第一点，它的说明<br" not in item_html
    assert not re.search(r"第一点，它的说明 {2,}$", github, re.M)


@requires_shared
def test_9_archive_soft_wrapped_summary_is_one_paragraph(tmp_path, imported_corpus):
    """2019-04-27 wrote two summary lines with a soft break: GitHub showed one paragraph."""
    original = (CORPUS / "2019-04-27.md").read_text(encoding="utf-8")
    line = original.split("\n")[32]  # line 33: a summary line without two trailing spaces
    assert not line.endswith("  ")
    nxt = original.split("\n")[33].strip()
    settings = make_settings(tmp_path, imported_corpus)
    github = render(read_issue(imported_corpus / "2019-04-27.md").issue, "github", settings).body
    html = MD.render(github)
    assert nxt[:20] in html
    # the two lines are in one paragraph (joined by a soft break), not split by <br />
    assert not re.search(re.escape(line.strip()[-10:]) + r"\s*<br />", html)


# ---- 10. markup inside an item title -----------------------------------------------------------------


def test_10_bold_in_item_title_is_kept(tmp_path):
    body = "- [2006.14090v1] [Neural Design for **NVIDIA** GPU | 来源](https://arxiv.org/abs/2006.14090v1)\n摘要：x。\n"
    path = write_issue(tmp_path / "issues", body=body)
    item = read_issue(path).issue.sections[0].items[1]
    assert item.title == "Neural Design for NVIDIA GPU" and item.source == "来源"
    assert any(isinstance(n, Strong) for n in item.title_inlines)
    out = renditions(tmp_path, path)
    assert "[Neural Design for **NVIDIA** GPU | 来源](https://arxiv.org/abs/2006.14090v1)" in out["github"].body
    assert re.search(r"<strong[^>]*>NVIDIA</strong>", out["wechat"].body)
    assert re.search(r"<strong[^>]*>NVIDIA</strong>", out["email"].body)
    assert "Neural Design for NVIDIA GPU | 来源" in out["plaintext"].body


@requires_shared
def test_10_corpus_2020_07_02_bold_title(tmp_path, imported_corpus):
    settings = make_settings(tmp_path, imported_corpus)
    github = render(read_issue(imported_corpus / "2020-07-02.md").issue, "github", settings).body
    assert "Neural Architecture Design for **NVIDIA** GPU-Efficient Networks" in github


# ---- the import default ---------------------------------------------------------------------------------


@requires_shared
def test_archive_issue_without_lead_is_imported_as_draft_and_check_accepts_every_import(imported_corpus, tmp_path,
                                                                                       monkeypatch):
    no_lead = [p for p in sorted(CORPUS.glob("*.md")) if "导读" not in p.read_text(encoding="utf-8")]
    assert len(no_lead) == 15
    for p in no_lead:
        text = (imported_corpus / p.name).read_text(encoding="utf-8")
        assert "\nstatus: draft\n" in text and "\narchived: true\n" in text, p.name
    from .test_check import invoke

    (tmp_path / "publisher.toml").write_text(f'[paths]\nissues = "{imported_corpus}"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    files = [str(imported_corpus / p.name) for p in sorted(CORPUS.glob("*.md"))]
    result = invoke("check", "--offline", "--format", "json", *files)
    doc = json.loads(result.stdout)
    findings = doc["findings"] if isinstance(doc, dict) else [f for d in doc for f in d["findings"]]
    lead_errors = [f for f in findings if f["kind"] == "lead" and f["level"] == "error"]
    assert lead_errors == []


def test_parse_rejects_non_boolean_archived():
    from publisher.errors import SourceError

    text = HEAD.format(date="2099-01-01", status="draft", extra="archived: maybe\n", lead="", body="")
    with pytest.raises(SourceError) as info:
        parse_issue(text, "x.md")
    assert info.value.line == 4 and "archived" in info.value.message


# ---- line breaks and labels as the archive wrote them (the structure test's open defects) ----


def test_summary_label_stays_where_the_source_put_it(tmp_path):
    """A free line under an item's fields has no 摘要 label (corpus 2020-02-16, MNN) and a 摘要 after
    it keeps its place (2020-08-06, OneFlow); no channel adds or moves the label."""
    body = ("- [第二条 | 来源](https://example.org/two)\n链接：https://example.org/paper\n"
            "这一行没有标签，作者这样写\n摘要：真正的摘要在这里。\n"
            "- [第三条 | 来源](https://example.org/three)\n只有一行说明，没有摘要\n")
    path = write_issue(tmp_path / "issues", body=body)
    item2, item3 = read_issue(path).issue.sections[0].items[1:]
    assert (item2.summary_label, item3.summary_label) == (1, None)
    out = renditions(tmp_path, path)
    for name in ALL:
        text = out[name].body
        assert "摘要：这一行没有标签" not in text and "摘要：只有一行说明" not in text, name
        assert re.search(r"摘要：(<[^>]+>)*真正的摘要在这里", text), name
    github = out["github"].body
    assert "这一行没有标签，作者这样写  \n摘要：真正的摘要在这里。" in github


def test_corpus_2020_02_16_unlabelled_line_keeps_no_label(tmp_path, imported_corpus):
    settings = make_settings(tmp_path, imported_corpus)
    github = render(read_issue(imported_corpus / "2020-02-16.md").issue, "github", settings).body
    assert "\n第二次直播-深" in github and "摘要：第二次直播" not in github


def test_hard_break_in_a_nested_list_before_an_unindented_line_survives_import():
    """`    2. …␣␣` then an unindented line (CommonMark: the same list item, after a hard break),
    corpus 2019-04-27: the import keeps the break (a backslash) and every channel keeps the line
    in the list item."""
    legacy = ("# 嵌入式AI简报 (2099-01-01)\n\n## 论文\n\n- [论文 | 来源](https://example.org/p)  \n"
              "摘要：两种技术：  \n    1. 第一种；\n    2. 第二种。  \n组合使用两种技术。\n"
              "- [下一条](https://example.org/n)  \n")
    result = import_legacy(legacy)
    assert "    2. 第二种。\\\n组合使用两种技术。" in result.text
    [lst] = [b for b in result.read.issue.sections[0].items[0].summary if type(b).__name__ == "ListBlock"]
    last = lst.items[-1].blocks[0].children
    assert [type(n).__name__ for n in last] == ["Text", "LineBreak", "Text"]


def test_soft_wrapped_lead_and_warmup_breaks_as_published():
    """The 导读 continued without two spaces is one paragraph (2020-07-02); a warm-up bullet's
    hard-broken next line keeps its break (2021-01-05)."""
    legacy = ("# 嵌入式AI简报 (2099-01-01)\n\n> 导读：本次1条。【新闻】甲；\n【论文】乙。\n\n"
              "- 骁龙：新芯片；  \n华为：新系统；\n- 微软：自研芯片；\n\n## 论文\n\n"
              "- [论文 | 来源](https://example.org/p)  \n摘要：一句。\n")
    result = import_legacy(legacy)
    assert "> 导读：本次1条。【新闻】甲； 【论文】乙。\n" in result.text
    issue = result.read.issue
    assert len(issue.lead) == 1
    assert [type(n).__name__ for n in issue.warmup[0].content] == ["Text", "LineBreak", "Text"]


def test_bare_url_stays_bare_even_with_a_full_width_character(tmp_path):
    """`文档：https://…；` (corpus 2019-05-30, 2020-06-03): the Markdown channels write the address as
    the source did, so GitHub autolinks it exactly as it did the archive; a link whose text is
    followed by more text stays an explicit link (written bare, the autolink would swallow it)."""
    body = ("- [第二条 | 来源](https://example.org/two)\n摘要：文档：https://example.org/a_b.html；\n"
            "代码见[https://example.org/c](https://example.org/c)下载\n")
    path = write_issue(tmp_path / "issues", body=body)
    github = renditions(tmp_path, path)["github"].body
    assert "文档：https://example.org/a_b.html；  \n" in github
    assert "[https://example.org/c](https://example.org/c)下载" in github


def test_plain_paragraph_before_the_first_section_is_not_made_a_quote(tmp_path):
    """Corpus 2020-03-19 / 2020-05-15: a plain paragraph after the 导读 stays a paragraph; a `> `
    note stays a quote (both read back by markdown-it-py)."""
    head = HEAD.replace("> 导读：本次2条。{lead}\n", "> 导读：本次2条。{lead}\n\n> 注：引用的说明\n\n文末，一段普通的话。\n")
    (tmp_path / "issues").mkdir()
    path = tmp_path / "issues" / "2099-01-01.md"
    path.write_text(head.format(date="2099-01-01", status="ready", extra="", lead="", body=""), encoding="utf-8")
    github = renditions(tmp_path, path)["github"].body
    parents = {}
    stack = []
    for t in MD.parse(github):
        if t.nesting == 1:
            stack.append(t.type)
        elif t.nesting == -1:
            stack.pop()
        elif t.type == "inline" and ("引用的说明" in t.content or "一段普通的话" in t.content):
            parents["quote" if "引用" in t.content else "plain"] = list(stack)
    assert parents["quote"] == ["blockquote_open", "paragraph_open"]
    assert parents["plain"] == ["paragraph_open"]
