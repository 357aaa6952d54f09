"""The web channel: pages, index, Atom feed and sitemap built from the real corpus; its transport
to a folder and to a bare repository's gh-pages branch; Chromium at phone and desktop widths."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from publisher.build import build
from publisher.cli import main
from publisher.settings import load_settings
from tests.conftest import EXAMPLES
from tests.push_support import add_config, git, make_remote, write_issue

BASE = "https://example.org/newsletter/"
SITE_FILES = {"index.html", "feed.xml", "sitemap.xml"}


def web_project(root: Path, issues: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "publisher.toml"
    config.write_text(f'[paths]\nissues = "{issues}"\nout = "build"\nledger = "publisher.db"\n'
                      f'[channels]\nenabled = ["web"]\n[web]\nbase_url = "{BASE}"\n{extra}', encoding="utf-8")
    return config


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under folder: (inode, mtime_ns, bytes) — a rewrite changes the inode or mtime."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return out


@pytest.fixture(scope="module")
def corpus_site(imported_corpus, tmp_path_factory) -> Path:
    """The whole corpus built to the web channel (issues copied so a test may add one)."""
    root = tmp_path_factory.mktemp("web")
    shutil.copytree(imported_corpus, root / "issues")
    config = web_project(root, root / "issues")
    rendered, _, errors = build(load_settings(config), root / "build", jobs=1)
    assert not errors and rendered == 30, errors
    return root


# ---- the feed and the pages ------------------------------------------------------------------


def test_feed_of_the_corpus_parses_without_bozo_with_20_entries_and_stable_ids(corpus_site: Path) -> None:
    feedparser = pytest.importorskip("feedparser")
    site = corpus_site / "build" / "web"
    feed = feedparser.parse((site / "feed.xml").read_bytes())
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert len(feed.entries) == 20
    listed = sorted((p.stem for p in site.glob("*.html") if p.stem[:2] == "20"), reverse=True)
    # a draft is not listed, unless it was published before (`archived: true`, as the importer writes)
    drafts = [p.stem for p in (corpus_site / "issues").glob("*.md")
              if "status: draft" in p.read_text("utf-8") and "archived: true" not in p.read_text("utf-8")]
    expected = [d for d in listed if d not in drafts][:20]
    assert [e.id for e in feed.entries] == [f"{BASE}{d}.html" for d in expected]
    for e in feed.entries:
        assert e.link == e.id and e.link.startswith(BASE)
        assert e.updated_parsed and e.published_parsed and e.title.startswith("嵌入式AI简报")
        content = e.content[0].value
        assert "<h2>" in content and len(content) > 1000
        # absolute URLs only: a feed reader has no page to resolve relative ones against
        for url in re.findall(r'(?:href|src)="([^"]+)"', content):
            assert urlsplit(url).scheme in ("http", "https", "mailto"), url
    assert feed.feed.updated == feed.entries[0].updated

    # a forced rebuild gives the same feed byte for byte (ids and times come from the sources)
    before = (site / "feed.xml").read_bytes()
    build(load_settings(corpus_site / "publisher.toml"), corpus_site / "build", force=True, jobs=1)
    assert (site / "feed.xml").read_bytes() == before


def test_every_page_parses_as_html5_without_errors(corpus_site: Path) -> None:
    html5lib = pytest.importorskip("html5lib")
    site = corpus_site / "build" / "web"
    pages = sorted(site.glob("*.html"))
    assert len(pages) == 31  # 30 issues and the index
    for page in pages:
        parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
        try:
            doc = parser.parse(page.read_text(encoding="utf-8"))
        except html5lib.html5parser.ParseError as exc:
            pytest.fail(f"{page.name}: {exc}")
        assert doc.get("lang") == "zh-CN"
        assert doc.find(".//script") is None
        props = {m.get("property") or m.get("name"): m.get("content") for m in doc.iter("meta")}
        for key in ("og:title", "og:description", "og:image", "og:url", "twitter:card"):
            assert props.get(key), f"{page.name}: no {key}"
        assert props["og:url"].startswith(BASE) and props["og:image"].startswith("http")


def test_sitemap_lists_the_index_and_every_listed_page(corpus_site: Path) -> None:
    import xml.etree.ElementTree as ET

    site = corpus_site / "build" / "web"
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [e.text for e in ET.parse(site / "sitemap.xml").getroot().findall("s:url/s:loc", ns)]
    assert locs[0] == BASE
    for loc in locs[1:]:
        assert (site / loc.removeprefix(BASE)).is_file(), loc
    index = (site / "index.html").read_text(encoding="utf-8")
    assert set(re.findall(r'href="(\d{4}-\d{2}-\d{2}\.html)"', index)) == {u.removeprefix(BASE) for u in locs[1:]}


def test_adding_one_issue_rewrites_only_its_page_the_index_the_feed_and_the_sitemap(corpus_site: Path) -> None:
    site = corpus_site / "build" / "web"
    before = snapshot(site)
    write_issue(corpus_site / "issues", "2021-08-01", publish_at="")
    _, _, errors = build(load_settings(corpus_site / "publisher.toml"), corpus_site / "build", jobs=1)
    assert not errors
    after = snapshot(site)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {"2021-08-01.html", *SITE_FILES}
    assert set(before) <= set(after)
    assert 'href="2021-08-01.html"' in (site / "index.html").read_text(encoding="utf-8")
    (corpus_site / "issues" / "2021-08-01.md").unlink()
    build(load_settings(corpus_site / "publisher.toml"), corpus_site / "build", jobs=1)


# ---- escaping, drafts, configuration ------------------------------------------------------------


def test_user_text_is_escaped_in_pages_and_feed(tmp_path: Path) -> None:
    from publisher.pipeline import load, render

    path = write_issue(tmp_path / "issues", "2026-02-02")
    text = path.read_text(encoding="utf-8").replace("测试新闻 2026-02-02", "<script>alert(1)</script> & <b>x</b>")
    path.write_text(text, encoding="utf-8")
    settings = load_settings(web_project(tmp_path, tmp_path / "issues"))
    rendition = render(load(path)[0], "web", settings)
    assert "<script>" not in rendition.body and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in rendition.body
    feed = rendition.parts["feed.xml"]
    # inside <content type="html"> the escaped HTML is escaped once more
    assert "&amp;lt;script&amp;gt;" in feed and "<script>" not in feed


def test_a_draft_gets_a_page_but_is_not_listed_and_does_not_carry_the_site(tmp_path: Path) -> None:
    from publisher.pipeline import load, render

    issues = tmp_path / "issues"
    ready = write_issue(issues, "2026-03-02")
    draft = write_issue(issues, "2026-03-09", status="draft")
    settings = load_settings(web_project(tmp_path, issues))
    d = render(load(draft)[0], "web", settings)
    assert not d.parts and 'content="noindex"' in d.body
    r = render(load(ready)[0], "web", settings)
    assert set(r.parts) >= SITE_FILES
    assert "2026-03-09" not in r.parts["index.html"] + r.parts["feed.xml"] + r.parts["sitemap.xml"]


def test_without_base_url_the_error_names_the_key(tmp_path: Path, monkeypatch) -> None:
    issue = write_issue(tmp_path / "issues", "2026-04-06")
    (tmp_path / "publisher.toml").write_text('[channels]\nenabled = ["web"]\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "publisher", "render", str(issue), "--channel", "web"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "[web] base_url is not set" in r.stderr and "Traceback" not in r.stderr


def test_web_page_urls_feed_the_email_and_wechat_links(tmp_path: Path) -> None:
    from publisher.pipeline import load, render

    issue = write_issue(tmp_path / "issues", "2026-05-04")
    config = web_project(tmp_path, tmp_path / "issues", extra=(
        f'[email]\nview_url = "{BASE}{{date}}.html"\n[wechat]\ncontent_source_url = "{BASE}{{date}}.html"\n'))
    settings = load_settings(config)
    loaded = load(issue)[0]
    page = render(loaded, "web", settings).metadata["url"]
    assert page == f"{BASE}2026-05-04.html"
    assert render(loaded, "email", settings).metadata["view_url"] == page
    assert render(loaded, "wechat", settings).metadata["content_source_url"] == page


def test_templates_are_overridable(tmp_path: Path) -> None:
    from publisher.pipeline import load, render

    issue = write_issue(tmp_path / "issues", "2026-06-01")
    (tmp_path / "tpl" / "web").mkdir(parents=True)
    (tmp_path / "tpl" / "web" / "page.html").write_text(
        '{% extends "!builtin/web/page.html" %}{% block title %}自定义 {{ issue.slug }}{% endblock %}\n',
        encoding="utf-8")
    config = web_project(tmp_path, tmp_path / "issues")
    config.write_text(config.read_text(encoding="utf-8").replace('ledger = "publisher.db"',
                                                                 'ledger = "publisher.db"\ntemplates = "tpl"'),
                      encoding="utf-8")
    body = render(load(issue)[0], "web", load_settings(config)).body
    assert "<title>自定义 2026-06-01</title>" in body and 'content="自定义 2026-06-01"' in body


# ---- the transport ------------------------------------------------------------------------------


def test_push_to_a_folder_writes_the_site_and_rewrites_only_what_changed(project: Path) -> None:
    write_issue(project / "issues", "2026-01-05", image=True)
    newest = write_issue(project / "issues", "2026-01-12")
    # a QR generated from a configured target: the site carries it as qr.png
    add_config(project, f'[newsletter]\nqr_target = "https://example.org/follow"\n'
                        f'[channels]\nenabled = ["web"]\n[web]\nbase_url = "{BASE}"\nfolder = "public"\n')
    assert main(["push", str(newest), "--channel", "web"]) == 0
    site = project / "public"
    assert {"2026-01-05.html", "2026-01-12.html", "qr.png", "2026-01-05/img/2026-01-05.png", *SITE_FILES} \
        == set(snapshot(site))
    before = snapshot(site)
    assert main(["push", str(newest), "--channel", "web", "--force"]) == 0
    assert snapshot(site) == before  # nothing changed: nothing rewritten


def test_a_file_name_leaving_the_site_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from publisher.channels.base import Rendition
    from publisher.channels.web.transport import site_files

    from publisher.errors import TransportError

    for bad in ("../escape.html", "/etc/x.html", "a/../../b.html", "C:\\x.html"):
        r = Rendition("web", "2026-01-05", "<p>x</p>", "text/html", "2026-01-05.html", parts={bad: "x"})
        with pytest.raises(TransportError, match="not a plain path inside the site"):
            site_files(r)


def test_git_transport_pushes_the_site_to_a_bare_repositorys_gh_pages_branch(project: Path, tmp_path: Path) -> None:
    bare, clone = make_remote(tmp_path / "git")
    write_issue(project / "issues", "2026-01-05", image=True)
    newest = write_issue(project / "issues", "2026-01-12")
    add_config(project, f'[newsletter]\nqr_target = "https://example.org/follow"\n'
                        f'[channels]\nenabled = ["web"]\n[web]\nbase_url = "{BASE}"\nrepo_path = "{clone}"\n'
                        'push = true\n')
    assert main(["push", str(newest), "--channel", "web"]) == 0

    files = set(git(bare, "ls-tree", "-r", "--name-only", "gh-pages").splitlines())
    assert files == {"2026-01-05.html", "2026-01-12.html", "qr.png", "2026-01-05/img/2026-01-05.png", *SITE_FILES}
    assert git(bare, "log", "--format=%s", "gh-pages").splitlines() == ["Publish 嵌入式AI简报 (2026-01-12) to the web"]
    assert 'href="2026-01-05.html"' in git(bare, "show", "gh-pages:index.html")
    # the clone's checked-out branch and working tree are untouched
    assert git(clone, "symbolic-ref", "--short", "HEAD") == "master"
    assert git(clone, "status", "--porcelain") == "" and not (clone / "index.html").exists()
    assert git(bare, "log", "--format=%s", "master").splitlines() == ["initial"]

    # re-running with nothing changed makes no commit
    assert main(["push", str(newest), "--channel", "web", "--force"]) == 0
    assert len(git(bare, "log", "--format=%H", "gh-pages").splitlines()) == 1

    # a new issue: one commit changing only its page and the site files
    newer = write_issue(project / "issues", "2026-01-19")
    assert main(["push", str(newer), "--channel", "web"]) == 0
    changed = set(git(bare, "diff-tree", "-r", "--name-only", "--no-commit-id", "gh-pages~1", "gh-pages").split())
    assert changed == {"2026-01-19.html", *SITE_FILES}


# ---- in Chromium ------------------------------------------------------------------------------


@pytest.mark.slow
def test_pages_in_chromium_at_375_and_1280_px(corpus_site: Path, browser) -> None:
    from tests.test_preview import IMAGES_JS, Tab

    site = corpus_site / "build" / "web"
    pages = sorted(site.glob("*.html"))
    problems: list[str] = []
    for width in (375, 1280):
        tab = Tab(browser, width)
        for page in pages:
            tab.errors.clear()
            tab.page.goto(page.as_uri(), wait_until="load")
            scroll, inner = tab.page.evaluate(
                "() => [document.scrollingElement.scrollWidth, window.innerWidth]")
            if scroll > inner:
                problems.append(f"{page.name} @{width}: overflows ({scroll} > {inner} px)")
            n, bad = tab.page.evaluate(IMAGES_JS)
            if bad or n == 0:
                problems.append(f"{page.name} @{width}: images not loaded: {bad}")
            if tab.errors:
                problems.append(f"{page.name} @{width}: console errors {tab.errors}")
            if width == 375:
                for href in tab.page.evaluate(
                        "() => Array.from(document.querySelectorAll('a[href], link[href]'), a => a.href)"):
                    parts = urlsplit(href)
                    if parts.scheme == "file" and not Path(unquote(parts.path)).is_file():
                        problems.append(f"{page.name}: internal link {href} resolves to no file")
        tab.close()
    assert not problems, "\n".join(problems[:20])


def test_example_issues_render_to_the_web(tmp_path: Path) -> None:
    """The shipped examples, with a local cover and inline images, go to the site under their issue."""
    from publisher.pipeline import load, render

    settings = load_settings(web_project(tmp_path, EXAMPLES / "issues"))
    r = render(load(EXAMPLES / "issues" / "2026-11-23.md")[0], "web", settings)
    refs = {i.ref for i in r.images}
    assert "2026-11-23/images/cover.png" in refs
    # no QR file or target configured: pages show the account's public QR image (qr_public_url)
    assert "qr.png" not in refs and settings["newsletter"]["qr_public_url"] in r.body
    assert f'content="{BASE}2026-11-23/images/cover.png"' in r.body
    assert "2026-11-09.html" in r.parts and set(r.parts) >= SITE_FILES


def test_example_issues_build_to_the_web_with_their_images(tmp_path: Path) -> None:
    """`build` writes the images an issue names under the issue's folder of the site (the file
    comes from beside the issue: the containment check reads the path as the issue wrote it)."""
    shutil.copytree(EXAMPLES / "issues", tmp_path / "issues")
    config = web_project(tmp_path, tmp_path / "issues")
    _, _, errors = build(load_settings(config), tmp_path / "build", jobs=1)
    assert errors == []
    site = tmp_path / "build" / "web"
    for name in ("cover.png", "int4-pipeline.png"):
        assert (site / "2026-11-23" / "images" / name).read_bytes() == \
            (tmp_path / "issues" / "images" / name).read_bytes()
    assert 'src="2026-11-23/images/int4-pipeline.png"' in (site / "2026-11-23.html").read_text(encoding="utf-8")


def test_editing_an_older_issue_rewrites_its_page_and_the_site_files_from_one_build(corpus_site: Path) -> None:
    """The carrier (the newest issue) makes the feed from every listed issue's source: an edit of
    an older issue's body must re-render it, not only the older issue's own page; and an issue
    added then deleted leaves no trace in the index or the feed."""
    site = corpus_site / "build" / "web"
    settings = load_settings(corpus_site / "publisher.toml")
    older = sorted((corpus_site / "issues").glob("*.md"))[-3]
    original = older.read_text(encoding="utf-8")
    assert "摘要：" in original
    try:
        older.write_text(original.replace("摘要：", "摘要：EDITED-OLDER-ISSUE ", 1), encoding="utf-8")
        before = snapshot(site)
        assert build(settings, corpus_site / "build", jobs=1)[2] == []
        after = snapshot(site)
        assert {n for n in after if before.get(n) != after[n]} == {f"{older.stem}.html", "feed.xml"}
        assert "EDITED-OLDER-ISSUE" in (site / f"{older.stem}.html").read_text(encoding="utf-8")
        assert "EDITED-OLDER-ISSUE" in (site / "feed.xml").read_text(encoding="utf-8")
    finally:
        older.write_text(original, encoding="utf-8")
        build(settings, corpus_site / "build", jobs=1)
    assert "EDITED-OLDER-ISSUE" not in (site / "feed.xml").read_text(encoding="utf-8")

    feed, index = (site / "feed.xml").read_bytes(), (site / "index.html").read_bytes()
    write_issue(corpus_site / "issues", "2021-08-01", publish_at="")
    build(settings, corpus_site / "build", jobs=1)
    (corpus_site / "issues" / "2021-08-01.md").unlink()
    assert build(settings, corpus_site / "build", jobs=1)[2] == []
    assert (site / "feed.xml").read_bytes() == feed and (site / "index.html").read_bytes() == index
    assert not (site / "2021-08-01.html").exists()

def test_web_pages_keep_closing_text_and_the_summary_label_as_written(tmp_path: Path) -> None:
    """The web channel reads the model as the other channels do: a section's closing text after its
    items, and the 摘要 label only where the source wrote one."""
    from publisher.pipeline import load, render

    issues = tmp_path / "issues"
    issues.mkdir()
    (issues / "2026-06-01.md").write_text(
        "---\ndate: 2026-06-01\nstatus: ready\n---\n\n# 嵌入式AI简报 (2026-06-01)：收尾\n\n"
        "> 导读：本期2条。\n\n## 业界新闻\n\n"
        "- [有摘要的条目](https://example.com/a)\n摘要：写了标签的摘要。\n"
        "- [无标签的条目](https://example.com/b)\n\n"
        "收尾的一段话，跟在本节最后一条之后。\n",
        encoding="utf-8")
    settings = load_settings(web_project(tmp_path, issues))
    body = render(load(issues / "2026-06-01.md")[0], "web", settings).body
    assert "收尾的一段话，跟在本节最后一条之后。" in body
    assert body.count("摘要：") == 1
    wechat = render(load(issues / "2026-06-01.md")[0], "wechat", settings).body
    assert "收尾的一段话" in wechat and wechat.count("摘要：") == 1
