"""Hostile input: bounded parsing, one URL allow-list, containment of paths, escaping in every
channel, and no markup from source text in any output (parsed by the engine that renders it)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from publisher.errors import SourceError
from publisher.reader import parse_issue, read_issue
from publisher.refs import contained, unsafe_scheme
from tests.hostile import DANGEROUS_LINKS, TRAVERSAL, bomb, hostile_source, source_with_image

# ---- bounded parsing ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["author", "digest", "license", "topics"])
def test_yaml_bomb_is_refused_at_once_with_its_line(key):
    start = time.perf_counter()
    with pytest.raises(SourceError) as err:
        parse_issue(bomb(key), "bomb.md")
    assert time.perf_counter() - start < 5  # generous: fails only on expansion
    assert err.value.line == 2 and "anchor" in str(err.value)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize(("front", "line", "what"), [
    ("date: 2026-11-23\nauthor: *x\n", 3, "alias"),
    ("date: 2026-11-23\nlicense:\n  <<: {name: a, url: 'https://x.org'}\n", 4, "merge key"),
    ("date: 2026-11-23\ndigest: &d text\n", 3, "anchor"),
])
def test_anchors_aliases_and_merge_keys_are_refused(front, line, what):
    with pytest.raises(SourceError) as err:
        parse_issue(f"---\n{front}---\n\n# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n", "f.md")
    assert err.value.line == line and what in str(err.value)


def test_front_matter_size_is_capped_and_messages_quote_only_an_excerpt():
    huge = "x" * 200_000
    with pytest.raises(SourceError) as err:
        parse_issue(f"---\nauthor: {huge}\n---\n\n# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n")
    assert "at most" in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(SourceError) as err:
        parse_issue("---\nstatus: " + "y" * 10_000 + "\n---\n\n# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n")
    assert len(str(err.value)) < 300 and err.value.line == 2


PATHOLOGICAL = {
    "heading with inner spaces": "#" + " " * 100_000 + "x",
    "heading with closing hashes": "## a" + " " * 50_000 + "#" * 50_000 + " x",
    "title without its date": "# 嵌入式AI简报 (" + " " * 100_000,
    "title with spaces before the date": "# 嵌入式AI简报" + " " * 100_000 + "(2026-11-23)",
    "brackets": "- " + "[" * 100_000,
    "link openers": "- " + "[a](" * 25_000,
    "emphasis": "- " + "*a " * 33_000,
    "pipes": "- [t" + " |" * 50_000 + "](https://x.org)",
    "field": "- [t](https://x.org)\n" + "标" * 9 + "：" + " " * 100_000 + "x",
    "angle brackets": "- " + "<a " * 33_000,
}


@pytest.mark.parametrize("line", PATHOLOGICAL.values(), ids=list(PATHOLOGICAL))
def test_pathological_lines_are_read_in_linear_time(line):
    if line.startswith("#"):
        text = line + "\n\n## s\n\n- [a](https://x.org)\n"
    else:
        text = "# 嵌入式AI简报 (2026-11-23)\n\n## s\n\n" + line + "\n"
    start = time.perf_counter()
    try:
        parse_issue(text, "p.md")
    except SourceError as exc:
        assert exc.line is not None and len(str(exc)) < 1000
    assert time.perf_counter() - start < 5  # generous: fails only on super-linear behaviour


def test_pathological_legacy_title_imports_in_linear_time(tmp_path):
    from publisher.legacy import import_file

    src = tmp_path / "2026-11-23.md"
    src.write_text("#" * 50_000 + " 嵌入式AI简报 (2026-11-23)" + " " * 100_000 + "x\n\n## 论文\n\n- [t](https://x.org)\n",
                   encoding="utf-8")
    start = time.perf_counter()
    with contextlib.suppress(SourceError):
        import_file(src, tmp_path / "out")
    assert time.perf_counter() - start < 5


# ---- one URL allow-list ---------------------------------------------------------------------


@pytest.mark.parametrize("url", DANGEROUS_LINKS)
def test_every_dangerous_link_variant_is_refused_with_its_line(url):
    assert unsafe_scheme(url) is not None
    target = url.replace("\n", "")
    target = f"<{target}>" if (" " in target or "\t" in target) and "<" not in target else target
    text = "# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n摘要：见[这里](" + target + ")。\n"
    try:
        result = parse_issue(text, "l.md")
    except SourceError as err:
        assert err.line == 6 and ("refused" in str(err) or err.code == "control-character")
    else:  # not a link to CommonMark at all (a control character, a space): it stays text
        from publisher.reader import urls_with_lines

        assert all(unsafe_scheme(u) is None for u, _ in urls_with_lines(result.issue))


@pytest.mark.parametrize("part", ["url", "badge"])
def test_license_url_and_badge_pass_the_allow_list(part):
    lic = {"url": "https://x.org/l", "badge": "https://x.org/b.png"}
    lic[part] = "javascript:alert(1)"
    text = (f"---\nlicense: {{name: n, url: '{lic['url']}', badge: '{lic['badge']}'}}\n---\n\n"
            "# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n")
    with pytest.raises(SourceError) as err:
        parse_issue(text, "l.md")
    assert err.value.line == 2 and f"license {part}" in str(err.value)


# ---- containment ----------------------------------------------------------------------------


@pytest.mark.parametrize("ref", TRAVERSAL)
def test_images_outside_the_issue_folder_are_refused_by_the_reader(tmp_path, ref):
    issue = tmp_path / "issues" / "2026-11-23.md"
    issue.parent.mkdir()
    (tmp_path / "outside.png").write_bytes(b"\x89PNG")
    issue.write_text(source_with_image(ref), encoding="utf-8")
    with pytest.raises(SourceError) as err:
        read_issue(issue)
    assert err.value.line == 11 and "outside the issue's folder" in str(err.value)


def test_symlinked_image_and_cover_pointing_outside_are_refused(tmp_path):
    folder = tmp_path / "issues"
    (folder / "images").mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    os.symlink(secret, folder / "images" / "link.png")
    (folder / "images" / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    issue = folder / "2026-11-23.md"
    issue.write_text(source_with_image("images/link.png"), encoding="utf-8")
    with pytest.raises(SourceError) as err:
        read_issue(issue)
    assert err.value.line == 11
    issue.write_text(source_with_image("images/ok.png", cover="images/link.png"), encoding="utf-8")
    with pytest.raises(SourceError) as err:
        read_issue(issue)
    assert err.value.line == 3 and "cover" in str(err.value)
    issue.write_text(source_with_image("images/ok.png", cover="images/ok.png"), encoding="utf-8")
    assert read_issue(issue).issue.cover == "images/ok.png"


def test_contained_resolves_inside_only(tmp_path):
    (tmp_path / "a").mkdir()
    assert contained(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    for ref in TRAVERSAL + ("~/x", "a/../../x"):
        assert contained(tmp_path, ref) is None, ref

    assert contained(tmp_path, "%2e%2e/x") is None  # a browser reads %2e%2e/ as ../
    assert contained(tmp_path, "a%2fb.png") == tmp_path.resolve() / "a%2fb.png"


def test_hostile_source_reads_with_warnings_only():
    result = parse_issue(hostile_source(), "h.md")
    assert result.issue.sections and any("raw HTML" in w.message for w in result.warnings)


def _unused(_: Path) -> None:  # keeps Path imported for the channel tests below
    pass


# ---- escaping in every channel --------------------------------------------------------------

CHANNELS = ("github", "wechat", "email", "zhihu", "aijishu", "plaintext")
# What a payload leaves behind if it reached a reader as markup.
MARKERS = ("alert", "onerror", "onload", "ontoggle", "<script", "<iframe", "<svg", "<details", "<!--", "javascript")


def _tokens(tokens):
    for tok in tokens:
        yield tok
        yield from _tokens(tok.children or ())


def assert_no_markup_in_markdown(text: str, *, jekyll: bool) -> None:
    """Parse as CommonMark does (cmark-gfm, kramdown and the column editors pass HTML through):
    no HTML token may carry source text, and for Jekyll no Liquid may survive outside raw blocks."""
    import re

    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    for tok in _tokens(md.parse(text)):
        if tok.type in ("html_block", "html_inline"):
            assert not any(m in tok.content.lower() for m in MARKERS), tok.content
        if tok.type in ("link_open", "image"):
            assert unsafe_scheme(tok.attrGet("href") or tok.attrGet("src") or "") is None
    if jekyll:
        outside_raw = re.sub(r"\{% raw %\}.*?\{% endraw %\}", "", text, flags=re.S)
        assert "{{" not in outside_raw and "{%" not in outside_raw, outside_raw[outside_raw.find("{"):][:80]


def assert_no_markup_in_html(text: str) -> None:
    """Parse as a browser does: no element or attribute from the source text."""
    from html.parser import HTMLParser

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            assert tag not in ("script", "iframe", "svg", "details", "object", "embed"), tag
            for name, value in attrs:
                assert not name.startswith("on"), (tag, name)
                if name in ("href", "src"):
                    assert unsafe_scheme(value or "") is None, value

        def handle_comment(self, data):
            assert not any(m in data.lower() for m in MARKERS), data

    Check().feed(text)


@pytest.fixture
def hostile_project(tmp_path, monkeypatch):
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    issues = tmp_path / "issues"
    issues.mkdir()
    (issues / "2026-11-23.md").write_text(hostile_source(), encoding="utf-8")
    (tmp_path / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "build"\n', encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", CHANNELS)
def test_no_markup_from_source_text_in_any_channel(hostile_project, name):
    from publisher import pipeline
    from publisher.settings import load_settings

    settings = load_settings(cwd=hostile_project)
    issue, _ = pipeline.load(hostile_project / "issues" / "2026-11-23.md")
    r = pipeline.render(issue, name, settings)
    if r.media_type == "text/markdown":
        assert_no_markup_in_markdown(r.body, jekyll=name == "github")
    elif r.media_type == "text/html":
        assert_no_markup_in_html(r.body)
    else:  # plain text is never rendered: it keeps the editor's characters
        assert "<script>alert(1)</script>" in r.body


def test_liquid_in_code_is_kept_from_jekyll_and_shown_verbatim():
    from channels.markdown_writer import JekyllWriter, MarkdownWriter
    from publisher.model import Code, CodeBlock

    span = JekyllWriter().visit_Code(Code("{{ x }} <b>"))
    assert span == "<code>&#123;&#123; x }} &lt;b&gt;</code>"
    assert MarkdownWriter().visit_Code(Code("{{ x }}")) == "`{{ x }}`"
    block = JekyllWriter().visit_CodeBlock(CodeBlock("{% if a %}", "py", 3))
    assert block[0] == "{% raw %}" and block[-1] == "{% endraw %}"
    with pytest.raises(SourceError):
        JekyllWriter().visit_CodeBlock(CodeBlock("{% endraw %}{{ site }}", "", 3))


def _tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_render_and_build_write_only_under_out(hostile_project, tmp_path):
    from tests.test_cli import run

    outside = _tree(tmp_path)
    for name in CHANNELS:
        proc = run("render", "issues/2026-11-23.md", "--channel", name, "--out", "r", cwd=hostile_project)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run("build", "--out", "b", cwd=hostile_project)
    assert proc.returncode == 0, proc.stderr
    new = _tree(tmp_path) - outside
    assert new and all(p.is_relative_to(hostile_project / "r") or p.is_relative_to(hostile_project / "b")
                       or p.name.endswith(".db") for p in new), sorted(new)


@pytest.mark.parametrize("ref", TRAVERSAL)
def test_traversal_is_an_error_in_check_render_and_build_and_writes_nothing(hostile_project, tmp_path, ref):
    from tests.test_cli import run

    (hostile_project / "issues" / "2026-11-23.md").write_text(source_with_image(ref), encoding="utf-8")
    before = _tree(tmp_path)
    for args in (("check", "--offline", "issues/2026-11-23.md"),
                 ("render", "issues/2026-11-23.md", "--channel", "github", "--out", "r"),
                 ("build", "--out", "b")):
        proc = run(*args, cwd=hostile_project)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "2026-11-23.md:11" in proc.stdout + proc.stderr
    assert not any("passwd" in p.name or p.name == "outside.png" for p in _tree(tmp_path) - before)


def test_write_rendition_refuses_names_and_images_outside(tmp_path):
    from publisher.channels.base import LocalImage, Rendition

    from publisher.pipeline import write_rendition

    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (tmp_path / "issue").mkdir()
    out = tmp_path / "out"
    for r in (Rendition("c", "d", "body", "text/plain", "../escaped.txt"),
              Rendition("c", "d", "body", "text/plain", "ok.txt", parts={"../../p.txt": "x"}),
              Rendition("c", "d", "body", "text/plain", "ok.txt",
                        images=(LocalImage(ref="../secret.txt", path=tmp_path / "issue" / "../secret.txt"),))):
        with pytest.raises(SourceError):
            write_rendition(r, out)
        assert not (tmp_path / "escaped.txt").exists() and not (out / "ok.txt").exists()


# ---- config values that reach headers -------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("reply_to", "a@example.org\\r\\nBcc: victim@example.org"),
    ("list_id", "list.example.org\\nBcc: victim@example.org"),
    ("unsubscribe_mailto", "u@example.org\\r\\nBcc: x@example.org"),
    ("from_name", "Name\\r\\nBcc: x@example.org"),
    ("reply_to", "not an address"),
    ("list_id", "<no spaces allowed>"),
])
def test_header_config_values_are_validated_on_load(tmp_path, monkeypatch, key, value):
    from publisher.errors import ConfigError
    from publisher.settings import load_settings

    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    (tmp_path / "publisher.toml").write_text(f'[email]\n{key} = "{value}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(cwd=tmp_path)
    assert f"[email] {key}" in str(err.value) and "Bcc" not in str(err.value).split("got")[0]
    (tmp_path / "publisher.toml").write_text(f'[email]\n{key} = "{value.split(chr(92))[0]}"\n', encoding="utf-8")
    if key in ("reply_to", "unsubscribe_mailto", "from_name") and "@" in value:
        assert load_settings(cwd=tmp_path)["email"][key]


# ---- preview isolation in Chromium ----------------------------------------------------------

def _dialogs_on(chromium, url: str, tabs=()) -> tuple[list[str], list[str]]:
    page = chromium.new_page()
    dialogs: list[str] = []
    console: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: console.append(m.text))
    page.goto(url)
    for tab in tabs:
        page.click(f'nav.tabs button[data-tab="{tab}"]')
    page.wait_for_timeout(500)
    page.close()
    return dialogs, console


def test_preview_of_the_hostile_issue_runs_no_script(browser, hostile_project):  # noqa: F811
    from publisher import preview
    from publisher.settings import load_settings

    settings = load_settings(cwd=hostile_project)
    page_file = preview.write_preview(settings, hostile_project / "issues" / "2026-11-23.md", list(CHANNELS))
    dialogs, console = _dialogs_on(browser, page_file.as_uri(), CHANNELS)
    assert dialogs == [] and not any("alert" in c or "lol" in c for c in console)


def test_preview_isolates_markup_even_when_a_channel_lets_it_through(browser, tmp_path):  # noqa: F811
    """The second wall: a rendition that does carry live markup still runs nothing."""
    from publisher import preview

    evil = "# t\n\n<script>alert('md')</script>\n<img src=x onerror=\"alert('img')\">\n<svg onload=\"alert('svg')\"></svg>\n"
    front, rendered = preview._markdown_to_html(evil)
    page = ("<!doctype html><html><body>"
            f'<iframe sandbox="{preview.SANDBOX}" srcdoc="{preview._srcdoc(preview._iframe_doc(rendered))}"></iframe>'
            f'<iframe sandbox="{preview.SANDBOX}" srcdoc="{preview._srcdoc(preview._with_policy("<html><head></head><body>" + rendered))}"></iframe>'
            "<script>console.log('page script ran')</script></body></html>")
    assert "<script>alert('md')</script>" in rendered  # the markup really is there
    (tmp_path / "p.html").write_text(page, encoding="utf-8")
    dialogs, console = _dialogs_on(browser, (tmp_path / "p.html").as_uri())
    assert dialogs == []
    assert "page script ran" in console  # the preview's own scripts keep working


# ---- push to the WeChat test server ---------------------------------------------------------


@pytest.fixture
def wechat_project(tmp_path, monkeypatch):
    from tests.test_wechat_push import SECRET, WeChatServer, write_config

    with WeChatServer() as srv:
        (tmp_path / "issues" / "images").mkdir(parents=True)
        write_config(tmp_path, srv)
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
        monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
        yield tmp_path, srv


def test_push_of_the_hostile_issue_carries_no_markup(wechat_project, capsys):
    from publisher.cli import main

    root, srv = wechat_project
    source = hostile_source().replace('author: "作者<img src=x onerror=alert(2)>{% raw %}"', 'author: "<b>x</b>"')
    (root / "issues" / "2026-11-23.md").write_text(source, encoding="utf-8")  # WeChat: author ≤ 16
    rc = main(["push", "2026-11-23", "--channel", "wechat"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    (media_id, articles), = srv.state.drafts.items()
    assert_no_markup_in_html(articles[0]["content"])


@pytest.mark.parametrize("how", ["symlink", "relative", "cover-symlink"])
def test_push_uploads_nothing_from_outside_the_issue_folder(wechat_project, capsys, how):
    from publisher.cli import main

    root, srv = wechat_project
    secret = root / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"SECRET" * 10)
    os.symlink(secret, root / "issues" / "images" / "link.png")
    (root / "issues" / "images" / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    ref, cover = {"symlink": ("images/link.png", None), "relative": ("../secret.png", None),
                  "cover-symlink": ("images/ok.png", "images/link.png")}[how]
    (root / "issues" / "2026-11-23.md").write_text(source_with_image(ref, cover=cover), encoding="utf-8")
    rc = main(["push", "2026-11-23", "--channel", "wechat"])
    out = capsys.readouterr()
    assert rc == 1 and "outside the issue's folder" in out.out + out.err
    assert "Traceback" not in out.err
    assert srv.state.requests == [] and not any(b"SECRET" in d for d in srv.state.uploads.values())


def test_upload_time_check_refuses_an_image_outside_even_without_the_reader(tmp_path):
    from publisher.channels.base import LocalImage
    from publisher.channels.wechat.transport import prepare_image

    from publisher.errors import TransportError

    (tmp_path / "issue" / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    os.symlink(tmp_path / "secret.png", tmp_path / "issue" / "images" / "a.png")
    for ref in ("images/a.png", "../secret.png"):
        with pytest.raises(TransportError):
            prepare_image(LocalImage(ref=ref, path=tmp_path / "issue" / ref), kind="uploadimg")
