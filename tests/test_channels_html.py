"""The two HTML channels: WeChat (inline styles, numbered references) and email (inlined CSS)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from publisher.channels.base import RenderContext
from publisher.channels.email import UNSUBSCRIBE_PLACEHOLDER, EmailChannel
from publisher.channels.wechat import WeChatChannel

from publisher.errors import ConfigError, SourceError
from publisher.model import (
    Brief,
    CodeBlock,
    Image,
    Issue,
    Item,
    Link,
    ListBlock,
    ListItem,
    Paragraph,
    Section,
    Text,
)
from publisher.pipeline import load
from publisher.settings import load_settings
from tests.conftest import ORACLE, corpus_files, requires_shared

CORPUS_NAMES = [p.name for p in corpus_files()]
WECHAT_LIMIT = 20_000
EMAIL_LIMIT = 102 * 1024


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PUBLISHER_CONFIG", raising=False)
        return load_settings(cwd=tmp_path_factory.mktemp("proj"))


@pytest.fixture(scope="module")
def oracle():
    if not ORACLE.is_file():
        pytest.skip(f"oracle not found at {ORACLE}")
    spec = importlib.util.spec_from_file_location("shared_oracle", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ctx(settings, base_dir: Path | None = None) -> RenderContext:
    return RenderContext(settings=settings, base_dir=base_dir)


def make_issue(*sections: Section, lead: tuple[Paragraph, ...] = (), **kw) -> Issue:
    return Issue(
        date=dt.date(2026, 11, 23),
        title="测试简报 (2026-11-23)",
        brand="测试简报",
        lead=lead,
        sections=sections,
        **kw,
    )


def para(*inlines) -> Paragraph:
    return Paragraph(tuple(inlines))


class Tree(HTMLParser):
    """Collects tags, attributes, visible text and the maximum list nesting depth."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.depth = 0
        self.max_depth = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("ul", "ol"):
            self.depth += 1
            self.max_depth = max(self.max_depth, self.depth)

    def handle_endtag(self, tag):
        if tag in ("ul", "ol"):
            self.depth -= 1

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Tree:
    tree = Tree()
    tree.feed(html)
    tree.close()
    return tree


def without_media(css: str) -> str:
    """CSS text with every (balanced) @media block removed."""
    out, i = [], 0
    while True:
        j = css.find("@media", i)
        if j < 0:
            out.append(css[i:])
            return "".join(out)
        out.append(css[i:j])
        k = css.index("{", j)
        depth = 0
        for pos in range(k, len(css)):
            depth += {"{": 1, "}": -1}.get(css[pos], 0)
            if depth == 0:
                i = pos + 1
                break
        else:
            return "".join(out)


# ---- the whole corpus ----------------------------------------------------------------------


@requires_shared
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_wechat_and_email(name, imported_corpus, settings, oracle, tmp_path):
    source = imported_corpus / name
    original = Path(corpus_files()[0]).parent / name
    issue, _ = load(source)
    c = ctx(settings, source.parent)
    wechat = WeChatChannel(c).render(issue)
    email = EmailChannel(c).render(issue)

    # WeChat: only inline styles, no external links, under the draft API limit
    body = wechat.body
    assert len(body) < WECHAT_LIMIT, f"{name}: WeChat body {len(body)} chars"
    assert "<style" not in body and "<script" not in body.lower()
    assert not re.search(r"\s(class|id)=", body)
    for tag, attrs in parse(body).tags:
        if tag == "a":
            assert "mp.weixin.qq.com" in attrs["href"], f"external link kept as <a>: {attrs['href']}"
    assert wechat.metadata["content_length"] == len(body)
    assert len(wechat.metadata["digest"]) <= 128

    # email: under Gmail's clipping size, nothing but @media left in <style>
    html = email.body
    assert len(html.encode("utf-8")) < EMAIL_LIMIT, f"{name}: email {len(html.encode())} bytes"
    for css in re.findall(r"<style[^>]*>(.*?)</style>", html, re.S):
        assert "{" not in without_media(css), f"non-@media CSS left in <style>: {css[:80]}"
    # classes are kept only as hooks for the @media rules (inlined CSS needs none)
    media_css = " ".join(re.findall(r"<style[^>]*>(.*?)</style>", html, re.S))
    for cls in set(c for attr in re.findall(r'\sclass="([^"]*)"', html) for c in attr.split()):
        assert f".{cls}" in media_css, f"class {cls} is not used by any @media rule"
    assert UNSUBSCRIBE_PLACEHOLDER in html and UNSUBSCRIBE_PLACEHOLDER in email.parts[f"{issue.slug}.txt"]

    # every URL and ≥98% of the text: against the canonical source (strict), and against the
    # legacy original, where only what the importer drops (the old hand-written footer) may go
    source_urls = source.read_text(encoding="utf-8")
    # the 2019 link note 「PC端微信链接打不开请用手机打开」 is a channel convention the importer drops
    original_without_link_note = tmp_path / f"original-{name}"
    original_without_link_note.write_text(
        re.sub(r"(?m)^<font>注：PC端微信链接打不开请用手机打开</font>$", "", original.read_text(encoding="utf-8")),
        encoding="utf-8",
    )
    for rendition in (wechat, email):
        out = tmp_path / f"{rendition.channel}.html"
        out.write_text(rendition.body, encoding="utf-8")
        strict = oracle.compare(str(source), str(out))
        assert not strict["urls_lost"] and strict["text_kept"] >= 0.98, (rendition.channel, strict)
        legacy = oracle.compare(str(original_without_link_note), str(out))
        assert legacy["text_kept"] >= 0.98, (rendition.channel, legacy)
        assert all(url not in source_urls for url in legacy["urls_lost"]), (rendition.channel, legacy)


# ---- WeChat specifics -----------------------------------------------------------------------

EXT = "https://example.org/a"
WX = "https://mp.weixin.qq.com/s/abc"
BARE = "https://github.com/owner/bare"
BRIEF = "https://example.org/brief"


def reference_issue() -> Issue:
    item = Item(
        title="标题甲",
        url=EXT,
        source="来源",
        summary=(
            para(Text("再次提到"), Link(EXT, (Text("同一个链接"),)), Text("以及"), Link(WX, (Text("公众号文章"),))),
            para(Text("代码："), Link(BARE, (Text(BARE),))),
        ),
    )
    brief = Brief((Text("简讯"), Link(BRIEF, (Text("简讯链接"),))))
    return make_issue(Section("论文", (item,)), warmup=(brief,))


def test_wechat_references(settings):
    body = WeChatChannel(ctx(settings)).render(reference_issue()).body
    text_part, refs = body.split("参考资料")
    # one number per distinct URL, in document order of first use (warm-up before sections)
    assert re.findall(r"\[(\d+)\] ", refs) == ["1", "2", "3"]
    assert f"[1] 简讯链接: {BRIEF}" in refs and f"[2] 标题甲 | 来源: {EXT}" in refs and f"[3] {BARE}" in refs
    assert refs.count(EXT) == 1 and refs.count(BARE) == 1
    assert text_part.count("[2]") == 2 and text_part.count("[3]") == 1
    # mp.weixin.qq.com stays a real link; nothing else is a link
    hrefs = [a["href"] for tag, a in parse(body).tags if tag == "a"]
    assert hrefs == [WX]
    # a bare URL shows once in the text, with its number, not doubled
    assert text_part.count(BARE) == 1
    assert re.search(re.escape(BARE) + r"<sup[^>]*>\[3\]</sup>", text_part)


def test_wechat_lists_two_levels_content_kept(settings):
    def li(text, *nested):
        return ListItem((para(Text(text)), *nested))

    deep = ListBlock((li("第三层甲", ListBlock((li("第四层乙"),))), li("第三层丙")), ordered=True)
    lst = ListBlock((li("第一层", ListBlock((li("第二层", deep),))),))
    issue = make_issue(Section("博文", (Item("t", None, summary=(para(Text("摘要")), lst)),)))
    body = WeChatChannel(ctx(settings)).render(issue).body
    tree = parse(body)
    assert tree.max_depth <= 2
    text = "".join(tree.text)
    for word in ("第一层", "第二层", "第三层甲", "第四层乙", "第三层丙"):
        assert word in text
    # the email keeps the real nesting
    assert parse(EmailChannel(ctx(settings)).render(issue).body).max_depth == 4


def test_wechat_code_block_keeps_newlines_and_indentation(settings):
    code = "def f(x):\n    if x:\n        return  x < 2\n"
    issue = make_issue(Section("开源项目", (Item("t", None, summary=(para(Text("摘要")), CodeBlock(code, "python"))),)))
    body = WeChatChannel(ctx(settings)).render(issue).body
    text = re.sub(r"</?span[^>]*>", "", body)  # the highlighting's spans aside
    assert "def f(x):<br>&nbsp;&nbsp;&nbsp;&nbsp;if x:<br>" + "&nbsp;" * 8 + "return &nbsp;x &lt; 2" in text
    assert "\n    if" not in body


def test_wechat_metadata_digest_title_author(settings):
    long_lead = (para(Text("导读文字" * 60)),)
    r = WeChatChannel(ctx(settings)).render(make_issue(lead=long_lead))
    m = r.metadata
    assert len(m["digest"]) == 128 and m["digest"].endswith("…")
    assert m["title"] == "嵌入式AI简报(2026-11-23)" and m["title_length"] == len(m["title"])
    assert m["author"] == settings["newsletter"]["author"]
    assert m["content_source_url"].endswith("/2026-11-23.md")
    r2 = WeChatChannel(ctx(settings)).render(make_issue(lead=long_lead, digest="短摘要", author="某人"))
    assert r2.metadata["digest"] == "短摘要" and r2.metadata["author"] == "某人"
    body = r.body
    assert "往期回顾：见公众号主菜单【历史消息】" in body and "阅读原文" in body


def test_wechat_qr_is_the_real_image_unless_a_target_is_configured(settings):
    # shipped defaults: no made-up target is encoded; the account's real QR image by its URL
    r = WeChatChannel(ctx(settings)).render(make_issue())
    assert [i for i in r.images if i.role == "qr"] == []
    assert f'src="{settings["newsletter"]["qr_public_url"]}"' in r.body
    # an explicitly configured target: generated in memory with segno
    data = {k: dict(v) for k, v in settings.data.items()}
    data["newsletter"]["qr_target"] = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzREAL=="
    r = WeChatChannel(ctx(type(settings)(data=data, file=None, root=settings.root))).render(make_issue())
    (qr,) = [i for i in r.images if i.role == "qr"]
    assert qr.ref == "qr.png" and qr.data.startswith(b"\x89PNG") and qr.path is None
    assert f'src="{qr.ref}"' in r.body


def test_wechat_local_images_and_cover(settings, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "fig 1.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "cover.jpg").write_bytes(b"jpeg")
    item = Item("t", None, summary=(para(Image("img/fig 1.png", "图一")),))
    issue = make_issue(Section("博文", (item,)), cover="cover.jpg")
    r = WeChatChannel(ctx(settings, tmp_path)).render(issue)
    roles = {i.role: i for i in r.images}
    assert roles["inline"].ref == "img/fig 1.png" and roles["inline"].path == tmp_path / "img" / "fig 1.png"
    assert roles["cover"].ref == "cover.jpg" and roles["cover"].media_type == "image/jpeg"
    assert 'src="img/fig 1.png"' in r.body
    # an http(s) image of another site stays an image: the push downloads and uploads it
    ext = make_issue(Section("博文", (Item("t", None, summary=(para(Image("https://x.org/p.png", "外图")),)),)))
    body = WeChatChannel(ctx(settings)).render(ext).body
    assert '<img src="https://x.org/p.png" alt="外图"' in body
    # any other scheme cannot be fetched: a reference, its URL kept
    odd = make_issue(Section("博文", (Item("t", None, summary=(para(Image("ftp://x.org/p.png", "外图")),)),)))
    body = WeChatChannel(ctx(settings)).render(odd).body
    assert "<img src=\"ftp://" not in body and "ftp://x.org/p.png" in body and "[外图]" in body
    with pytest.raises(SourceError, match="missing.png"):
        missing = make_issue(Section("博文", (Item("t", None, summary=(para(Image("missing.png")),)),)))
        WeChatChannel(ctx(settings, tmp_path)).render(missing)


def test_wechat_qr_image_setting(settings, tmp_path):
    data = {k: dict(v) for k, v in settings.data.items()}
    data["newsletter"]["qr_image"] = "nope.jpg"
    bad = type(settings)(data=data, file=None, root=tmp_path)
    with pytest.raises(ConfigError, match="qr_image"):
        WeChatChannel(ctx(bad)).render(make_issue())
    (tmp_path / "nope.jpg").write_bytes(b"jpg")
    r = WeChatChannel(ctx(bad)).render(make_issue())
    (qr,) = [i for i in r.images if i.role == "qr"]
    assert qr.path == tmp_path / "nope.jpg" and 'src="nope.jpg"' in r.body


# ---- email specifics ------------------------------------------------------------------------


def test_email_parts_and_metadata(settings):
    issue = reference_issue()
    issue = make_issue(*issue.sections, lead=(para(Text("本次1条。导读内容")),))
    r = EmailChannel(ctx(settings)).render(issue)
    m = r.metadata
    assert m["subject"] == issue.title
    assert m["preheader"] == "本次1条。导读内容"
    assert m["view_url"].endswith("/2026-11-23.md")
    assert m["unsubscribe_placeholder"] == UNSUBSCRIBE_PLACEHOLDER
    tree = parse(r.body)
    spans = [a for tag, a in tree.tags if tag == "span" and "display:none" in a.get("style", "")]
    assert spans, "hidden preheader span"
    hrefs = [a["href"] for tag, a in tree.tags if tag == "a"]
    assert UNSUBSCRIBE_PLACEHOLDER in hrefs and m["view_url"] in hrefs and EXT in hrefs and WX in hrefs
    imgs = [a for tag, a in tree.tags if tag == "img"]
    assert all(a.get("alt") and a.get("width") and a.get("height") for a in imgs)
    (qr,) = [a for a in imgs if a["src"] == settings["newsletter"]["qr_public_url"]]
    assert qr["alt"] and qr["width"] == "160" and qr["height"] == "160"
    assert settings["newsletter"]["license_name"] in r.body
    text = r.parts["2026-11-23.txt"]
    assert "<" not in text.replace("< ", "") and UNSUBSCRIBE_PLACEHOLDER in text
    assert f"同一个链接 ({EXT})" in text and text.count(BARE) == 1 and "本次1条。导读内容" in text


def test_email_escapes_and_inlines_once(settings, monkeypatch):
    import premailer

    calls = []
    original = premailer.Premailer.transform

    def counting(self, *a, **kw):
        calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(premailer.Premailer, "transform", counting)
    issue = make_issue(Section("论文", (Item("A & B <i>", "https://e.org/?a=1&b=2"),)))
    r = EmailChannel(ctx(settings)).render(issue)
    assert len(calls) == 1
    assert "A &amp; B &lt;i&gt;" in r.body and 'href="https://e.org/?a=1&amp;b=2"' in r.body
    assert re.search(r"<td[^>]*style=\"[^\"]*padding", r.body), "CSS was inlined"
