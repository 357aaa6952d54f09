"""`publisher preview`: the page builder, the command, and the page in a real headless Chromium.

Browser tests need /usr/bin/chromium and the Python `playwright` package and skip otherwise.
Screenshots are kept in test-artifacts/preview/. Remote images (http/https, e.g. mmbiz.qpic.cn in
the corpus) are answered by the test with a stub PNG: tests run without network, and the preview
deliberately leaves remote images to the reader's client.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from markupsafe import escape
from publisher.channels.base import Rendition, available_channels, get_channel

from publisher import pipeline, preview
from publisher.cli import main
from publisher.errors import PublisherError
from publisher.settings import load_settings
from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 (other browser tests import them from here)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "neuraltalk"
ARTIFACTS = ROOT / "test-artifacts" / "preview"
# a 2x2 PNG for remote images (no network in tests)
STUB_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def channel_importable(name: str) -> str | None:
    """None when the channel loads, else the reason it does not (yet)."""
    try:
        get_channel(name)
    except (ImportError, PublisherError, AttributeError) as exc:
        return f"channel {name} not importable yet: {exc}"
    return None


def importable_channels() -> list[str]:
    return [c for c in available_channels() if channel_importable(c) is None]


@pytest.fixture
def demo(project: Path) -> Path:
    """The project fixture with the README demo issues (and their images) in issues/."""
    shutil.copytree(EXAMPLES / "issues", project / "issues", dirs_exist_ok=True)
    return project


def newest(project: Path) -> Path:
    return sorted((project / "issues").glob("*.md"))[-1]


# ------------------------------------------------------------------------------------------
# the page builder, channel by channel


@pytest.mark.parametrize("channel", available_channels())
def test_panel_for_each_channel(demo: Path, channel: str) -> None:
    reason = channel_importable(channel)
    if reason:
        pytest.skip(reason)
    settings = load_settings()
    issue_path = newest(demo)
    page = preview.build_page(settings, issue_path, [channel], inline_images=True)
    issue, _ = pipeline.load(issue_path)
    try:
        rendition = pipeline.render(issue, channel, settings)
    except PublisherError as exc:
        # e.g. zhihu refuses local images: the tab shows the channel's own message
        assert f"{channel}: cannot render" in page.html
        assert str(escape(str(exc).splitlines()[0])) in page.html
        return
    assert "cannot render" not in page.html and "internal error" not in page.html
    for image in rendition.images:
        if not re.match(r"^[a-z]+://", image.ref):
            # local images are embedded, never left as refs the browser cannot resolve
            assert f'src="{image.ref}"' not in page.html
    if rendition.media_type != "text/plain" and any(i.role == "inline" for i in rendition.images):
        assert "data:image/" in page.html
    if channel == "email":
        assert "From</th>" in page.html
        assert settings["email"]["from_address"] in page.html
        assert str(escape(rendition.metadata["subject"])) in page.html
        assert str(escape(rendition.metadata["preheader"])) in page.html
        assert "%%UNSUBSCRIBE_URL%%" not in page.html
        assert 'class="mail-text"' in page.html
    elif channel == "wechat":
        assert "阅读原文" in page.html
        assert 'data-field="title"' in page.html and 'data-field="digest"' in page.html
        title = str(rendition.metadata["title"])
        assert f"{len(title):,} chars ≤ 32" in page.html
    else:
        # the escaped source pane holds the body verbatim
        assert str(escape(rendition.body)) in page.html
        assert 'class="pane rendered"' in page.html


def test_wechat_limits_flag_over_in_red(demo: Path) -> None:
    settings = load_settings()
    long_title = "嵌入式AI简报" * 6  # 42 characters
    rendition = Rendition(
        channel="wechat", issue="2026-11-23", body="<p>" + "字" * 20_500 + "</p>", media_type="text/html",
        filename="2026-11-23.html",
        metadata={"title": long_title, "digest": "短摘要", "content_source_url": "https://example.org/x"},
    )
    from publisher.channels.base import template_env

    panel = str(preview.panel(rendition, settings, preview.ImageTable(inline=True), None, template_env(settings)))
    assert re.search(r'<tr class="over" data-field="title">', panel)
    assert re.search(r'<tr class="ok" data-field="digest">', panel)
    assert re.search(r'<tr class="over" data-field="content">', panel)
    assert "42 chars ≤ 32" in panel
    assert "20,507 chars &lt; 20,000" in panel


def test_missing_local_image_gets_visible_placeholder(demo: Path) -> None:
    rendition = Rendition(channel="github", issue="x", body="", media_type="text/markdown", filename="x.md")
    table = preview.ImageTable(inline=True)
    out = table.rewrite('<img alt="q" src="../wechat_qrcode.jpg">', rendition, demo / "issues")
    assert "data:image/svg+xml;base64," in out
    assert table.missing == [("github", "../wechat_qrcode.jpg")]
    found = table.rewrite('<img src="images/cover.png">', rendition, demo / "issues")
    assert "data:image/png;base64," in found


# ------------------------------------------------------------------------------------------
# the command


def test_command_writes_page_and_prints_path(demo: Path, capsys, monkeypatch) -> None:
    opened = []
    monkeypatch.setattr(preview.webbrowser, "open", lambda url: opened.append(url))
    assert main(["preview"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    path = Path(out[-1])
    assert path == demo / "build" / "preview" / f"{newest(demo).stem}.html"
    text = path.read_text(encoding="utf-8")
    for name in load_settings().enabled_channels:
        assert f'data-tab="{name}"' in text
    assert opened == [path.as_uri()]

    opened.clear()
    assert main(["preview", "--no-open", "--channel", "plaintext", str(newest(demo))]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{newest(demo).stem}-plaintext.html")
    assert opened == []


def test_command_user_errors_are_one_line(demo: Path, capsys) -> None:
    assert main(["preview", "--no-open", "--channel", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown channel 'nope'" in err and "Traceback" not in err

    assert main(["preview", "--no-open", "issues/1999-01-01.md"]) == 1
    assert "no such issue file" in capsys.readouterr().err

    broken = demo / "issues" / "2026-12-01.md"
    broken.write_text("# 嵌入式AI简报 (2026-12-01)\n\n### not a section\n", encoding="utf-8")
    assert main(["preview", "--no-open", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:3: error:" in err and "Traceback" not in err


def test_empty_issues_folder(project: Path, capsys) -> None:
    assert main(["preview", "--no-open"]) == 1
    assert "no issue files" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# in a real browser


class Tab:
    """A page with console errors collected and remote images stubbed."""

    def __init__(self, browser, width: int, height: int = 900):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), self._stub)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    @staticmethod
    def _stub(route) -> None:
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=STUB_PNG)
        else:
            route.fulfill(status=200, content_type="text/html", body="<p>stub</p>")

    def close(self) -> None:
        self.context.close()


OVERFLOW_JS = """() => {
  const out = [["page", document.scrollingElement.scrollWidth, window.innerWidth]];
  document.querySelectorAll('iframe').forEach(f => {
    if (f.offsetParent === null) return;
    const d = f.contentDocument;
    out.push([f.className, d.scrollingElement.scrollWidth, f.contentWindow.innerWidth]);
  });
  return out;
}"""

IMAGES_JS = """() => {
  const docs = [document];
  document.querySelectorAll('iframe').forEach(f => { if (f.contentDocument) docs.push(f.contentDocument); });
  const bad = [];
  let n = 0;
  for (const d of docs) for (const img of d.querySelectorAll('img')) {
    n++;
    if (!(img.complete && img.naturalWidth > 0)) bad.push(img.getAttribute('src').slice(0, 120));
  }
  return [n, bad];
}"""


def corpus_sample(imported: Path) -> list[Path]:
    files = sorted(imported.glob("*.md"))
    largest = max(files, key=lambda p: p.stat().st_size)
    picks = [largest]
    for stem in ("2019-04-27", "2020-07-02", "2021-05-21"):
        p = imported / f"{stem}.md"
        if p.exists() and p not in picks:
            picks.append(p)
    return picks


def _corpus_settings(tmp_path: Path, issues: Path):
    toml = tmp_path / "publisher.toml"
    # (a [web] base_url so that the web channel, which needs its public address, renders too)
    toml.write_text(f'[paths]\nissues = "{issues}"\nout = "{tmp_path / "build"}"\n'
                    '[web]\nbase_url = "https://example.org/newsletter/"\n', encoding="utf-8")
    return load_settings(toml)


def _wait_images(page) -> None:
    page.wait_for_load_state("load")
    page.wait_for_function(
        """() => { const docs=[document]; document.querySelectorAll('iframe').forEach(f=>f.contentDocument&&docs.push(f.contentDocument));
        return docs.every(d => [...d.querySelectorAll('img')].every(i => i.complete)); }""",
        timeout=10_000,
    )


@pytest.mark.slow
def test_corpus_previews_in_chromium(browser, imported_corpus: Path, tmp_path: Path) -> None:
    """Every tab of several corpus issues, at 375 and 1280 px: images load, no console errors."""
    channels = importable_channels()
    if not channels:
        pytest.skip("no channel importable yet")
    settings = _corpus_settings(tmp_path, imported_corpus)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for issue_path in corpus_sample(imported_corpus):
        page_file = preview.write_preview(settings, issue_path, channels)
        for width in (375, 1280):
            tab = Tab(browser, width)
            page = tab.page
            page.goto(page_file.as_uri())
            _wait_images(page)
            count, bad = page.evaluate(IMAGES_JS)
            assert bad == [], f"{issue_path.name}: images that did not load: {bad}"
            for channel in channels:
                page.click(f'nav.tabs button[data-tab="{channel}"]')
                assert page.is_visible(f"#tab-{channel}")
                assert "cannot render" not in page.inner_text(f"#tab-{channel}")
                assert "internal error" not in page.inner_text(f"#tab-{channel}")
                page.screenshot(path=str(ARTIFACTS / f"{issue_path.stem}-{channel}-{width}.png"), full_page=True)
            assert tab.errors == [], f"{issue_path.name}: console errors {tab.errors}"
            tab.close()


@pytest.mark.slow
@pytest.mark.parametrize("channel", ["wechat", "email"])
def test_no_horizontal_overflow_at_375(browser, imported_corpus: Path, tmp_path: Path, channel: str) -> None:
    """The page and the channel's frame (phone / mobile mail view) fit a 375 px screen, for every
    corpus issue (long URLs and identifiers in field lines and summaries must wrap)."""
    if channel_importable(channel):
        pytest.skip(channel_importable(channel))
    settings = _corpus_settings(tmp_path, imported_corpus)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for issue_path in sorted(imported_corpus.glob("*.md")):
        page_file = preview.write_preview(settings, issue_path, [channel])
        tab = Tab(browser, 375)
        page = tab.page
        page.goto(page_file.as_uri())
        _wait_images(page)
        if channel == "email":
            page.click('button[data-width="mobile"]')
            page.wait_for_timeout(50)
        sizes = page.evaluate(OVERFLOW_JS)
        assert len(sizes) == 2, f"{channel}: its frame is not visible: {sizes}"
        assert sizes[1][2] == 375, f"{channel}: the {sizes[1][0]} frame is {sizes[1][2]} px wide, not 375"
        problems += [
            f"{issue_path.name} {channel}: horizontal overflow in {what}: scrollWidth {scroll} > {inner}"
            for what, scroll, inner in sizes if scroll > inner
        ]
        page.screenshot(path=str(ARTIFACTS / f"{issue_path.stem}-{channel}-mobile.png"), full_page=True)
        assert tab.errors == []
        tab.close()
    assert problems == []


FLAG_JS = """(sel) => [...document.querySelectorAll(sel + ' .overflow-flag')]
  .filter(n => !n.hidden && n.offsetParent !== null).map(n => n.textContent)"""


@pytest.mark.slow
def test_preview_flags_an_overflow_it_sees(browser, demo: Path, tmp_path: Path) -> None:
    """A frame wider than its 375 px view gets a visible red flag instead of being cut off; the
    shipped templates raise none."""
    for ch in ("email", "wechat"):
        if channel_importable(ch):
            pytest.skip(channel_importable(ch))

    def flags(settings) -> dict[str, list[str]]:
        page_file = preview.write_preview(settings, newest(demo), ["email", "wechat"])
        tab = Tab(browser, 375)
        try:
            tab.page.goto(page_file.as_uri())
            _wait_images(tab.page)
            tab.page.click('nav.tabs button[data-tab="email"]')
            tab.page.click('button[data-width="mobile"]')
            tab.page.wait_for_timeout(50)
            found = {"email": tab.page.evaluate(FLAG_JS, "#tab-email")}
            tab.page.click('nav.tabs button[data-tab="wechat"]')
            tab.page.wait_for_timeout(50)
            found["wechat"] = tab.page.evaluate(FLAG_JS, "#tab-wechat")
            assert tab.errors == []
            return found
        finally:
            tab.close()

    assert flags(load_settings(demo / "publisher.toml")) == {"email": [], "wechat": []}
    # a user's templates that stop long lines from wrapping: both frames overflow
    tpl = demo / "tpl"
    (tpl / "email").mkdir(parents=True)
    (tpl / "wechat" / "themes").mkdir(parents=True)
    (tpl / "email" / "email.css").write_text("td.content { white-space: nowrap; }\n", encoding="utf-8")
    (tpl / "wechat" / "themes" / "default.css").write_text("img { width:900px;max-width:none }\n", encoding="utf-8")
    toml = demo / "publisher.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[paths]\n", '[paths]\ntemplates = "tpl"\n'),
                    encoding="utf-8")
    found = flags(load_settings(toml))
    for ch in ("email", "wechat"):
        assert len(found[ch]) == 1, found
        assert re.fullmatch(r"Horizontal overflow: the content is \d+ px wide in a 3\d\d px view; .*", found[ch][0])


@pytest.mark.slow
def test_email_text_switch(browser, imported_corpus: Path, tmp_path: Path) -> None:
    if channel_importable("email"):
        pytest.skip(channel_importable("email"))
    settings = _corpus_settings(tmp_path, imported_corpus)
    issue_path = corpus_sample(imported_corpus)[0]
    issue, _ = pipeline.load(issue_path)
    rendition = pipeline.render(issue, "email", settings)
    text_part = rendition.parts[f"{rendition.issue}.txt"]
    first_line = next(line.strip() for line in text_part.splitlines() if line.strip())
    page_file = preview.write_preview(settings, issue_path, ["email"])
    tab = Tab(browser, 375)
    page = tab.page
    page.goto(page_file.as_uri())
    assert page.is_visible("iframe.mail-html") and not page.is_visible("pre.mail-text")
    page.click('button[data-part="text"]')
    assert page.is_visible("pre.mail-text") and not page.is_visible("iframe.mail-html")
    assert first_line in page.inner_text("pre.mail-text")
    assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
    page.screenshot(path=str(ARTIFACTS / "email-text-part.png"), full_page=True)
    page.click('button[data-part="html"]')
    assert page.is_visible("iframe.mail-html") and not page.is_visible("pre.mail-text")
    assert tab.errors == []
    tab.close()


def _publisher_cmd() -> list[str]:
    script = Path(sys.executable).parent / "publisher"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from publisher.cli import main; sys.exit(main())"]


def _start_server(cwd: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PUBLISHER_CONFIG", None)
    proc = subprocess.Popen(
        [*_publisher_cmd(), "preview", *args, "--serve", "--port", "0", "--no-open"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line or "")
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"preview server did not start: {proc.stderr.read()}")


@pytest.mark.slow
def test_live_reload_and_broken_source(browser, demo: Path) -> None:
    if channel_importable("github"):
        pytest.skip(channel_importable("github"))
    issue_path = newest(demo)
    original = issue_path.read_text(encoding="utf-8")
    proc, url = _start_server(demo, "--channel", "github")
    tab = Tab(browser, 1024)
    page = tab.page
    try:
        page.goto(url)
        page.wait_for_selector(".pane.rendered")
        count, bad = page.evaluate(IMAGES_JS)
        assert bad == [] and count >= 1  # the demo's local image, served by the preview server
        page.evaluate("window.__before_edit = true")

        # 1. an edit of the issue shows up by itself
        issue_path.write_text(original.replace("先是一些热身小新闻", "先是一些热身小新闻LIVE1"), encoding="utf-8")
        page.wait_for_function("() => document.body.innerText.includes('LIVE1')", timeout=5_000)
        assert page.evaluate("window.__before_edit === true")  # updated in place, not reloaded

        # 2. a broken source shows file:line: error, the server keeps running
        lines = original.split("\n")
        title_at = next(i for i, line in enumerate(lines) if line.startswith("# "))
        broken = [*lines[: title_at + 1], "### not a section", *lines[title_at + 1:]]
        issue_path.write_text("\n".join(broken), encoding="utf-8")
        page.wait_for_selector(".errors", timeout=5_000)
        err = page.inner_text(".errors")
        assert f"{issue_path}:{title_at + 2}: error: heading level 3" in err
        page.screenshot(path=str(ARTIFACTS / "live-broken-source.png"), full_page=True)

        # 3. fixing it brings the preview back
        issue_path.write_text(original.replace("先是一些热身小新闻", "先是一些热身小新闻LIVE2"), encoding="utf-8")
        page.wait_for_function("() => document.body.innerText.includes('LIVE2')", timeout=5_000)
        assert page.query_selector(".errors") is None

        # 4. a config change re-renders too
        toml = demo / "publisher.toml"
        toml.write_text(toml.read_text(encoding="utf-8") + '\n[newsletter]\naccount = "CONFIGLIVE3"\n', encoding="utf-8")
        page.wait_for_function("() => document.body.innerText.includes('CONFIGLIVE3')", timeout=5_000)

        # 5. so does a template: a user template folder set in the config, then one of its files edited
        from publisher.channels.base import get_channel

        shutil.copytree(get_channel("github").template_folder, demo / "tpl" / "github")
        version = page.evaluate("document.body.dataset.version")
        toml.write_text(toml.read_text(encoding="utf-8").replace("[paths]\n", '[paths]\ntemplates = "tpl"\n'),
                        encoding="utf-8")
        # the new folder is watched once the config change is rendered
        page.wait_for_function(f"() => document.body.dataset.version !== '{version}'", timeout=5_000)
        footer = demo / "tpl" / "github" / "footer.md"
        footer.write_text(footer.read_text(encoding="utf-8") + "\nTPLLIVE4\n", encoding="utf-8")
        page.wait_for_function("() => document.body.innerText.includes('TPLLIVE4')", timeout=5_000)
        page.screenshot(path=str(ARTIFACTS / "live-reloaded.png"), full_page=True)
        assert tab.errors == []
    finally:
        tab.close()
        issue_path.write_text(original, encoding="utf-8")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    stderr = proc.stderr.read()
    assert proc.returncode in (0, 130), stderr
    assert "Traceback" not in stderr
    assert "preview stopped" in proc.stdout.read()


@pytest.mark.slow
def test_server_serves_every_enabled_channel(browser, demo: Path) -> None:
    enabled = load_settings(demo / "publisher.toml").enabled_channels
    channels = [c for c in importable_channels() if c in enabled]
    if not channels:
        pytest.skip("no channel importable yet")
    proc, url = _start_server(demo)
    tab = Tab(browser, 375)
    try:
        tab.page.goto(url)
        _wait_images(tab.page)
        count, bad = tab.page.evaluate(IMAGES_JS)
        assert bad == [] and count >= 1
        # served by the preview server (renditions are shown in sandboxed iframes)
        assert any(f.query_selector('img[src^="/image/"]') is not None for f in tab.page.frames)
        for name in channels:
            assert tab.page.query_selector(f'nav.tabs button[data-tab="{name}"]') is not None
        assert tab.errors == []
    finally:
        tab.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert "Traceback" not in proc.stderr.read()


def test_port_in_use_is_a_user_error(demo: Path) -> None:
    live = preview.LivePreview(load_settings, newest(demo), ["plaintext"])
    first = preview.start_server(live, 0)
    try:
        with pytest.raises(preview.PreviewError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            preview.start_server(live, first.server_address[1])
    finally:
        first.server_close()


def test_live_preview_shows_source_errors_then_recovers(demo: Path) -> None:
    if channel_importable("plaintext"):
        pytest.skip(channel_importable("plaintext"))
    issue_path = newest(demo)
    original = issue_path.read_text(encoding="utf-8")
    live = preview.LivePreview(load_settings, issue_path, ["plaintext"])
    live.rebuild()
    assert live.page.ok and live.version == 1 and not live.changed()
    issue_path.write_text(original.replace("# 嵌入式AI简报", "### 嵌入式AI简报", 1), encoding="utf-8")
    assert live.changed()
    live.rebuild()
    assert not live.page.ok and live.version == 2
    assert f"{issue_path}:" in live.page.html and ": error: " in live.page.html
    assert 'data-version="2"' in live.page.html
    issue_path.write_text(original, encoding="utf-8")
    live.rebuild()
    assert live.page.ok and 'class="errors"' not in live.page.html


def test_live_preview_follows_newest_issue_and_shows_config_errors(demo: Path) -> None:
    toml = demo / "publisher.toml"
    live = preview.LivePreview(lambda: load_settings(toml), newest(demo), ["plaintext"], follow_newest=True)
    live.rebuild()
    assert live.issue_path.name == "2026-11-23.md" and not live.changed()
    newer = demo / "issues" / "2026-12-07.md"
    newer.write_text(newest(demo).read_text(encoding="utf-8").replace("2026-11-23", "2026-12-07"), encoding="utf-8")
    assert live.changed()
    live.rebuild()
    assert live.issue_path == newer.resolve() and "2026-12-07" in live.page.html

    good = toml.read_text(encoding="utf-8")
    toml.write_text(good + "\n[paths\n", encoding="utf-8")
    assert live.changed()
    live.rebuild()
    assert not live.page.ok and f"{toml}: invalid TOML" in live.page.html
    toml.write_text(good, encoding="utf-8")
    live.rebuild()
    assert live.page.ok


def test_live_preview_renders_only_the_tab_on_screen(demo: Path) -> None:
    channels = ["github", "plaintext"]
    for name in channels:
        if channel_importable(name):
            pytest.skip(channel_importable(name))
    live = preview.LivePreview(load_settings, newest(demo), channels)
    live.rebuild()
    assert 'data-lazy="plaintext"' in live.page.html and 'data-lazy="github"' not in live.page.html
    assert "layout: default" in live.page.html  # github, the first tab, rendered
    assert 'src="/frame/github?v=1"' in live.page.html and "github" in live.page.frames
    assert live.show("plaintext") and live.version == 2
    # version 1's frame is still served to a page that has not swapped in version 2 yet
    assert "github" in live.page_for("1").frames and "github" not in live.page_for("2").frames
    assert 'data-lazy="github"' in live.page.html and 'data-lazy="plaintext"' not in live.page.html
    assert not live.show("plaintext")  # already rendered: nothing to do
    assert not live.show("<script>")
    assert live.version == 2


@pytest.mark.slow
def test_opening_a_tab_renders_it_and_edits_follow_it(browser, demo: Path) -> None:
    for name in ("github", "plaintext"):
        if channel_importable(name):
            pytest.skip(channel_importable(name))
    issue_path = newest(demo)
    original = issue_path.read_text(encoding="utf-8")
    proc, url = _start_server(demo)
    tab = Tab(browser, 1024)
    page = tab.page
    try:
        page.goto(url)
        page.wait_for_selector('.tab[data-tab="github"] .pane.rendered')
        assert page.query_selector('.tab[data-tab="plaintext"] .lazy') is not None
        page.click('nav.tabs button[data-tab="plaintext"]')
        page.wait_for_selector('.tab[data-tab="plaintext"] pre.plain', timeout=5_000)
        assert page.query_selector('.tab[data-tab="github"] .lazy') is not None
        issue_path.write_text(original.replace("先是一些热身小新闻", "先是一些热身小新闻LAZY1"), encoding="utf-8")
        page.wait_for_function(
            "() => document.querySelector('.tab[data-tab=\"plaintext\"]').innerText.includes('LAZY1')", timeout=5_000)
        assert page.evaluate("location.hash") == "#plaintext"
        assert tab.errors == []
    finally:
        tab.close()
        issue_path.write_text(original, encoding="utf-8")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert "Traceback" not in proc.stderr.read()


@pytest.mark.slow
def test_served_page_runs_only_its_own_script_and_controls_keep_working(browser, demo: Path, monkeypatch) -> None:
    """The page's own policy is the wall behind the frames: markup that reached the page itself
    (a channel bug) runs nothing, while the tabs, the live swap and 复制到公众号 keep working."""
    import threading
    import urllib.request

    from markupsafe import Markup

    for name in ("github", "wechat"):
        if channel_importable(name):
            pytest.skip(channel_importable(name))
    escaped = ("<script>alert('escaped script')</script><img src=x onerror=\"alert('escaped img')\">"
               "<svg onload=\"alert('escaped svg')\"></svg><p style=\"display:none\" class=escaped>inline style</p>")
    build = preview.panel
    monkeypatch.setattr(preview, "panel", lambda *a: build(*a) + Markup(escaped))
    live = preview.LivePreview(load_settings, newest(demo), ["github", "wechat"])
    live.rebuild()
    assert escaped in live.page.html  # the markup really is on the page, outside any frame
    server = preview.start_server(live, 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    tab = Tab(browser, 1024)
    dialogs: list[str] = []
    try:
        with urllib.request.urlopen(url) as resp:
            policy = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
        with urllib.request.urlopen(url + "frame/github") as resp:  # a frame: its own, stricter policy
            assert resp.headers["Content-Security-Policy"] == preview.CONTENT_POLICY
        tab.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = tab.page
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        page.wait_for_selector('.tab[data-tab="github"] .pane.rendered')
        assert page.is_visible("p.escaped")  # its inline style="display:none" was not applied
        page.click('nav.tabs button[data-tab="wechat"]')  # lazy: rendered on demand, swapped in place
        page.wait_for_selector("[data-copy]", timeout=5_000)
        page.click("[data-copy]")
        assert "已复制" in page.locator(".copy-status").inner_text()
        # the rendition's own inline styles still apply in its frame (a document of its own)
        styled = page.frame_locator("iframe.wechat-article").locator("[style]").first.evaluate(
            "el => el.style.length")
        assert styled > 0
        assert dialogs == []
        assert any("Content Security Policy" in e for e in tab.errors)  # the browser refused them
    finally:
        tab.close()
        server.shutdown()
        server.server_close()
        live.stop()


# ------------------------------------------------------------------------------------------
# Ctrl-C


def _hold_connections(port: int) -> list:
    """What a browser leaves open: an SSE stream, an idle keep-alive, a connection not used yet."""
    import socket

    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    socks[0].sendall(f"GET /events?tab=github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    socks[1].sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert socks[0].recv(4096).startswith(b"HTTP/1.1 200")
    assert socks[1].recv(4096).startswith(b"HTTP/1.1 200")
    return socks


def _keep_editing(issue_path: Path, stop) -> None:
    original = issue_path.read_text(encoding="utf-8")
    n = 0
    while not stop.is_set():
        n += 1
        issue_path.write_text(original.replace("先是一些热身小新闻", f"先是一些热身小新闻EDIT{n}"), encoding="utf-8")
        time.sleep(0.02)
    issue_path.write_text(original, encoding="utf-8")


def test_serve_returns_on_ctrl_c_with_its_threads_gone(demo: Path, monkeypatch) -> None:
    """The root of a preview that would not exit: threads of its own (the watcher in watchfiles'
    Rust loop, connection handlers) still running while the interpreter shuts down. serve()
    returns only once they are gone, with the watcher in the middle of a (slow) render."""
    import threading

    if channel_importable("github"):
        pytest.skip(channel_importable("github"))
    issue_path = newest(demo)
    live = preview.LivePreview(load_settings, issue_path, ["github"])
    slow = live._rebuild

    def slow_rebuild() -> None:  # a render under load: the watcher is busy when Ctrl-C comes
        time.sleep(0.3)
        slow()

    monkeypatch.setattr(live, "_rebuild", slow_rebuild)
    started, stop_edits, said = threading.Event(), threading.Event(), []
    socks: list = []
    killed_at: list[float] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("Preview of"):
            started.set()

    def ctrl_c() -> None:
        if not started.wait(30):
            return  # serve() failed before serving: it raises, no Ctrl-C to send
        try:
            port = int(re.search(r":(\d+)/", said[0]).group(1))
            socks.extend(_hold_connections(port))
            threading.Thread(target=_keep_editing, args=(issue_path, stop_edits), daemon=True).start()
            deadline = time.monotonic() + 10
            while live.version < 3 and time.monotonic() < deadline:  # the watcher is re-rendering
                time.sleep(0.01)
        finally:  # serve() is serving: always stop it
            killed_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    trigger = threading.Thread(target=ctrl_c, daemon=True)
    trigger.start()
    try:
        preview.serve(live, 0, open_browser=False, say=say)
        stopped_at = time.monotonic()
    finally:
        stop_edits.set()
    trigger.join(5)
    assert live.version >= 3 and said[-1] == "preview stopped"
    assert [t.name for t in threading.enumerate() if t.name.startswith("preview-")] == []
    assert stopped_at - killed_at[0] < 5  # a render in progress (0.3 s here) is the most it waits for
    for s in socks:
        s.settimeout(2)
        while s.recv(65536):  # every connection was ended by the server (EOF), none left hanging
            pass
        s.close()


@pytest.mark.slow
def test_ctrl_c_stops_the_serving_command_promptly_every_time(demo: Path) -> None:
    """SIGINT to `publisher preview --serve` with an SSE stream and idle connections open and the
    watcher busy re-rendering a file being edited: the process exits within a bound, cleanly."""
    import threading

    issue_path = newest(demo)
    for attempt in range(3):
        proc, url = _start_server(demo)
        socks = _hold_connections(int(re.search(r":(\d+)/", url).group(1)))
        stop_edits = threading.Event()
        editor = threading.Thread(target=_keep_editing, args=(issue_path, stop_edits))
        editor.start()
        try:
            time.sleep(0.8)  # a few re-renders in flight
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"attempt {attempt}: still running 8 s after SIGINT") from None
        finally:
            stop_edits.set()
            editor.join()
            for s in socks:
                s.close()
        stderr = proc.stderr.read()
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr
        assert "preview stopped" in proc.stdout.read()


def _raw_get(port: int, path: str, host_lines: list[str]) -> tuple[int, bytes]:
    """One HTTP/1.1 request written by hand (clients would not send a foreign or a missing Host)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = [f"GET {path} HTTP/1.1", *host_lines, "Connection: close", "", ""]
        sock.sendall("\r\n".join(head).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_server_answers_only_its_own_host_names(demo: Path) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 may send
    requests here, with Host: evil.example — it gets nothing of the drafts."""
    import threading

    live = preview.LivePreview(load_settings, newest(demo), ["plaintext"])
    live.rebuild()
    server = preview.start_server(live, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    secret = newest(demo).read_text(encoding="utf-8").splitlines()[-1].strip()[:20].encode()
    try:
        status, body = _raw_get(port, "/", [f"Host: 127.0.0.1:{port}"])
        assert status == 200 and b"<html" in body.lower()
        for own in (f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
            assert _raw_get(port, "/version", [f"Host: {own}"])[0] == 200, own
        foreign = [f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}",
                   f"127.0.0.1:{port + 1}", "127.0.0.1", f"localhost.:{port}", f"0x7f.1:{port}",
                   f"localhost:{port}@evil.example", ""]
        for host in foreign:
            for path in ("/", "/version", "/frame/plaintext?v=1", "/image/0", "/preview.js", "/events"):
                status, body = _raw_get(port, path, [f"Host: {host}"])
                assert status == 403, (host, path, status)
                assert secret not in body and b"<html" not in body.lower() and len(body) < 100
        # no Host at all, or two of them
        assert _raw_get(port, "/", [])[0] == 400
        assert _raw_get(port, "/", [f"Host: 127.0.0.1:{port}", "Host: evil.example"])[0] == 400
    finally:
        live.stop()
        server.shutdown()
        server.server_close()
        server.close_all(5)
