"""The WeChat push, end to end: `publisher push … --channel wechat` against a local HTTP server
with the platform's semantics (tests/wechat_server.py). Nothing of ours is patched: the client
makes real HTTP requests, and the server keeps the raw bodies it received."""

from __future__ import annotations

import io
import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage
from publisher.channels.base import LocalImage, Rendition

from publisher.cli import main
from publisher.errors import TransportError
from publisher.model import Issue
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.transports import get_transport
from publisher.transports.base import PushContext
from tests.wechat_server import APP_ID, SECRET, WeChatServer


def _png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (40, 30), "teal").save(out, format="PNG")
    return out.getvalue()


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "neuraltalk" / "issues"
ISSUE = "2026-11-23"  # has a cover and an in-article image
NO_COVER = "2026-11-09"
TITLE = "嵌入式AI简报(2026-11-23)"
PNG = _png()  # a real image: the cover is cropped to the feed card's ratio
GIF = b"GIF89a" + b"\x00" * 64

UPLOADIMG, MATERIAL = "cgi-bin/media/uploadimg", "cgi-bin/material/add_material"
DRAFT_ADD, DRAFT_UPDATE = "cgi-bin/draft/add", "cgi-bin/draft/update"
STABLE, SUBMIT, PUB_GET = "cgi-bin/stable_token", "cgi-bin/freepublish/submit", "cgi-bin/freepublish/get"


@pytest.fixture
def server():
    with WeChatServer() as srv:
        yield srv


@pytest.fixture
def proj(tmp_path, monkeypatch, server):
    """A project with the example issues, pointing [wechat] at the local server."""
    shutil.copytree(EXAMPLES, tmp_path / "issues")
    write_config(tmp_path, server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    return tmp_path


def write_config(root: Path, server: WeChatServer, **wechat: object) -> None:
    table = {"app_id": APP_ID, "api_base": server.url, **wechat}
    lines = "\n".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in table.items())
    (root / "publisher.toml").write_text(
        f'[paths]\nissues = "issues"\nout = "build"\nledger = "publisher.db"\n\n[wechat]\n{lines}\n'
        # the account's QR: generated from an explicitly configured target; an identity of its own
        # (the same in this process and in a killed child, which runs the shipped defaults)
        '[newsletter]\nqr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n'
        'name = "嵌入式AI简报"\naccount = "TestAccount"\nauthor = "测试编辑"\n'
        'editor_url = "https://editor.mydomain.example/"\nproject_url = "https://news.mydomain.example/"\n'
        'archive_url = "https://news.mydomain.example/{date}.md"\nlicense_name = "CC BY 4.0"\n'
        'license_url = "https://creativecommons.org/licenses/by/4.0/"\nqr_public_url = ""\n'
        'tagline = "测试"\ncolumn = ""\nsource = ""\nlicense_badge = ""\n'
        'image_base_url = "https://images.mydomain.example/"\n',
        encoding="utf-8")


def push(capsys, *args: str, issue: str = ISSUE) -> tuple[int, str]:
    rc = main(["push", issue, "--channel", "wechat", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def pushes_row(root: Path, issue: str = ISSUE) -> sqlite3.Row:
    conn = sqlite3.connect(root / "publisher.db")
    conn.row_factory = sqlite3.Row
    return conn.execute("SELECT * FROM pushes WHERE issue = ? AND channel = 'wechat'", (issue,)).fetchone()


def only_draft(server: WeChatServer) -> tuple[str, dict]:
    assert len(server.state.drafts) == 1, server.state.drafts.keys()
    media_id, articles = next(iter(server.state.drafts.items()))
    return media_id, articles[0]


# ---- the draft -----------------------------------------------------------------------------


def test_push_creates_a_draft_with_uploaded_images_and_real_chinese(proj, server, capsys):
    rc, out = push(capsys)
    assert rc == 0, out
    assert server.count(STABLE) == 1
    assert server.count(UPLOADIMG) == 2  # the in-article image and the QR code
    assert server.count(MATERIAL) == 1  # the cover
    assert server.count(DRAFT_ADD) == 1
    media_id, art = only_draft(server)
    # the raw body holds the title as UTF-8 characters, not \uXXXX escapes
    raw = server.state.raw_drafts[media_id][0]
    assert TITLE.encode("utf-8") in raw
    assert b"\\u" not in raw
    assert art["title"] == TITLE
    assert art["author"] == "示例编辑"
    assert art["digest"].startswith("本期6条")
    assert art["content_source_url"].endswith("/2026-11-23.md")
    assert art["thumb_media_id"] in server.state.materials
    # the cover as the feed card shows it: 2.35:1, JPEG
    with PILImage.open(io.BytesIO(server.state.materials[art["thumb_media_id"]])) as cover:
        assert cover.format == "JPEG" and abs(cover.width / cover.height - 2.35) < 0.01
    # every local ref replaced by the URL the platform gave for it
    content = art["content"]
    assert "images/int4-pipeline.png" not in content and 'src="qr.png"' not in content
    assert len(server.state.uploads) == 2
    for url in server.state.uploads:
        assert f'src="{url}"' in content
    assert (EXAMPLES / "images" / "int4-pipeline.png").read_bytes() in server.state.uploads.values()
    row = pushes_row(proj)
    assert row["state"] == "done" and row["remote_id"] == media_id
    assert "draft added" in out and media_id in out


def test_second_push_reuses_token_and_uploads_and_updates_the_draft(proj, server, capsys):
    assert push(capsys)[0] == 0
    rc, out = push(capsys, "--force")
    assert rc == 0, out
    assert server.count(STABLE) == 1  # the cached token served both pushes
    assert server.count(UPLOADIMG) == 2 and server.count(MATERIAL) == 1  # nothing uploaded again
    assert server.count(DRAFT_ADD) == 1 and server.count(DRAFT_UPDATE) == 1
    media_id, art = only_draft(server)
    update = json.loads(server.bodies(DRAFT_UPDATE)[0])
    assert update["media_id"] == media_id and update["index"] == 0
    assert update["articles"]["title"] == TITLE
    assert TITLE.encode() in server.bodies(DRAFT_UPDATE)[0]
    assert "draft updated" in out and "0 image(s) uploaded, 3 from cache" in out
    assert pushes_row(proj)["remote_id"] == media_id


def test_new_draft_option_adds_another_draft(proj, server, capsys):
    assert push(capsys)[0] == 0
    first = pushes_row(proj)["remote_id"]
    rc, out = push(capsys, "--force", "--new-draft")
    assert rc == 0, out
    assert server.count(DRAFT_ADD) == 2 and server.count(DRAFT_UPDATE) == 0
    assert len(server.state.drafts) == 2
    second = pushes_row(proj)["remote_id"]
    assert second != first and set(server.state.drafts) == {first, second}
    assert server.state.drafts[second][0]["title"] == TITLE
    # the ledger now points at the newest draft, so the next push updates that one
    rc, _ = push(capsys, "--force")
    newest = pushes_row(proj)["remote_id"]
    assert rc == 0 and json.loads(server.bodies(DRAFT_UPDATE)[0])["media_id"] == newest
    assert server.state.drafts[newest][0]["title"] == TITLE


def test_issue_without_cover_uses_the_qr_code_as_thumb(proj, server, capsys):
    rc, out = push(capsys, issue=NO_COVER)
    assert rc == 0, out
    _, art = only_draft(server)
    qr_url = next(iter(server.state.uploads))
    # the QR code whole, padded with white to the feed card's 2.35:1
    with PILImage.open(io.BytesIO(server.state.materials[art["thumb_media_id"]])) as thumb, \
            PILImage.open(io.BytesIO(server.state.uploads[qr_url])) as qr:
        assert abs(thumb.width / thumb.height - 2.35) < 0.01 and thumb.height == qr.height
    details = json.loads(pushes_row(proj, NO_COVER)["details"])
    assert any("QR code as the draft's cover" in n for n in details["notes"])


def test_issue_without_cover_uses_the_configured_default_cover(proj, server, capsys):
    PILImage.new("RGB", (300, 300), (200, 0, 0)).save(proj / "default-cover.png")
    write_config(proj, server, default_cover="default-cover.png")
    rc, out = push(capsys, issue=NO_COVER)
    assert rc == 0, out
    _, art = only_draft(server)
    with PILImage.open(io.BytesIO(server.state.materials[art["thumb_media_id"]])) as thumb:
        assert thumb.size == (300, 128)  # cropped to 2.35:1
        r, g, b = thumb.getpixel((150, 64))
        assert r > 180 and g < 30 and b < 30
    details = json.loads(pushes_row(proj, NO_COVER)["details"])
    assert any("default_cover" in n for n in details["notes"])


def test_dry_run_sends_nothing(proj, server, capsys):
    rc, out = push(capsys, "--dry-run", "--publish")
    assert rc == 0, out
    assert "dry run: would upload 2 image(s) and the cover" in out and "publish" in out
    assert server.state.requests == []
    assert pushes_row(proj) is None


# ---- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, token_path", [("stable_token", STABLE), ("token", "cgi-bin/token")])
def test_token_cached_in_ledger_across_pushes(proj, server, capsys, mode, token_path):
    write_config(proj, server, token_mode=mode)
    assert push(capsys)[0] == 0
    assert push(capsys, "--force")[0] == 0
    assert server.count(token_path) == 1
    assert server.state.rejected == []
    if mode == "stable_token":
        body = json.loads(server.bodies(STABLE)[0])
        assert body == {"grant_type": "client_credential", "appid": APP_ID, "secret": SECRET,
                        "force_refresh": False}
    else:
        seen = next(r for r in server.state.requests if r.path == token_path)
        assert seen.method == "GET" and seen.query["appid"] == APP_ID


def test_token_renewed_before_expiry(proj, server, capsys):
    server.state.ttl = 2  # the client renews at half the lifetime of short tokens
    assert push(capsys)[0] == 0
    time.sleep(1.2)
    assert push(capsys, "--force")[0] == 0
    assert server.count(STABLE) == 2
    assert server.state.rejected == []  # renewed ahead of expiry: no call was refused


@pytest.mark.parametrize("invalidate, code", [("expire_tokens", 42001), ("revoke_tokens", 40001)])
def test_rejected_token_renewed_once_and_call_retried(proj, server, capsys, invalidate, code):
    assert push(capsys)[0] == 0
    getattr(server, invalidate)()  # the cached token is now refused by the platform
    rc, out = push(capsys, "--force")
    assert rc == 0, out
    assert server.state.rejected == [(DRAFT_UPDATE, code)]
    assert server.count(DRAFT_UPDATE) == 2  # refused once, then retried with the new token
    assert server.count(STABLE) == 2
    assert json.loads(server.bodies(STABLE)[1])["force_refresh"] is True


def test_busy_answer_retried(proj, server, capsys):
    server.state.busy_once = {DRAFT_ADD, UPLOADIMG}
    rc, out = push(capsys)
    assert rc == 0, out
    assert (DRAFT_ADD, -1) in server.state.rejected and (UPLOADIMG, -1) in server.state.rejected
    assert server.count(DRAFT_ADD) == 2 and len(server.state.drafts) == 1
    assert server.count(UPLOADIMG) == 3 and len(server.state.uploads) == 2


def test_busy_forever_gives_up(proj, server, capsys):
    server.state.force_errcode = {DRAFT_ADD: -1}
    rc, out = push(capsys)
    assert rc == 1
    assert server.count(DRAFT_ADD) == 4  # the first try and three retries
    assert "errcode -1 (system busy)" in out
    assert pushes_row(proj)["state"] == "failed"


@pytest.mark.parametrize("path, code, words", [
    (STABLE, 40164, ["errcode 40164", "IP whitelist", "开发→基本配置", "203.0.113.7"]),
    (UPLOADIMG, 45009, ["errcode 45009", "daily quota", "resets"]),
    (MATERIAL, 45011, ["errcode 45011", "per-minute", "wait a minute"]),
    (DRAFT_ADD, 48001, ["errcode 48001", "not authorized", "接口权限"]),
])
def test_platform_errors_explained(proj, server, capsys, path, code, words):
    server.state.force_errcode = {path: code}
    rc, out = push(capsys)
    assert rc == 1
    for w in words:
        assert w in out, (w, out)
    assert server.count(path) == 1  # not retried
    row = pushes_row(proj)
    assert row["state"] == "failed" and f"errcode {code}" in row["last_error"]


def test_wrong_secret_explained(proj, server, capsys, monkeypatch):
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", "not-the-secret")
    rc, out = push(capsys)
    assert rc == 1 and "errcode 40125" in out and "app_secret_env" in out
    assert "not-the-secret" not in out


# ---- local checks: refused before any request ---------------------------------------------


def test_long_title_refused_before_any_request(proj, server, capsys):
    write_config(proj, server, title_template="{name}：{title}")
    rc, out = push(capsys)
    assert rc == 1
    title = "嵌入式AI简报：嵌入式AI简报 (2026-11-23)：端侧INT4量化/RISC-V向量扩展/稀疏推理"
    assert f"wechat title {title!r} is {len(title)} characters; the limit is 32 (at most)" in out, out
    assert len(title) == 53
    assert server.state.requests == []


def test_long_author_and_source_url_refused_together(proj, server, capsys):
    src = proj / "issues" / f"{ISSUE}.md"
    text = src.read_text(encoding="utf-8")
    text = text.replace("author: 示例编辑", "author: 一位名字非常非常非常长的示例编辑同学")
    (proj / "issues" / f"{ISSUE}.md").write_text(text, encoding="utf-8")
    long_url = "https://example.org/" + "a" * 1100 + "/{date}.md"
    (proj / "publisher.toml").write_text(
        (proj / "publisher.toml").read_text(encoding="utf-8")
        .replace('archive_url = "https://news.mydomain.example/{date}.md"', f'archive_url = "{long_url}"'),
        encoding="utf-8")
    rc, out = push(capsys)
    assert rc == 1
    assert "author '一位名字非常非常非常长的示例编辑同学' is 18 characters; the limit is 16" in out, out
    assert "content_source_url (阅读原文) is 1,134 bytes; the limit is 1,024" in out
    assert server.state.requests == []


def _ctx(root: Path, server: WeChatServer, monkeypatch, **options) -> tuple[PushContext, object]:
    write_config(root, server)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    settings = load_settings()
    issue = Issue(date=__import__("datetime").date(2026, 11, 30), title="t", brand="嵌入式AI简报")
    ctx = PushContext(settings=settings, ledger=Ledger(root / "publisher.db"), issue=issue, options=options)
    return ctx, get_transport("wechat")()


def _rendition(body: str, images=(), **meta) -> Rendition:
    metadata = {"title": "嵌入式AI简报(2026-11-30)", "author": "编辑", "digest": "摘要",
                "content_source_url": "https://example.org/2026-11-30.md", **meta}
    return Rendition("wechat", "2026-11-30", body, "text/html", "2026-11-30.html", metadata, tuple(images))


COVER = LocalImage("cover.png", data=PNG, role="cover")


@pytest.mark.parametrize("body, words", [
    ("字" * 20_000, "content is 20,000 characters; the limit is 19,999"),
    ("x" * 25_000, "content is 25,000 characters; the limit is 19,999"),
])
def test_long_content_refused_before_any_request(tmp_path, server, monkeypatch, body, words):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    with pytest.raises(TransportError, match=words):
        transport.push(_rendition(body, [COVER]), ctx)
    assert server.state.requests == []


def test_long_digest_refused_before_any_request(tmp_path, server, monkeypatch):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    with pytest.raises(TransportError, match="digest is 129 characters; the limit is 128"):
        transport.push(_rendition("<p>x</p>", [COVER], digest="摘" * 129), ctx)
    assert server.state.requests == []


def test_content_just_under_the_limit_is_sent(tmp_path, server, monkeypatch):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    result = transport.push(_rendition("字" * 19_999, [COVER]), ctx)
    assert server.state.drafts[result.remote_id][0]["content"] == "字" * 19_999


def test_image_that_cannot_be_used_refused_before_any_request(tmp_path, server, monkeypatch):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    text = tmp_path / "notes.png"
    text.write_bytes(b"not an image at all")
    r = _rendition('<img src="notes.png">', [LocalImage("notes.png", path=text), COVER])
    with pytest.raises(TransportError, match=r"notes\.png.* is named like an image but its content is not a jpg"):
        transport.push(r, ctx)
    broken = tmp_path / "big.png"
    broken.write_bytes(GIF + b"\x00" * (1024 * 1024))  # a GIF header, then nothing decodable
    r = _rendition('<img src="big.png">', [LocalImage("big.png", path=broken), COVER])
    with pytest.raises(TransportError, match=r"big\.png cannot be decoded as gif"):
        transport.push(r, ctx)
    assert server.state.requests == []


def test_no_cover_and_no_qr_refused(tmp_path, server, monkeypatch):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    with pytest.raises(TransportError, match="needs a cover image"):
        transport.push(_rendition("<p>x</p>"), ctx)
    assert server.state.requests == []


def test_image_refs_replaced_even_when_written_in_single_quotes(tmp_path, server, monkeypatch):
    ctx, transport = _ctx(tmp_path, server, monkeypatch)
    r = _rendition("<p><img src='a b&c.png'> <img src=\"a b&amp;c.png\"></p>",
                   [LocalImage("a b&c.png", data=PNG), COVER])
    result = transport.push(r, ctx)
    content = server.state.drafts[result.remote_id][0]["content"]
    url = next(iter(server.state.uploads)).replace("&", "&amp;")
    assert content.count(f'src="{url}"') == 2 and "a b" not in content
    assert result.details["images_uploaded"] == 2


# ---- publishing ----------------------------------------------------------------------------


def test_publish_polls_until_success(proj, server, capsys):
    server.state.publishing_polls = 2
    rc, out = push(capsys, "--publish")
    assert rc == 0, out
    assert server.count(SUBMIT) == 1 and server.count(PUB_GET) == 3
    (publish_id,) = server.state.publishes
    row = pushes_row(proj)
    assert row["url"].startswith("https://mp.weixin.qq.com/s/ARTICLE_")
    details = json.loads(row["details"])
    assert details["publish_id"] == publish_id and details["publish_status"] == 0
    conn = sqlite3.connect(proj / "publisher.db")
    assert conn.execute("SELECT publish_id, publish_status, article_url FROM wechat_drafts").fetchone() == (
        publish_id, 0, row["url"])
    assert row["url"] in out
    # pushed again (with or without --publish): recognised as published, never a second article
    for args in (("--force",), ("--force", "--publish")):
        rc, out = push(capsys, *args)
        assert rc == 0, out
        assert "already submitted" in out and row["url"] in out
    assert server.count(DRAFT_ADD) == 1 and server.count(SUBMIT) == 1
    assert len(server.articles_for(TITLE)) == 1
    # a second, separate draft only when asked for
    rc, out = push(capsys, "--force", "--new-draft")
    assert rc == 0 and server.count(DRAFT_ADD) == 2 and server.count(SUBMIT) == 1


@pytest.mark.parametrize("status, meaning", [(3, "常规失败"), (4, "平台审核不通过"), (6, "成功后系统封禁所有文章")])
def test_publish_failure_status_reported(proj, server, capsys, status, meaning):
    server.state.publish_status = status
    rc, out = push(capsys, "--publish")
    assert rc == 1
    assert f"publish_status {status}: {meaning}" in out, out
    row = pushes_row(proj)
    assert row["state"] == "failed" and meaning in row["last_error"]
    conn = sqlite3.connect(proj / "publisher.db")
    assert conn.execute("SELECT publish_status FROM wechat_drafts").fetchone() == (status,)


def test_publish_still_publishing_when_poll_budget_runs_out(proj, server, capsys):
    write_config(proj, server, publish_poll_seconds=1)
    server.state.publishing_polls = 1000
    started = time.monotonic()
    rc, out = push(capsys, "--publish")
    assert rc == 1 and "still publishing after 1 s" in out, out
    assert time.monotonic() - started < 5
    assert 2 <= server.count(PUB_GET) <= 4
    # the advice followed: push again later → the same publish is polled, never submitted again
    server.state.publishing_polls = 0
    rc, out = push(capsys, "--publish")
    assert rc == 0 and "published: https://mp.weixin.qq.com/s/" in out, out
    assert server.count(SUBMIT) == 1 and len(server.articles_for(TITLE)) == 1
    assert server.count(DRAFT_ADD) == 1


# ---- secrets -------------------------------------------------------------------------------


def test_secret_and_tokens_never_in_output_logs_or_ledger(proj, server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert push(capsys)[0] == 0
    server.expire_tokens()
    server.state.force_errcode = {MATERIAL: 40164}
    outputs = [push(capsys, "--force")[1]]
    server.state.force_errcode = {}
    (proj / "issues" / "images" / "cover.png").write_bytes(PNG)  # a new cover: uploaded again
    outputs.append(push(capsys, "--force", "--publish")[1])
    assert main(["status"]) == 0
    outputs.append(capsys.readouterr().out)
    assert len(server.state.issued) >= 2
    # urllib3 logged the requests at DEBUG (with redacted tokens)
    assert "access_token=***" in caplog.text
    ledger_dump = "\n".join(str(tuple(r)) for r in sqlite3.connect(proj / "publisher.db").execute(
        "SELECT * FROM pushes"))
    for text in (*outputs, caplog.text, ledger_dump):
        assert SECRET not in text
        for token in server.state.issued:
            assert token not in text


def test_unreachable_server_message_has_no_secret(proj, server, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    # token_mode "token" puts the secret in the query string of a GET
    write_config(proj, server, token_mode="token", api_base="http://127.0.0.1:9")
    rc, out = push(capsys)
    assert rc == 1 and "cannot reach http://127.0.0.1:9/" in out, out
    assert SECRET not in out and SECRET not in caplog.text
    assert SECRET not in (pushes_row(proj)["last_error"] or "")


# ---- never two articles: kill trials and lost replies ---------------------------------------

DRAFT_BATCH, PUB_BATCH = "cgi-bin/draft/batchget", "cgi-bin/freepublish/batchget"
KILL_POINTS = ["wechat:after-draft-add", "wechat:after-submit", "wechat:polling"]


def _killed_push(root: Path, point: str, args: tuple[str, ...]) -> None:
    """`publisher push … --channel wechat` in a subprocess, SIGKILLed where it pauses at `point`."""
    import os
    import subprocess
    import sys

    pause = root / "paused"
    pause.unlink(missing_ok=True)
    env = {**os.environ, "PUBLISHER_PAUSE_AT": point, "PUBLISHER_PAUSE_FILE": str(pause),
           "PUBLISHER_WECHAT_SECRET": SECRET}
    env.pop("PUBLISHER_CONFIG", None)
    child = subprocess.Popen([sys.executable, "-m", "publisher", "push", ISSUE, "--channel", "wechat", *args],
                             cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not pause.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the push never reached " + point
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_kill_trials_at_every_step_make_one_draft_and_at_most_one_article(tmp_path, monkeypatch, capsys):
    """21 trials: a push killed (SIGKILL) after draft/add, after freepublish/submit (both before
    the ledger write) and while polling; then `push --publish` again, as the scheduler would."""
    report = []
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    for trial in range(21):
        point = KILL_POINTS[trial % 3]
        root = tmp_path / f"t{trial}"
        shutil.copytree(EXAMPLES, root / "issues")
        with WeChatServer() as srv:
            srv.state.publish_seconds = 0.3  # the platform publishes whether polled or not
            write_config(root, srv, publish_poll_seconds=10)
            monkeypatch.chdir(root)
            _killed_push(root, point, ("--publish",))
            rc, out = push(capsys, "--publish")
            assert rc == 0, out
            rc2, out2 = push(capsys, "--publish", "--force")  # and once more: nothing new
            assert rc2 == 0, out2
            report.append({"point": point, "draft_add": srv.count(DRAFT_ADD), "submits": srv.count(SUBMIT),
                           "articles": len(srv.articles_for(TITLE))})
            assert srv.count(DRAFT_ADD) == 1, report[-1]
            assert srv.count(SUBMIT) == 1 and len(srv.articles_for(TITLE)) == 1, report[-1]
            assert pushes_row(root)["url"].startswith("https://mp.weixin.qq.com/s/ARTICLE_")
    print("\nwechat kill trials:", json.dumps(report))


def test_kill_after_draft_add_without_publish_finds_the_draft(tmp_path, monkeypatch, capsys, server):
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    shutil.copytree(EXAMPLES, tmp_path / "issues")
    write_config(tmp_path, server)
    monkeypatch.chdir(tmp_path)
    _killed_push(tmp_path, "wechat:after-draft-add", ())
    assert server.count(DRAFT_ADD) == 1
    rc, out = push(capsys)
    assert rc == 0 and "not adding another" in pushes_row(tmp_path)["details"], out
    media_id, _ = only_draft(server)
    assert server.count(DRAFT_ADD) == 1 and server.count(DRAFT_UPDATE) == 1 and server.count(DRAFT_BATCH) == 1
    assert pushes_row(tmp_path)["remote_id"] == media_id


@pytest.mark.parametrize("path", [DRAFT_ADD, SUBMIT])
def test_reply_lost_after_the_platform_did_the_work_is_never_redone(proj, server, capsys, path):
    server.state.lose_reply[path] = 1
    server.state.publish_seconds = 0.2
    write_config(proj, server, publish_poll_seconds=5)
    rc, out = push(capsys, "--publish")
    assert rc == 1 and "may or may not have been done" in out and "never does it twice" in out, out
    assert server.count(path) == 1, "not re-sent after the connection failed"
    rc, out = push(capsys, "--publish")
    assert rc == 0, out
    assert server.count(DRAFT_ADD) == 1 and server.count(SUBMIT) == 1
    assert len(server.articles_for(TITLE)) == 1


def _open_submit_intent(root: Path, media_id: str) -> None:
    """A publish intent as a push leaves it when it dies between recording the intent and sending
    the submit (or when the submit's answer is lost): recorded now."""
    from publisher.stores.base import now_iso

    ledger = Ledger(root / "publisher.db")
    with ledger.transaction() as conn:
        conn.execute("INSERT INTO wechat_intents (app_id, issue, step, media_id, created_at) "
                     "VALUES (?, ?, 'publish_submit', ?, ?)", (APP_ID, ISSUE, media_id, now_iso()))


def test_submit_that_never_took_effect_is_submitted_again_only_after_the_settle_time(proj, server, capsys):
    """A publish intent without effect (the process died before the request left): the draft
    stays in the box and nothing is published. Within [wechat] publish_settle_hours that looks
    exactly like a slow publish, so nothing is submitted; after it, the draft is submitted once."""
    write_config(proj, server, publish_poll_seconds=1)
    rc, _ = push(capsys)
    assert rc == 0
    media_id, _ = only_draft(server)
    _open_submit_intent(proj, media_id)
    rc, out = push(capsys, "--publish", "--force")
    assert rc == 1 and "lost its answer" in out and "is still in the draft box" in out, out
    assert "submits again only if the draft is still unpublished in the box after" in out
    assert server.count(SUBMIT) == 0 and server.count(DRAFT_UPDATE) == 0
    write_config(proj, server, publish_poll_seconds=5, publish_settle_hours=2 / 3600)
    rc, out = push(capsys, "--publish", "--force")
    assert rc == 0 and "did not take effect" in pushes_row(proj)["details"], out
    assert server.count(SUBMIT) == 1 and server.submitted(media_id) == 1
    assert len(server.articles_for(TITLE)) == 1


@pytest.mark.parametrize("leaves_at", ["publish", "submit"])
def test_lost_submit_reply_and_a_publish_slower_than_the_poll_budget_is_never_submitted_twice(
        proj, server, capsys, leaves_at):
    """The platform accepted the submit, the answer was lost, and publishing takes longer than
    publish_poll_seconds (review can take minutes): every push before the article shows up fails
    loudly and submits nothing; the one after records the article. One submit, one article."""
    server.state.lose_reply[SUBMIT] = 1
    server.state.publish_seconds = 4.0
    server.state.draft_leaves_at = leaves_at
    write_config(proj, server, publish_poll_seconds=1)
    rc, out = push(capsys, "--publish")
    assert rc == 1 and "may or may not have been done" in out, out
    media_id, _ = next(iter(server.state.publishes.values()))["media_id"], None
    attempts = 0
    while True:
        attempts += 1
        rc, out = push(capsys, "--publish")
        assert server.count(SUBMIT) == 1, (attempts, out)  # never a second submit
        if rc == 0:
            break
        assert "lost its answer" in out and "never submits one draft twice" in out, out
        where = "is still in the draft box" if leaves_at == "publish" else "has left the draft box"
        assert where in out, out
        assert attempts < 20, out
    assert attempts >= 2  # at least one push ran out of its poll budget before the publish ended
    assert "published: https://mp.weixin.qq.com/s/ARTICLE_" in out or "already published" in out, out
    assert server.submitted(media_id) == 1 and len(server.articles_for(TITLE)) == 1
    assert server.count(DRAFT_ADD) == 1
    row = pushes_row(proj)
    assert row["state"] == "done" and row["url"].startswith("https://mp.weixin.qq.com/s/ARTICLE_")
    # and once more, as the scheduler would: nothing new
    rc, out = push(capsys, "--publish", "--force")
    assert rc == 0 and server.count(SUBMIT) == 1 and len(server.articles_for(TITLE)) == 1


@pytest.mark.parametrize("point", ["wechat:before-submit", "wechat:after-submit"])
def test_kill_around_the_submit_with_a_slow_publish_submits_once(tmp_path, monkeypatch, capsys, server, point):
    """SIGKILL just before the submit leaves (it never happens) and just after it was accepted
    (the answer never recorded), with a publish slower than the poll budget: pushes again and
    again until done. Exactly one submit either way: the one that never left is made once the
    draft has sat unpublished for publish_settle_hours; the accepted one is never repeated."""
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    shutil.copytree(EXAMPLES, tmp_path / "issues")
    server.state.publish_seconds = 3.0
    write_config(tmp_path, server, publish_poll_seconds=1, publish_settle_hours=6 / 3600)
    monkeypatch.chdir(tmp_path)
    _killed_push(tmp_path, point, ("--publish",))
    assert server.count(SUBMIT) == (1 if point == "wechat:after-submit" else 0)
    for _attempt in range(30):
        rc, out = push(capsys, "--publish")
        assert server.count(SUBMIT) <= 1, out
        if rc == 0:
            break
        assert "never submits" in out, out  # a lost answer reconciled, or a recorded publish polled
    assert rc == 0, out
    assert server.count(SUBMIT) == 1 and server.count(DRAFT_ADD) == 1
    assert len(server.articles_for(TITLE)) == 1


def test_draft_published_by_hand_is_recognised_not_replaced(proj, server, capsys):
    rc, _ = push(capsys)
    media_id, _ = only_draft(server)
    with server.lock:  # the editor publishes the draft in the MP console
        server.state.publishes["999"] = {"media_id": media_id, "publish_id": 999, "polls": 0, "at": 0,
                                         "articles": server.state.drafts[media_id]}
        server._finish(server.state.publishes["999"])
    rc, out = push(capsys, "--force")
    assert rc == 0 and "already published" in out, out
    assert server.count(DRAFT_ADD) == 1 and len(server.articles_for(TITLE)) == 1
