"""The Markdown/text family of channels: github, zhihu, aijishu, plaintext.

Fidelity against the published seeds, the independent oracle over the whole corpus, the 往期回顾
calendar, user template overrides, and the writer's refusal to drop unknown nodes.
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest
from publisher.channels.base import PastIssue, RenderContext
from publisher.channels.github import calendar
from publisher.channels.markdown_writer import MarkdownWriter, PlainTextWriter
from publisher.channels.visitor import UnknownNodeError

from publisher.errors import SourceError
from publisher.model import Image, Paragraph, Text
from publisher.pipeline import context_for, render
from publisher.reader import parse_issue, read_issue
from publisher.settings import load_settings

from .conftest import ORACLE, corpus_files, requires_shared, seed

CHANNELS = ["github", "zhihu", "aijishu", "plaintext"]


def make_settings(tmp_path: Path, issues: Path, templates: Path | None = None):
    lines = ["[paths]", f'issues = "{issues.as_posix()}"']
    if templates is not None:
        lines.append(f'templates = "{templates.as_posix()}"')
    cfg = tmp_path / "publisher.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_settings(cfg)


def render_file(path: Path, channel: str, settings):
    issue = read_issue(path).issue
    return render(issue, channel, settings)


def fold(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def assert_similar(expected: str, actual: str, minimum: float = 0.95) -> float:
    a, b = fold(expected), fold(actual)
    ratio = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    if ratio < minimum:
        diff = "\n".join(
            difflib.unified_diff(expected.splitlines(), actual.splitlines(), "seed", "rendered", lineterm="", n=1)
        )
        print(diff)
    assert ratio >= minimum, f"similarity {ratio:.4f} < {minimum}"
    return ratio


# ---- fidelity against the seeds -------------------------------------------------------------


@requires_shared
def test_plaintext_matches_seed_000(imported_corpus, tmp_path):
    settings = make_settings(tmp_path, imported_corpus)
    rendition = render_file(imported_corpus / "2020-07-02.md", "plaintext", settings)
    assert rendition.media_type == "text/plain" and rendition.filename == "2020-07-02.txt"
    assert rendition.body.startswith("导读")
    assert "https://" not in rendition.body.split("\n")[0]  # links dropped from running text
    assert_similar(seed("000").read_text(encoding="utf-8"), rendition.body)


@requires_shared
def test_github_matches_seed_002(imported_corpus, tmp_path):
    settings = make_settings(tmp_path, imported_corpus)
    rendition = render_file(imported_corpus / "2020-07-18.md", "github", settings)
    assert rendition.metadata["title"] == "嵌入式AI简报 (2020-07-18)"
    assert rendition.body.startswith("---\nlayout: default\n---\n\n# 嵌入式AI简报 (2020-07-18)\n")
    assert rendition.body.count("> 注：个别链接打不开，请点击文末【阅读原文】跳转") == 2
    assert "| - | - | [2020-07-18](../embedded-ai-report/2020-07-18.md) | [2020-07-02]" in rendition.body
    # the calendar stops at the issue itself: later issues of the folder are not listed
    assert "2020-08-06" not in rendition.body
    assert_similar(seed("002").read_text(encoding="utf-8"), rendition.body)


def aijishu_capture_to_source(capture: str) -> tuple[str, str]:
    """Seed 003 (a capture of the rendered aijishu page) → (canonical source, the page's text).

    The capture lost the URLs and turned bullets into `•`; items keep their `title | source`
    line, fields and 摘要. Lines the capture floated between sections are dropped.
    """
    lines = capture.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"^\S.*\s\|\s", ln))
    end = next(i for i, ln in enumerate(lines) if ln.strip() == "推荐阅读")
    page = lines[start:end]
    brand, topics = (s.strip() for s in page[0].split("|", 1))
    sections = {"业界新闻", "论文", "开源项目", "博文", "应用"}
    out = ["---", "date: 2022-02-25", "status: ready", "---", "",
           f"# {brand} (2022-02-25)：{topics}", ""]
    k = 1
    while not page[k].strip():
        k += 1
    out += [f"**{page[k].strip()}**", ""]
    in_section = False
    in_item = False
    for raw in page[k + 1:]:
        s = raw.strip()
        if not s:
            continue
        if s.startswith(("来源:", "作者:")) or s == "往期回顾":
            break
        if "个别链接打不开" in s:
            continue
        if s in sections:
            out += ["", f"## {s}", ""]
            in_section, in_item = True, False
            continue
        if s.startswith("导读"):
            out += [f"> {s}", ""]
            continue
        bullet = re.match(r"^(\s*)•\s*(.*)$", raw)
        if bullet:
            depth = len(bullet.group(1))
            if in_section and depth <= 2:
                out.append(f"- {bullet.group(2)}")
                in_item = True
            elif in_section:
                out.append(f"    - {bullet.group(2)}")
            else:
                out.append(f"- {bullet.group(2)}")
            continue
        numbered = re.match(r"^\s+(\d+\.\s.*)$", raw)
        if numbered and in_item:
            out.append(f"    {numbered.group(1)}")
            continue
        if in_section and not in_item:
            continue  # text the capture floated before a section's first item
        out.append(s)
    return "\n".join(out) + "\n", "\n".join(page)


@requires_shared
def test_aijishu_matches_seed_003(tmp_path):
    capture = seed("003").read_text(encoding="utf-8")
    source, page = aijishu_capture_to_source(capture)
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / "2022-02-25.md"
    path.write_text(source, encoding="utf-8")
    issue = read_issue(path).issue
    assert issue.topics == ("TFLite主管离职", "BiBERT", "GiraffeDet", "编译器IR思考")
    assert len(issue.sections) == 4
    settings = make_settings(tmp_path, issues)
    rendition = render(issue, "aijishu", settings)
    body = rendition.body
    assert body.startswith("# 嵌入式AI简报 | TFLite主管离职/BiBERT/GiraffeDet/编译器IR思考\n")
    assert "注：个别链接打不开，请点击文末【项目链接】跳转。" in body
    assert "来源：NeuralTalk" in body and "作者：开心的派大星" in body
    assert "更多嵌入式AI相关技术干货请关注嵌入式AI专栏。" in body
    # the capture shows bullets as `•` and links as their text: compare like with like
    comparable = re.sub(r"^(\s*)- ", r"\1• ", body, flags=re.M)
    comparable = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", comparable)
    comparable = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", comparable)
    comparable = comparable.replace("**", "").replace("# ", "")
    assert_similar(page, comparable)


@requires_shared
def test_aijishu_author_from_issue_overrides_config(tmp_path, imported_corpus):
    text = (imported_corpus / "2020-07-18.md").read_text(encoding="utf-8")
    text = text.replace("status: ready", "status: ready\nauthor: 小编", 1)
    issue = parse_issue(text, "2020-07-18.md").issue
    rendition = render(issue, "aijishu", make_settings(tmp_path, imported_corpus))
    assert "作者：小编" in rendition.body and "开心的派大星" not in rendition.body


# ---- the oracle over the whole corpus ------------------------------------------------------


def _oracle():
    spec = importlib.util.spec_from_file_location("shared_oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# 2019-03-31 has no 往期回顾 heading, so the oracle (which cuts a file at that heading) counts the
# archive page's old footer — Editor/Project lines and a CC BY-SA *2.0* badge in HTML — as content.
# The importer drops that footer by design (every channel writes its own, with the configured
# license), so about 2.8% of "text" and the 2.0 license URLs cannot survive. Tracked strictly: if it
# ever passes, the xfail must go.
OLD_FOOTER = {"2019-03-31"}


def corpus_params():
    for path in corpus_files():
        marks = ()
        if path.stem in OLD_FOOTER:
            marks = pytest.mark.xfail(strict=True, reason="legacy footer without 往期回顾 heading counted by the oracle")
        yield pytest.param(path, id=path.stem, marks=marks)


@requires_shared
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("original", list(corpus_params()))
def test_oracle_passes_for_every_corpus_issue(original, channel, imported_corpus, tmp_path):
    settings = make_settings(tmp_path, imported_corpus)
    rendition = render_file(imported_corpus / original.name, channel, settings)
    out = tmp_path / rendition.filename
    out.write_text(rendition.body, encoding="utf-8")
    result = _oracle().compare(str(original), str(out))
    assert result["text_kept"] >= 0.98, result
    if channel != "plaintext":  # --compare-text for plain text, which drops inline URLs by design
        assert result["urls_lost"] == [], result


# ---- the 往期回顾 calendar ------------------------------------------------------------------


def test_calendar_pads_years_and_lists_newest_first():
    dates = ["2021-03-01", "2021-01-05", "2020-12-01", "2020-09-01", "2020-06-01", "2020-03-01",
             "2020-01-10"]
    archive = [PastIssue(dt.date.fromisoformat(d), d) for d in dates]
    years = calendar(reversed(archive), "../report/{date}.md")
    assert [y.year for y in years] == [2021, 2020]
    assert years[0].digits == ("2", "0", "2", "1")
    first = years[0].rows
    assert [[c.label for c in row] for row in first] == [["-", "-", "2021-03-01", "2021-01-05"]]
    assert first[0][2].link == "../report/2021-03-01.md" and first[0][0].link is None
    second = [[c.label for c in row] for row in years[1].rows]
    assert second == [["2020-12-01", "2020-09-01", "2020-06-01", "2020-03-01"], ["2020-01-10", "", "", ""]]


def test_github_calendar_table_in_the_page(tmp_path):
    issues = tmp_path / "issues"
    issues.mkdir()
    for d in ("2019-12-20", "2020-01-02", "2020-02-03", "2020-03-04", "2020-05-06", "2020-06-07"):
        (issues / f"{d}.md").write_text(SAMPLE.replace("2099-01-01", d), encoding="utf-8")
    settings = make_settings(tmp_path, issues)
    body = render_file(issues / "2020-05-06.md", "github", settings).body
    table = body.split("## [往期回顾](https://github.com/ysh329/awesome-embedded-ai)\n\n", 1)[1].split("\n\n")[0]
    link = "[{0}](../embedded-ai-report/{0}.md)".format
    assert table.splitlines() == [
        "| 2 | 0 | 2 | 0 |",
        "|:---:|:---:|:---:|:---:|",
        f"| {link('2020-05-06')} | {link('2020-03-04')} | {link('2020-02-03')} | {link('2020-01-02')} |",
        "| 2 | 0 | 1 | 9 |",
        f"| {link('2019-12-20')} |  |  |  |",
    ]


# ---- templates -------------------------------------------------------------------------------

SAMPLE = """---
date: 2099-01-01
status: ready
---

# 测试简报 (2099-01-01)：主题一/主题二

**一句话标语**

> 导读：本次1条。【新闻】一条测试新闻。

热身：

- 一条[热身](https://example.org/warm)消息；

## 业界新闻

- [2401.00001v1] [测试标题 | 测试来源](https://example.org/a)
标题：A Test Title
代码：https://example.org/code
摘要：第一段有**粗体**和`code`以及[链接](https://example.org/in)。
第二段。
    1. 第一点；
    2. 第二点。
"""


def test_user_template_overrides_builtin_by_file_name(tmp_path):
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / "2099-01-01.md"
    path.write_text(SAMPLE, encoding="utf-8")
    before = render_file(path, "plaintext", make_settings(tmp_path, issues)).body
    assert "本作品采用" in before
    user = tmp_path / "my-templates"
    (user / "plaintext").mkdir(parents=True)
    (user / "plaintext" / "footer.txt").write_text("—— {{ newsletter.name }} 自定义页脚 ——\n", encoding="utf-8")
    after = render_file(path, "plaintext", make_settings(tmp_path, issues, templates=user)).body
    assert after.rstrip().endswith("—— 嵌入式AI简报 自定义页脚 ——")
    assert "往期回顾" not in after
    assert before.split("本作品采用")[0].rstrip() == after.split("—— ")[0].rstrip()  # only the footer changed


def test_sample_renders_in_every_channel_of_the_family(tmp_path):
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / "2099-01-01.md"
    path.write_text(SAMPLE, encoding="utf-8")
    settings = make_settings(tmp_path, issues)
    github = render_file(path, "github", settings).body
    assert "- [2401.00001v1] [测试标题 | 测试来源](https://example.org/a)  \n标题：A Test Title  \n" in github
    assert "摘要：第一段有**粗体**和`code`以及[链接](https://example.org/in)。  \n第二段。\n    1. 第一点；" in github
    zhihu = render_file(path, "zhihu", settings)
    assert "个别链接打不开" not in zhihu.body
    assert not re.search(r"^#{5,}", zhihu.body, re.M) and "~~" not in zhihu.body and "colgroup" not in zhihu.body
    assert all(re.match(r"https?://\S+$", src) for src in re.findall(r"!\[[^\]]*\]\(([^)]*)\)", zhihu.body))
    aijishu = render_file(path, "aijishu", settings)
    assert aijishu.metadata["title"] == "测试简报 | 主题一/主题二"
    text = render_file(path, "plaintext", settings).body
    assert "第一段有粗体和code以及链接。" in text and "代码：https://example.org/code" in text
    assert "- [2401.00001v1] 测试标题 | 测试来源" in text


def test_zhihu_rejects_local_images(tmp_path):
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / "2099-01-01.md"
    path.write_text(SAMPLE.replace("第二段。", "第二段![图](pic.png)。"), encoding="utf-8")
    (issues / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))  # the reader checks it is there
    settings = make_settings(tmp_path, issues)
    # with [newsletter] image_base_url set (the default), the image is written at its public URL
    zhihu = render_file(path, "zhihu", settings)
    base = settings["newsletter"]["image_base_url"]
    assert f"![图]({base}pic.png)" in zhihu.body
    # without it, a local image is refused with what to do
    cfg = tmp_path / "publisher.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + '[newsletter]\nimage_base_url = ""\n', encoding="utf-8")
    with pytest.raises(SourceError, match="pic.png.*public http.*image_base_url"):
        render_file(path, "zhihu", load_settings(cfg))
    github = render_file(path, "github", settings)
    assert [img.ref for img in github.images] == ["pic.png"]
    assert github.images[0].path == issues / "pic.png"


# ---- the writer never drops a node ---------------------------------------------------------


class Strike:  # a node type the writers do not know
    def __init__(self, text: str):
        self.text = text


@pytest.mark.parametrize("writer", [MarkdownWriter(), PlainTextWriter()], ids=["markdown", "plaintext"])
def test_writer_raises_on_unknown_node(writer):
    assert writer.inline((Text("a"), Image("x.png", "alt"))) in ("a![alt](x.png)", "aalt")
    with pytest.raises(UnknownNodeError, match="Strike"):
        writer.inline((Text("a"), Strike("b")))
    with pytest.raises(UnknownNodeError, match="Strike"):
        writer.blocks((Paragraph((Text("a"),)), Strike("b")))


def test_render_context_without_archive_has_empty_past_list(tmp_path):
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / "2099-01-01.md"
    path.write_text(SAMPLE, encoding="utf-8")
    settings = make_settings(tmp_path, issues)
    issue = read_issue(path).issue
    ctx = context_for(settings, issue)
    assert isinstance(ctx, RenderContext) and [p.slug for p in ctx.archive] == ["2099-01-01"]
    assert "- 测试简报" not in render(issue, "plaintext", settings, ctx).body
