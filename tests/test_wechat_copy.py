"""Carrying the article into the mp.weixin editor: the preview's 复制到公众号 button in Debian's
Chromium (clipboard read back, then pasted into a contenteditable), and `render --copy`.

The ledger comes from a real push against tests/wechat_server.py, so the copied HTML carries the
mmbiz URLs that push recorded."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from publisher.channels.wechat.transport import WeChatTransport

from publisher.cli import main
from publisher.preview import write_preview
from publisher.settings import load_settings
from tests.test_preview import Tab
from tests.wechat_server import APP_ID, SECRET, WeChatServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "neuraltalk" / "issues"
ISSUE = "2026-11-23"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "issues")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    return tmp_path


def configure(root: Path, api_base: str = "http://127.0.0.1:9") -> None:
    (root / "publisher.toml").write_text(
        # the account's QR: generated from an explicitly configured target (a push refuses without one)
        '[newsletter]\nqr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n\n'
        '[paths]\nissues = "issues"\nout = "build"\nledger = "publisher.db"\n\n'
        f'[wechat]\napp_id = "{APP_ID}"\napi_base = "{api_base}"\n', encoding="utf-8")


def rendition_and_settings(root: Path):
    from publisher import pipeline

    settings = load_settings(root / "publisher.toml")
    issue, _ = pipeline.load(root / "issues" / f"{ISSUE}.md")
    return pipeline.render(issue, "wechat", settings), settings


def test_pasteable_uses_uploaded_urls_once_pushed(proj, capsys):
    configure(proj)
    rendition, settings = rendition_and_settings(proj)
    body, warnings = WeChatTransport.pasteable(rendition, settings)
    assert body == rendition.body
    assert len(warnings) == 1 and "2 image(s) not uploaded to WeChat yet (images/int4-pipeline.png, qr.png)" in warnings[0]
    assert f"publisher push {ISSUE} --channel wechat" in warnings[0]
    with WeChatServer() as server:
        configure(proj, server.url)
        assert main(["push", ISSUE, "--channel", "wechat"]) == 0, capsys.readouterr()
        uploaded = set(server.state.uploads)
    rendition, settings = rendition_and_settings(proj)
    body, warnings = WeChatTransport.pasteable(rendition, settings)
    assert warnings == []
    assert all(f'src="{url}"' in body for url in uploaded)
    assert 'src="images/' not in body and 'src="qr.png"' not in body


# ---- render --copy ---------------------------------------------------------------------------


def fake_tool(folder: Path, name: str, exit_code: int = 0) -> Path:
    """A stand-in for a clipboard tool (none can exist on a machine without a desktop): it records
    its arguments and what it was given."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f'#!/bin/sh\necho "$@" > "{folder}/{name}.args"\ncat > "{folder}/{name}.in"\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_render_copy_puts_html_on_the_clipboard(proj, capsys, monkeypatch):
    configure(proj)
    bin_dir = proj / "bin"
    fake_tool(bin_dir, "xclip")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc = main(["render", f"issues/{ISSUE}.md", "--channel", "wechat", "--copy"])
    out = capsys.readouterr()
    assert rc == 0, out
    rendition, _ = rendition_and_settings(proj)
    assert (bin_dir / "xclip.in").read_text(encoding="utf-8") == rendition.body
    assert (bin_dir / "xclip.args").read_text().split() == ["-selection", "clipboard", "-t", "text/html"]
    assert "copied" in out.err and "(xclip)" in out.err
    assert "not uploaded to WeChat yet" in out.err and out.out == ""


def test_render_copy_without_a_clipboard_tool_is_a_clear_error(proj, capsys, monkeypatch):
    configure(proj)
    empty = proj / "nothing"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    rc = main(["render", f"issues/{ISSUE}.md", "--channel", "wechat", "--copy"])
    out = capsys.readouterr()
    assert rc == 1
    assert "no clipboard tool found: install wl-clipboard (Wayland) or xclip (X11)" in out.err
    assert "Traceback" not in out.err


def test_render_copy_reports_a_failing_tool(proj, capsys, monkeypatch):
    configure(proj)
    fake_tool(proj / "bin", "xclip", exit_code=1)
    monkeypatch.setenv("PATH", str(proj / "bin"))
    rc = main(["render", f"issues/{ISSUE}.md", "--channel", "wechat", "--copy"])
    assert rc == 1 and "xclip failed (exit 1)" in capsys.readouterr().err


# ---- the preview's button in Chromium ---------------------------------------------------------


STYLES_JS = """(root) => {
  const pick = (sel) => {
    const el = root.querySelector(sel);
    if (!el) return null;
    const cs = getComputedStyle(el);
    return [cs.color, cs.fontSize, cs.fontWeight, cs.fontStyle, cs.backgroundColor, cs.borderBottom, cs.fontFamily];
  };
  return Object.fromEntries(['h1', 'h2', 'sup', 'pre', 'pre code span', 'blockquote', 'a']
    .map(s => [s, pick(s)]));
}"""


def test_copy_button_puts_the_rendition_on_the_clipboard_and_styles_survive_a_paste(browser, proj, capsys):
    with WeChatServer() as server:
        configure(proj, server.url)
        assert main(["push", ISSUE, "--channel", "wechat"]) == 0, capsys.readouterr()
    rendition, settings = rendition_and_settings(proj)
    expected, warnings = WeChatTransport.pasteable(rendition, settings)
    assert warnings == [] and "mmbiz.qpic.cn" in expected
    page_file = write_preview(settings, proj / "issues" / f"{ISSUE}.md", ["wechat"])
    # the page embeds exactly that HTML for the button
    tab = Tab(browser, 1000)
    try:
        tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = tab.page
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        # the feed card: cover, title, digest
        assert page.locator(".feed-card .feed-title").inner_text() == rendition.metadata["title"]
        assert page.locator(".feed-card .feed-digest").inner_text() == rendition.metadata["digest"]
        assert page.evaluate("document.querySelector('img.feed-cover').naturalWidth") > 0
        page.click("[data-copy]")
        assert "已复制" in page.locator(".copy-status").inner_text()
        flavours = page.evaluate("""async () => {
          const items = await navigator.clipboard.read();
          const out = {};
          for (const t of items[0].types) out[t] = await (await items[0].getType(t)).text();
          return out;
        }""")
        html = flavours["text/html"]
        # Chromium hands it back re-serialized (a charset <meta>, &#34; as "): the same DOM
        same = page.evaluate("""([a, b]) => {
          const dom = (s) => new DOMParser().parseFromString(s, 'text/html').body.innerHTML.trim();
          return [dom(a), dom(b)];
        }""", [html, expected])
        assert same[0].removeprefix('<meta charset="utf-8">') == same[1]
        assert len(same[1]) > 5000
        assert "嵌入式AI简报" in flavours["text/plain"] and "<" not in flavours["text/plain"][:200]

        # pasted into a contenteditable (what the mp editor is), the inline styles survive
        page.evaluate("""() => { const d = document.createElement('div'); d.id = 'editor';
          d.contentEditable = 'true'; d.style.width = '375px'; document.body.appendChild(d); d.focus(); }""")
        page.keyboard.press("Control+V")
        page.wait_for_function("document.querySelector('#editor h2') !== null")
        pasted = page.evaluate(STYLES_JS, page.locator("#editor").element_handle())
        frame = page.frame_locator("iframe.wechat-article").locator("body").element_handle()
        shown = page.evaluate(STYLES_JS, frame)
        for sel in ("h1", "h2", "sup", "pre", "pre code span", "blockquote"):
            assert shown[sel] is not None, sel
            # colour, size, weight, style, background, border: as in the rendition
            assert pasted[sel][:6] == shown[sel][:6], (sel, pasted[sel], shown[sel])
        assert json.dumps(tab.errors) == "[]"
    finally:
        tab.close()
