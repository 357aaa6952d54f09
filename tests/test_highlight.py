"""Code blocks highlighted with Pygments as inline styles (no classes) in wechat and email."""

from __future__ import annotations

import dataclasses
import re

import pytest
from publisher.channels.base import RenderContext
from publisher.channels.email import EmailChannel
from publisher.channels.wechat import WeChatChannel

from publisher.errors import ConfigError
from publisher.model import CodeBlock, Issue, Item, Paragraph, Section, Text
from publisher.settings import load_settings

CODE = 'def f(x):\n    return "<b>" + x  # note\n'


def issue(info: str) -> Issue:
    item = Item("t", None, summary=(Paragraph((Text("摘要"),)), CodeBlock(CODE, info)))
    import datetime as dt

    return Issue(date=dt.date(2026, 11, 30), title="嵌入式AI简报 (2026-11-30)", brand="嵌入式AI简报",
                 sections=(Section("开源项目", (item,)),))


def settings_with(tmp_path, style: str):
    base = load_settings(cwd=tmp_path)
    data = {k: dict(v) for k, v in base.data.items()}
    data["code"]["highlight_style"] = style
    return dataclasses.replace(base, data=data)


def code_of(body: str) -> str:
    return re.search(r"<pre\b.*?</pre>", body, re.S).group(0)


@pytest.mark.parametrize("channel", [WeChatChannel, EmailChannel])
def test_highlighted_with_inline_styles_only(tmp_path, channel):
    settings = settings_with(tmp_path, "friendly")
    pre = code_of(channel(RenderContext(settings)).render(issue("python")).body)
    spans = re.findall(r'<span style="([^"]+)">([^<]*)</span>', pre)
    assert ("color:#007020;font-weight:bold", "def") in spans  # friendly's keyword colour
    assert any(s.startswith("color:") and "font-style:italic" in s and "# note" in t for s, t in spans)
    assert "class=" not in pre and "<style" not in pre
    assert "&lt;b&gt;" in pre or "&#34;&lt;b&gt;&#34;" in pre  # code text still escaped
    text = re.sub(r"<[^>]+>", "", pre.replace("<br>", "\n")).replace("&nbsp;", " ")
    import html

    assert html.unescape(text).strip() == CODE.strip()  # nothing lost or added


@pytest.mark.parametrize("style, info", [("", "python"), ("friendly", ""), ("friendly", "no-such-lang")])
def test_monochrome_without_style_or_known_language(tmp_path, style, info):
    settings = settings_with(tmp_path, style)
    pre = code_of(WeChatChannel(RenderContext(settings)).render(issue(info)).body)
    assert "<span" not in pre


def test_unknown_style_is_a_config_error(tmp_path):
    settings = settings_with(tmp_path, "no-such-style")
    with pytest.raises(ConfigError, match=r"\[code\] highlight_style: unknown Pygments style 'no-such-style'"):
        WeChatChannel(RenderContext(settings)).render(issue("python"))
