"""Contracts every registered channel keeps: no markup injection, no lost node, no silent drop."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
from publisher.channels.base import Channel, RenderContext, Rendition, get_channel

from publisher.model import (
    Brief,
    Code,
    CodeBlock,
    Emphasis,
    Field,
    Image,
    Issue,
    Item,
    LineBreak,
    Link,
    ListBlock,
    ListItem,
    Paragraph,
    Quote,
    Section,
    SoftBreak,
    Strong,
    Text,
)
from publisher.settings import load_settings
from tests.conftest import builtin_channels

# every channel the project registers; a third-party channel installed beside it answers to its
# own tests, not to these built-in expectations
CHANNELS = builtin_channels()


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PUBLISHER_CONFIG", raising=False)
        proj = tmp_path_factory.mktemp("proj")
        # the web channel needs its public address (absolute URLs in its feed and metadata)
        (proj / "publisher.toml").write_text('[web]\nbase_url = "https://example.org/newsletter/"\n',
                                             encoding="utf-8")
        return load_settings(cwd=proj)


def channel(name: str, settings) -> Channel:
    try:
        cls = get_channel(name)
    except Exception as exc:  # another engineer's channel may not be importable yet
        pytest.skip(f"channel {name} is registered but cannot be loaded: {exc}")
    return cls(RenderContext(settings=settings))


def everything(r: Rendition) -> str:
    """Body and every text part of a rendition, entities decoded."""
    return html.unescape("\n".join([r.body, *r.parts.values()]))


def para(*inlines) -> Paragraph:
    return Paragraph(tuple(inlines))


def li(*blocks) -> ListItem:
    return ListItem(tuple(blocks))


def make_issue(sections=(), **kw) -> Issue:
    return Issue(
        date=dt.date(2026, 11, 23),
        title="测试简报 (2026-11-23)：词一/词二",
        brand="测试简报",
        topics=("词一", "词二"),
        tagline="测试标语",
        sections=tuple(sections),
        status="ready",
        **kw,
    )


# ---- XSS ------------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
ONERROR = '"><img src=x onerror=alert(1)>'


class Visible(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts = 0
        self.handlers: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
            self.scripts += tag == "script"
        self.handlers += [(tag, k) for k, _ in attrs if k.startswith("on")]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def xss_issue() -> Issue:
    item = Item(
        title=f"标题{SCRIPT}",
        url="https://example.org/x",
        source=ONERROR,
        summary=(para(Text(f"摘要{ONERROR}"), Text(SCRIPT)),),
        fields=(Field("标题", (Text(ONERROR),)),),
    )
    return make_issue(
        [Section("论文", (item,), note=(Text(SCRIPT),))],
        lead=(para(Text("导读" + SCRIPT)),),
        warmup=(Brief((Text(ONERROR),)),),
        digest=SCRIPT,
    )


@pytest.mark.parametrize("name", CHANNELS)
def test_user_text_never_becomes_markup(name, settings):
    ch = channel(name, settings)
    if ch.media_type != "text/html":
        pytest.skip(f"{name} is {ch.media_type}, not HTML")
    r = ch.render(xss_issue())
    parser = Visible()
    parser.feed(r.body)
    parser.close()
    assert parser.scripts == 0, f"{name}: a <script> element came through"
    assert parser.handlers == [], f"{name}: event handler attributes {parser.handlers}"
    text = "".join(parser.text)
    assert SCRIPT in text and ONERROR in text, f"{name}: the text must stay visible"


# ---- every node type ------------------------------------------------------------------------


def full_issue() -> Issue:
    inlines = (
        Text("WORDtext "),
        Code("WORDcode"),
        Strong((Text("WORDstrong"),)),
        Emphasis((Text("WORDemph"),)),
        Link("https://example.org/link", (Text("WORDlink"),), title="t"),
        Image("https://example.org/img.png", "WORDimgalt"),
        LineBreak(),
        Text("WORDafterbreak"),
        SoftBreak(),
        Text("WORDaftersoft"),
    )
    nested = ListBlock(
        (
            li(
                para(Text("WORDlevel1")),
                ListBlock((li(para(Text("WORDlevel2")), ListBlock((li(para(Text("WORDlevel3"))),))),)),
            ),
        )
    )
    ordered = ListBlock((li(para(Text("WORDordered1"))), li(para(Text("WORDordered2")))), ordered=True, start=3)
    item = Item(
        title="WORDtitle",
        url="https://example.org/item",
        source="WORDsource",
        arxiv="2001.00001v1",
        venue="WORDVENUE2020",
        repo="wordowner/wordrepo",
        extra=(Link("https://example.org/extra", (Text("WORDextra"),)),),
        fields=(Field("论文", (Text("WORDfield"),)), Field("代码", (Link("https://example.org/code", (Text("https://example.org/code"),)),))),
        summary=(
            Paragraph(inlines),
            nested,
            ordered,
            CodeBlock("WORDcodeblock()\n    WORDindented", "python"),
            Quote((para(Text("WORDquote")),)),
        ),
    )
    plain = Item(title="WORDplainitem", url=None)
    return make_issue(
        [Section("开源项目", (item, plain), note=(Text("WORDsectionnote"),))],
        lead=(para(Text("本次2条。WORDlead")),),
        warmup_intro="WORDwarmupintro",
        warmup=(Brief((Text("WORDbrief "), Link("https://example.org/brief", (Text("WORDbrieflink"),)))),),
        notes=(para(Text("WORDissuenote")),),
    )


WORDS = [
    "WORDtext", "WORDcode", "WORDstrong", "WORDemph", "WORDlink", "WORDimgalt", "WORDafterbreak",
    "WORDaftersoft", "WORDlevel1", "WORDlevel2", "WORDlevel3", "WORDordered1", "WORDordered2",
    "WORDcodeblock", "WORDindented", "WORDquote", "WORDfield", "WORDtitle", "WORDsource",
    "2001.00001v1", "WORDVENUE2020", "wordowner/wordrepo", "WORDextra", "WORDsectionnote", "WORDlead",
    "WORDwarmupintro", "WORDbrief", "WORDbrieflink", "WORDissuenote", "WORDplainitem", "开源项目",
]  # fmt: skip


@pytest.mark.parametrize("name", CHANNELS)
def test_every_node_type_survives(name, settings):
    r = channel(name, settings).render(full_issue())
    assert r.channel == name and r.body.strip()
    out = everything(r)
    missing = [w for w in WORDS if w not in out]
    assert not missing, f"{name} lost {missing}"


@dataclass(frozen=True)
class BogusInline:
    text: str = "BOGUSINLINE"


@dataclass(frozen=True)
class BogusBlock:
    text: str = "BOGUSBLOCK"


def _with_summary(*blocks) -> Issue:
    return make_issue([Section("论文", (Item("t", "https://example.org/t", summary=tuple(blocks)),))])


@pytest.mark.parametrize("name", CHANNELS)
@pytest.mark.parametrize(
    "issue,bogus",
    [
        (_with_summary(para(Text("a"), BogusInline())), "BogusInline"),
        (_with_summary(para(Strong((BogusInline(),)))), "BogusInline"),
        (_with_summary(BogusBlock()), "BogusBlock"),
        (_with_summary(ListBlock((li(BogusBlock()),))), "BogusBlock"),
        (make_issue(warmup=(Brief((BogusInline(),)),)), "BogusInline"),
    ],
    ids=["inline", "nested-inline", "block", "block-in-list", "brief"],
)
def test_unknown_node_raises(name, issue, bogus, settings):
    ch = channel(name, settings)
    with pytest.raises(Exception) as info:  # noqa: B017 - any error, as long as it is not dropped silently
        ch.render(issue)
    assert bogus in str(info.value), f"{name}: the error should name the node type: {info.value!r}"
