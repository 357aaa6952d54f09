"""Issue 26: WeChat themes, formulas, footnotes, tables and captions.

Render-only checks run over the whole corpus × every theme; the browser checks (375 px overflow,
formulas drawn, golden screenshots per theme, the 复制到公众号 paste) use the typesetting fixture
only, one page per theme. Refresh the screenshots on purpose with --update-goldens.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
from publisher.channels.wechat import load_theme, parse_styles, theme_names

from publisher import pipeline
from publisher.cli import main
from publisher.errors import ConfigError, SourceError
from publisher.model import Math, MathBlock, Table
from publisher.reader import parse_issue
from publisher.settings import load_settings
from tests.conftest import builtin_channels, requires_shared
from tests.wechat_server import APP_ID, SECRET, WeChatServer

FIXTURE = Path(__file__).parent / "fixtures" / "typeset"
ISSUE = FIXTURE / "2026-12-07.md"
SHOTS = Path(__file__).parent / "golden" / "screenshots"
THEMES = ("default", "jade", "ink")
BUDGET = 19_999


def settings_for(root: Path, issues: Path, theme: str = "default", extra: str = "", templates: str = ""):
    root.mkdir(parents=True, exist_ok=True)
    (root / "publisher.toml").write_text(
        f'[paths]\nissues = "{issues}"\nledger = "{root / "publisher.db"}"\ntemplates = "{templates}"\n'
        f'[channels]\nenabled = {json.dumps(builtin_channels())}\n'
        f'[web]\nbase_url = "https://example.org/n/"\n[wechat]\ntheme = "{theme}"\n{extra}', encoding="utf-8")
    return load_settings(root / "publisher.toml")


def with_theme(settings, theme: str):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in settings.data.items()}
    data["wechat"]["theme"] = theme
    return dataclasses.replace(settings, data=data)


@pytest.fixture(scope="module")
def fixture_settings(tmp_path_factory):
    return settings_for(tmp_path_factory.mktemp("typeset"), FIXTURE)


# ---- the model ------------------------------------------------------------------------------

def test_fixture_reads_formulas_footnotes_tables_and_captions():
    issue = pipeline.load(ISSUE)[0]
    blocks = [b for it in issue.items for b in it.summary]
    assert any(isinstance(b, MathBlock) and r"\frac{s}{2}" in b.tex for b in blocks)
    table = next(b for b in blocks if isinstance(b, Table))
    assert len(table.head) == 7 and len(table.rows) == 3 and table.aligns[:2] == ("left", "right")
    assert [n.label for n in issue.footnotes] == ["scale", "mse"] and [n.number for n in issue.footnotes] == [1, 2]
    text = repr(issue.sections)
    assert "Math(tex='50\\\\%'" in text and "FootnoteRef(label='mse', number=2)" in text


@pytest.mark.parametrize("text", ["costs $5 and $10 today", "Perf/$(BOM):>2X", "a $ b $ c", "cost $5/$6"])
def test_dollar_amounts_stay_text(text):
    src = f"# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：{text}\n"
    issue = parse_issue(src, "x.md").issue
    para = issue.items[0].summary[0]
    assert not any(isinstance(n, Math) for n in para.children)
    assert text in "".join(getattr(n, "text", "") for n in para.children)


BAD = [
    ("摘要：见 $\\frac{1}{$ 。\n", 6, "formula"),
    ("摘要：见 $\\notacommand x$ 。\n", 6, "Unknown symbol"),
    ("摘要：见注[^nope]。\n", 6, "footnote [^nope] is used but never defined"),
    ("摘要：见注[^a]。\n\n[^a]: one\n[^a]: two\n", 9, "defined twice"),
    ("摘要：公式\n$$\nx^2\n", 7, "never closed"),
    ("摘要：见注[^a]。\n\n[^a]: 见 [^b]\n[^b]: x\n", 8, "cannot nest"),
    # latex2mathml copies markup in \text{} through: refused, never written into the web page
    ("摘要：$\\text{<script>alert(1)</script>}$\n", 6, "<script> element, which is not MathML"),
    ("摘要：$\\text{<img src=x onerror=alert(1)>}$\n", 6, "cannot be rendered"),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD, ids=[b[2][:20] for b in BAD])
def test_malformed_constructs_are_errors_with_their_line(body, line, message):
    src = f"# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n{body}"
    with pytest.raises(SourceError) as err:
        parse_issue(src, "issues/2026-12-07.md")
    assert err.value.line == line and message in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_check_reports_a_malformed_formula_with_file_and_line(project, capsys):
    bad = ISSUE.read_text(encoding="utf-8").replace(r"\frac{s}{2}", r"\frac{s}{")
    (project / "issues" / "2026-12-07.md").write_text(bad, encoding="utf-8")
    (project / "issues" / "images").mkdir()
    shutil.copy(FIXTURE / "images" / "int4-pipeline.png", project / "issues" / "images")
    assert main(["check", "issues/2026-12-07.md"]) != 0
    err = capsys.readouterr()
    out = err.out + err.err
    assert "2026-12-07.md:21:" in out and "cannot be rendered" in out and "Traceback" not in out


def test_a_huge_formula_is_refused_before_any_renderer_sees_it():
    src = "# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：$" + "x+" * 2000 + "x$\n"
    with pytest.raises(SourceError, match="formula of 4,001 characters"):
        parse_issue(src, "x.md")


def test_too_many_formulas_is_an_error_not_minutes_of_layout():
    lines = "\n".join(f"摘要{k}：$x_{{{k}}}$ 与 $y_{{{k}}}$" for k in range(260))
    src = f"# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n{lines}\n"
    with pytest.raises(SourceError, match="more than 500 formulas"):
        parse_issue(src, "x.md")


def test_unused_footnote_is_a_warning():
    src = "# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：x\n\n[^z]: 没人用\n"
    result = parse_issue(src, "x.md")
    assert any(w.code == "footnote-unused" for w in result.warnings) and result.issue.footnotes == ()


# ---- every channel ----------------------------------------------------------------------------

def test_every_channel_renders_the_fixture(fixture_settings):
    issue = pipeline.load(ISSUE)[0]
    ctx = pipeline.context_for(fixture_settings, issue)
    out = {ch: pipeline.render(issue, ch, fixture_settings, ctx) for ch in builtin_channels()}
    wechat, email, web = out["wechat"].body, out["email"].body, out["web"].body
    # formulas: images in wechat and email (uploaded / published like any image), MathML on the web,
    # LaTeX in the Markdown and text channels
    formula_refs = [i.ref for i in out["wechat"].images if i.ref.startswith("math-")]
    assert len(formula_refs) >= 10 and all(f'src="{r}"' in wechat for r in formula_refs)
    assert all(i.data[:8] == b"\x89PNG\r\n\x1a\n" for i in out["wechat"].images if i.ref.startswith("math-"))
    assert 'alt="q = \\mathrm{round}(x / s)"' in wechat
    assert "<math" in web and "<mfrac>" in web and "$" not in web.split("<article>")[1].split("</article>")[0]
    assert "raw.githubusercontent.com" in email and "/math-" in email
    # every formula image the email links to is published by the web site too, beside the issue's
    # page (where `[newsletter] image_base_url = "<site>/{date}"` points), with the same bytes
    emailed = {i.ref: i.data for i in out["email"].images if i.ref.startswith("math-")}
    on_site = {i.ref: i.data for i in out["web"].images if i.ref.startswith(f"{issue.slug}/math-")}
    assert emailed and {f"{issue.slug}/{ref}": data for ref, data in emailed.items()}.items() <= on_site.items()
    for ch in ("github", "zhihu", "aijishu"):
        assert r"$q = \mathrm{round}(x / s)$" in out[ch].body and "$$\n" in out[ch].body
        assert "[^scale]" in out[ch].body and "\n[^scale]: 也有实现取" in out[ch].body
        assert "| :--- | ---: |" in out[ch].body
    for ch in ("plaintext", "telegram"):
        assert "[1]" in out[ch].body and "$s = \\max|x| / 128$" in out[ch].body
    assert "示例SoC-A (Cortex-A78 ×4) | 120.5" in out["plaintext"].body
    # footnotes: WeChat numbers them with the link references, the others list them after the article
    assert "[2] 也有实现取" in wechat and 'href="#fn-1"' in web and 'id="fn-2"' in email
    assert "注释\n[1] 也有实现取" in out["plaintext"].body and "注释\n[1] 也有实现取" in out["email"].parts["2026-12-07.txt"]
    # tables scroll inside their own box; captions under their image
    assert 'overflow-x:auto"><table' in wechat and "<figcaption" in wechat and ">对称量化的误差分布</figcaption>" in web
    assert "<figcaption" in email and "对称量化的误差分布</figcaption>" in email
    # zhihu imports pipe tables (a <colgroup> table would import empty): none is written
    from publisher.channels.zhihu.limits import check as zhihu_check

    assert "<colgroup" not in out["zhihu"].body and not [v for v in zhihu_check(out["zhihu"]) if v.what == "colgroup"]
    # the archive publishes the formula images email points at
    github_imgs = {i.ref for i in out["github"].images}
    email_srcs = [ref for ref in (i.ref for i in out["email"].images) if ref.startswith("math-")]
    assert set(email_srcs) <= github_imgs


def test_every_theme_styles_every_part_and_stays_in_budget(fixture_settings):
    issue = pipeline.load(ISSUE)[0]
    sizes = {}
    for theme in THEMES:
        s = with_theme(fixture_settings, theme)
        r = pipeline.render(issue, "wechat", s, pipeline.context_for(s, issue))
        styles = load_theme(pipeline.context_for(s, issue).env, theme)
        assert {".article", ".refs", ".caption", ".table-wrap"} <= set(styles), theme
        assert "PingFang SC" in styles[".article"] and "Noto Sans CJK SC" in styles[".article"]
        assert r.body.startswith(f'<section style="{styles[".article"]}">')
        assert 'class=' not in r.body and "<style" not in r.body
        sizes[theme] = len(r.body)
    assert max(sizes.values()) < BUDGET and len(set(sizes.values())) == 3, sizes


@requires_shared
def test_every_corpus_issue_renders_in_every_theme_under_the_budget(imported_corpus, tmp_path):
    """Each corpus issue × each theme: under 20,000 characters, or `check` names the budget."""
    settings = settings_for(tmp_path, imported_corpus)
    over = []
    for path in sorted(imported_corpus.glob("*.md")):
        issue = pipeline.load(path)[0]
        for theme in THEMES:
            s = with_theme(settings, theme)
            r = pipeline.render(issue, "wechat", s, pipeline.context_for(s, issue))
            if len(r.body) > BUDGET:
                from publisher.channels.wechat.limits import check

                assert any(v.code == "content" for v in check(r)), (path.name, theme)
                over.append((path.name, theme, len(r.body)))
    assert over == [], over  # none is over today; one that is would be reported by check (above)


def test_a_user_theme_in_the_templates_folder(tmp_path, fixture_settings):
    tpl = tmp_path / "tpl" / "wechat" / "themes"
    tpl.mkdir(parents=True)
    (tpl / "mine.css").write_text(".article { color:#123456;font-size:16px }\nh2 { color:#654321 }\n", encoding="utf-8")
    s = settings_for(tmp_path / "p", FIXTURE, "mine", templates=str(tmp_path / "tpl"))
    issue = pipeline.load(ISSUE)[0]
    ctx = pipeline.context_for(s, issue)
    assert "mine" in theme_names(ctx.env) and {"default", "jade", "ink"} <= set(theme_names(ctx.env))
    body = pipeline.render(issue, "wechat", s, ctx).body
    assert body.startswith('<section style="color:#123456;font-size:16px">') and '<h2 style="color:#654321">' in body
    # the formula ink follows the theme's text colour
    img = next(i for i in pipeline.render(issue, "wechat", s, ctx).images if i.ref.startswith("math-"))
    from PIL import Image

    with Image.open(io.BytesIO(img.data)) as im:
        colours = {c for _, c in im.convert("RGBA").getcolors(1 << 20) if c[3] == 255}
    assert (0x12, 0x34, 0x56, 255) in colours


@pytest.mark.parametrize(("css", "message"), [
    (".artcle { color:red }", "unknown selector '.artcle'"),
    ("h2 { background:url(http://x/y.png) }", "no quotes"),
    ('.article { font-family:"PingFang SC" }', "no quotes"),
    ("h2 color:red", "cannot read"),
])
def test_a_bad_theme_is_a_config_error(css, message):
    with pytest.raises(ConfigError, match=message):
        parse_styles(css, "wechat/themes/bad.css")


def test_an_unknown_theme_names_the_themes(fixture_settings):
    issue = pipeline.load(ISSUE)[0]
    for bad in ("nope", "../../etc/passwd"):
        s = with_theme(fixture_settings, bad)
        with pytest.raises(ConfigError) as err:
            pipeline.render(issue, "wechat", s, pipeline.context_for(s, issue))
        assert "default, ink, jade" in str(err.value)


def test_hostile_text_in_cells_notes_and_captions_is_escaped(fixture_settings):
    src = ("# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：表[^x]\n"
           "| <b>a</b> | {{ x }} |\n|---|---|\n| <script>alert(1)</script> | a\\|b |\n"
           "![<img src=x onerror=alert(1)> 图](https://example.com/i.png)\n\n[^x]: <i>note</i> {% raw %}\n")
    issue = parse_issue(src, "x.md").issue
    ctx = pipeline.context_for(fixture_settings, issue)
    for ch in ("wechat", "email", "web"):
        body = pipeline.render(issue, ch, fixture_settings, ctx).body
        assert "<script>alert" not in body and "<b>a</b>" not in body and "<i>note</i>" not in body, ch
        assert "<img src=x" not in body, ch
    md = pipeline.render(issue, "github", fixture_settings, ctx).body
    assert "| &lt;b&gt;a&lt;/b&gt; |" in md or "| <b>a</b> |" not in md
    assert "a\\|b" in md


def test_formulas_with_liquid_braces_reach_github_verbatim(fixture_settings):
    src = ("# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：$x^{{2}}$ 与 $a_{{b}}$\n"
           "$$\n\\frac{{1}}{2}\n$$\n")
    issue = parse_issue(src, "x.md").issue
    md = pipeline.render(issue, "github", fixture_settings, pipeline.context_for(fixture_settings, issue)).body
    assert "{% raw %}$x^{{2}}${% endraw %}" in md and "{% raw %}$a_{{b}}${% endraw %}" in md
    assert "    {% raw %}\n    $$\n    \\frac{{1}}{2}\n    $$\n    {% endraw %}" in md
    # zhihu has no Liquid: the LaTeX as written
    zh = pipeline.render(issue, "zhihu", fixture_settings, pipeline.context_for(fixture_settings, issue)).body
    assert "$x^{{2}}$" in zh and "raw %}" not in zh


# ---- in Chromium ------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<style>body{{margin:0;padding:0 12px;background:#fff}}</style></head><body>{body}</body></html>"""

CHECK_JS = """() => {
  const imgs = [...document.querySelectorAll('img')];
  const formulas = imgs.filter(i => i.getAttribute('src').startsWith('math-'));
  return {scroll: document.scrollingElement.scrollWidth, view: window.innerWidth,
          formulas: formulas.length,
          drawn: formulas.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0).length,
          tableBox: (() => { const w = document.querySelector('table').parentElement.getBoundingClientRect();
                             return [w.left, w.right]; })(),
          tableScrolls: (() => { const w = document.querySelector('table').parentElement;
                                 return w.scrollWidth > w.clientWidth; })()};
}"""


def _page_for(tmp_path: Path, settings, theme: str) -> Path:
    issue = pipeline.load(ISSUE)[0]
    s = with_theme(settings, theme)
    r = pipeline.render(issue, "wechat", s, pipeline.context_for(s, issue))
    folder = tmp_path / theme
    pipeline.write_rendition(r, folder)
    page = folder / "page.html"
    page.write_text(PAGE.format(body=r.body), encoding="utf-8")
    return page


def _differs(a: bytes, b: Path) -> float:
    """The share of pixels that differ visibly (any channel by more than 24)."""
    from PIL import Image, ImageChops

    with Image.open(io.BytesIO(a)) as x, Image.open(b) as y:
        x, y = x.convert("RGB"), y.convert("RGB")
        if x.size != y.size:
            return 1.0
        diff = ImageChops.difference(x, y).convert("L").point(lambda v: 255 if v > 24 else 0)
        return sum(diff.histogram()[255:]) / (x.size[0] * x.size[1])


@pytest.mark.parametrize("theme", THEMES)
def test_375px_no_overflow_formulas_drawn_and_golden_screenshot(browser, tmp_path, fixture_settings, theme, request):
    page_file = _page_for(tmp_path, fixture_settings, theme)
    context = browser.new_context(viewport={"width": 375, "height": 800}, device_scale_factor=1)
    try:
        page = context.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else route.fulfill(status=404, body=""))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        got = page.evaluate(CHECK_JS)
        assert got["scroll"] <= got["view"] == 375, got  # the page never scrolls sideways
        assert got["formulas"] >= 10 and got["drawn"] == got["formulas"], got
        assert got["tableBox"][1] <= 375 and got["tableScrolls"], got  # the wide table scrolls in its box
        shot = page.screenshot(full_page=True)
        golden = SHOTS / f"wechat-{theme}.png"
        if request.config.getoption("--update-goldens") or not golden.exists():
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(shot)
            if not request.config.getoption("--update-goldens"):
                pytest.fail(f"no golden screenshot {golden}: written now; review it and commit it")
            return
        share = _differs(shot, golden)
        assert share < 0.003, f"{theme}: {share:.2%} of the pixels differ from {golden} (refresh with --update-goldens)"
    finally:
        context.close()


def test_the_themes_look_different(tmp_path):
    """The golden screenshots are of three distinct looks (a theme that silently fell back to
    another would pass its own comparison)."""
    shots = [SHOTS / f"wechat-{t}.png" for t in THEMES]
    if not all(p.exists() for p in shots):
        pytest.skip("golden screenshots not written yet")
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert _differs(shots[a].read_bytes(), shots[b]) > 0.01


PASTE_JS = """(root) => {
  const pick = (sel) => {
    const el = root.querySelector(sel);
    if (!el) return null;
    const cs = getComputedStyle(el);
    return [cs.color, cs.fontSize, cs.fontWeight, cs.backgroundColor, cs.borderBottom, cs.textAlign,
            cs.borderLeft, cs.fontFamily];
  };
  return Object.fromEntries(['h1', 'h2', 'sup', 'th', 'td', 'figcaption', 'code',
                             'img[alt^="q ="]'].map(s => [s, pick(s)]));
}"""


@pytest.mark.parametrize("theme", THEMES)
def test_copy_button_pastes_every_theme_with_formulas_and_tables(browser, tmp_path, theme):
    from publisher.preview import write_preview
    from tests.test_preview import Tab

    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root / "issues")
    settings = settings_for(root, root / "issues", theme, '[newsletter]\nqr_target = "https://mp.weixin.qq.com/x"\n')
    page_file = write_preview(settings, ISSUE.parent and root / "issues" / ISSUE.name, ["wechat"])
    tab = Tab(browser, 1000)
    try:
        tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = tab.page
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        page.click("[data-copy]")
        assert "已复制" in page.locator(".copy-status").inner_text()
        page.evaluate("""() => { const d = document.createElement('div'); d.id = 'editor';
          d.contentEditable = 'true'; d.style.width = '375px'; document.body.appendChild(d); d.focus(); }""")
        page.keyboard.press("Control+V")
        page.wait_for_function("document.querySelector('#editor table') !== null")
        pasted = page.evaluate(PASTE_JS, page.locator("#editor").element_handle())
        frame = page.frame_locator("iframe.wechat-article").locator("body").element_handle()
        shown = page.evaluate(PASTE_JS, frame)
        for sel, style in shown.items():
            assert style is not None, (theme, sel)
            assert pasted[sel][:7] == style[:7], (theme, sel, pasted[sel], style)
        assert page.evaluate("document.querySelectorAll('#editor img[alt]').length") >= 10
    finally:
        tab.close()


# ---- push ----------------------------------------------------------------------------------------

def test_push_uploads_formula_images_and_replaces_them_by_mmbiz_urls(tmp_path, monkeypatch, capsys):
    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root / "issues")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    with WeChatServer() as server:
        (root / "publisher.toml").write_text(
            '[newsletter]\nqr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n'
            '[paths]\nissues = "issues"\nledger = "publisher.db"\n'
            f'[wechat]\napp_id = "{APP_ID}"\napi_base = "{server.url}"\ntheme = "jade"\n', encoding="utf-8")
        assert main(["push", "2026-12-07", "--channel", "wechat"]) == 0, capsys.readouterr()
        settings = load_settings(root / "publisher.toml")
        issue = pipeline.load(root / "issues" / "2026-12-07.md")[0]
        rendition = pipeline.render(issue, "wechat", settings)
        formulas = [i.ref for i in rendition.images if i.ref.startswith("math-")]
        content = next(iter(server.state.drafts.values()))[0]["content"]
        uploads = list(server.state.uploads)
        assert len(uploads) >= len(formulas) + 2  # the formulas, the figure, the QR code
        assert not any(f'src="{ref}"' in content for ref in formulas)
        assert content.count('src="http://mmbiz.qpic.cn/') + content.count('src="https://mmbiz.qpic.cn/') >= len(formulas) + 2
        # a second push uploads nothing again
        before = len(server.state.uploads)
        assert main(["push", "2026-12-07", "--channel", "wechat", "--force"]) == 0, capsys.readouterr()
        assert len(server.state.uploads) == before


def test_preview_theme_switcher_shows_every_theme(browser, tmp_path):
    from publisher.preview import write_preview
    from tests.test_preview import Tab

    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root / "issues")
    settings = settings_for(root, root / "issues", "default", '[newsletter]\nqr_target = "https://mp.weixin.qq.com/x"\n')
    page_file = write_preview(settings, root / "issues" / ISSUE.name, ["wechat"])
    tab = Tab(browser, 1000)
    try:
        page = tab.page
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        options = page.eval_on_selector_all("select[data-variants] option", "os => os.map(o => o.value)")
        assert options == ["default", "ink", "jade"]
        h2_bg = """() => [...document.querySelectorAll('iframe[data-variant]')].filter(f => !f.hidden)
                     .map(f => [f.dataset.variant, getComputedStyle(f.contentDocument.querySelector('h2')).backgroundColor])"""
        assert page.evaluate(h2_bg) == [["default", "rgba(0, 0, 0, 0)"]]
        page.select_option("select[data-variants]", "jade")
        assert page.evaluate(h2_bg) == [["jade", "rgb(18, 163, 122)"]]
        page.select_option("select[data-variants]", "ink")
        assert [v for v, _ in page.evaluate(h2_bg)] == ["ink"]
        assert json.dumps(tab.errors) == "[]"
    finally:
        tab.close()


def test_check_says_which_construct_breaks_the_budget(fixture_settings):
    from publisher.channels.wechat.limits import check

    rows = "\n".join(f"| 行{k} | {k}.0 | {k}.5 | {k}.9 |" for k in range(260))
    src = ("# 嵌入式AI简报 (2026-12-07)\n\n## 新闻\n\n- [t](https://example.com/a)\n摘要：大表 $x^2$\n"
           "| a | b | c | d |\n|---|---|---|---|\n" + rows + "\n")
    issue = parse_issue(src, "x.md").issue
    r = pipeline.render(issue, "wechat", fixture_settings, pipeline.context_for(fixture_settings, issue))
    found = [v for v in check(r) if v.what == "content"]
    assert found and "of which tables " in found[0].message and "formulas" in found[0].message, found
    assert found[0].message.index("tables") < found[0].message.index("formulas")


def test_web_page_with_mathml_footnotes_and_a_table_is_valid_html5(fixture_settings):
    html5lib = pytest.importorskip("html5lib")
    issue = pipeline.load(ISSUE)[0]
    body = pipeline.render(issue, "web", fixture_settings, pipeline.context_for(fixture_settings, issue)).body
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    try:
        doc = parser.parse(body)
    except html5lib.html5parser.ParseError as exc:
        pytest.fail(f"web page: {exc}")
    assert doc.find(".//script") is None and sum(str(e.tag).endswith("}math") for e in doc.iter()) >= 10
    ids = {e.get("id") for e in doc.iter() if e.get("id")}
    hrefs = {e.get("href")[1:] for e in doc.iter("a") if (e.get("href") or "").startswith("#fn")}
    assert hrefs and hrefs <= ids  # every footnote link lands on its note and back
