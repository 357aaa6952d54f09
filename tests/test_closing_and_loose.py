"""Issue 21 item 19: a section's closing text that goes on with a numbered list stays the
section's (never folded into the last item), and a loose item list (a blank line between items)
stays loose — through the importer, the reader and the github channel, compared with the
archive by an independent CommonMark parser (markdown-it-py, tests/test_commonmark_structure.py).

The published corpus has no such section (checked: no loose item list, no field-shaped closing
paragraph), so the archives here are written in its exact format: Jekyll front matter, hard
breaks, the link notes, the footer."""

from __future__ import annotations

import pytest

from publisher.legacy import import_legacy
from publisher.reader import parse_issue
from tests.test_channels_markdown import make_settings, render_file
from tests.test_commonmark_structure import differences

HEAD = """---
layout: default
---

# 嵌入式AI简报 (2019-05-15)

**关注模型压缩、低比特量化、移动端推理加速优化、部署**\x20\x20

> 注：个别链接打不开，请点击文末【阅读原文】跳转

## 论文

"""
TAIL = """
## 博文

- [标题三 | 来源](https://example.com/c)\x20\x20
摘要：三。\x20\x20

> 注：个别链接打不开，请点击文末【阅读原文】跳转

## [往期回顾](https://github.com/ysh329/awesome-embedded-ai)

----

![wechat_qrcode](../wechat_qrcode.jpg)
"""
ITEMS_TIGHT = """- [标题一 | 来源](https://example.com/a)\x20\x20
摘要：一。\x20\x20
- [标题二 | 来源](https://example.com/b)\x20\x20
摘要：二。\x20\x20
"""
ITEMS_LOOSE = ITEMS_TIGHT.replace("一。  \n- ", "一。  \n\n- ")

CLOSINGS = {
    "colon-list": "\n本节最后说明如下：  \n1. 第一点；  \n2. 第二点。  \n",
    "field-shaped": "\n总结：以上三篇文章分别是：  \n1. EvaNet：第一批进化的视频结构；  \n2. AssembleNet：更强的模型。  \n",
    "label-only": "\n注：如下  \n1. 第一点；  \n2. 第二点。  \n",
    "indented-list": "\n2019年：回顾如下：  \n  1. 第一点；  \n  2. 第二点。  \n",
    "then-paragraph": "\n小结：见下：  \n1. 第一点；  \n\n最后一段。  \n",
}


def _render_archive(archive: str, tmp_path):
    imported = import_legacy(archive, "archive.md")
    issues = tmp_path / "issues"
    issues.mkdir()
    path = issues / f"{imported.date}.md"
    path.write_text(imported.text, encoding="utf-8")
    settings = make_settings(tmp_path, issues)
    return imported, render_file(path, "github", settings).body


@pytest.mark.parametrize("closing", list(CLOSINGS), ids=list(CLOSINGS))
@pytest.mark.parametrize("items", ["tight", "loose"])
def test_github_channel_renders_the_archive_structure(closing, items, tmp_path):
    archive = HEAD + (ITEMS_LOOSE if items == "loose" else ITEMS_TIGHT) + CLOSINGS[closing] + TAIL
    imported, rendered = _render_archive(archive, tmp_path)
    section = imported.read.issue.sections[0]
    assert len(section.items) == 2 and section.closing, "the closing text is the section's"
    assert all("第一点" not in str(item) and "EvaNet" not in str(item) for item in section.items)
    assert section.loose is (items == "loose")
    diff = differences(archive, rendered)
    assert not diff, "\n".join(diff[:40])


def test_the_canonical_reader_keeps_closing_text_and_looseness():
    src = ("---\ndate: 2026-11-23\n---\n\n# 嵌入式AI简报 (2026-11-23)：x\n\n## 论文\n\n"
           "- [一 | 来源](https://example.com/a)\n摘要：一。\n\n"
           "- [二 | 来源](https://example.com/b)\n标题：字段\n摘要：二。\n\n"
           "总结：以下两点：\n1. 甲；\n2. 乙。\n\n## 博文\n\n- [三](https://example.com/c)\n摘要：三。\n")
    issue = parse_issue(src, "2026-11-23.md").issue
    first, second = issue.sections
    assert first.loose and not second.loose
    assert [f.label for f in first.items[1].fields] == ["标题"], "a field right under its item stays a field"
    assert len(first.items[1].summary) == 1 and len(first.closing) == 2


def test_a_field_after_a_blank_line_inside_an_item_would_be_shown_after_the_list_by_github():
    """The rule the fix relies on, checked with the independent parser: GitHub ends the list at
    an unindented line after a blank line, field-shaped or not."""
    import markdown_it

    tokens = markdown_it.MarkdownIt("commonmark").parse("- [a](https://a.example)\n\n总结：如下：\n")
    assert [t.type for t in tokens][-3:] == ["paragraph_open", "inline", "paragraph_close"]
    assert tokens[-4].type == "bullet_list_close"
