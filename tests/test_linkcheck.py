"""The link checker against a local HTTP server: each classification, file:line, the cache."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from publisher.cli import cli
from publisher.linkcheck import LinkChecker, _interleave_by_host, checkable
from publisher.stores.ledger import Ledger

SLOW_SECONDS = 1.5
TIMEOUT = 0.5


class Handler(BaseHTTPRequestHandler):
    hits: Counter  # (method, path) -> count, set per server
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output clean
        pass

    def _count(self):
        with self.lock:
            self.server.hits[(self.command, self.path)] += 1

    def _answer(self, code, headers=None, body=b""):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET" and body:
            self.wfile.write(body)

    def do_HEAD(self):
        self._count()
        self._route()

    def do_GET(self):
        self._count()
        self._route()

    def _route(self):
        path = self.path
        if path == "/ok":
            self._answer(200, body=b"ok")
        elif path == "/moved":
            self._answer(301, {"Location": "/ok"})
        elif path == "/missing":
            self._answer(404)
        elif path == "/broken":
            self._answer(500)
        elif path == "/nohead":
            if self.command == "HEAD":
                self._answer(405, {"Allow": "GET"})
            else:
                self._answer(200, body=b"x" * 100_000)
        elif path == "/slow":
            time.sleep(SLOW_SECONDS)
            self._answer(200)
        else:
            self._answer(404)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.hits = Counter()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_classifications(server, tmp_path):
    httpd, base = server
    checker = LinkChecker(timeout=TIMEOUT, concurrency=8, per_host=8, ledger=None, allow_private=True)
    urls = {name: f"{base}/{name}" for name in ("ok", "moved", "missing", "broken", "nohead", "slow")}
    refused = f"http://127.0.0.1:{closed_port()}/x"
    results = checker.check([*urls.values(), refused, "mailto:a@b.example", "images/x.png"])
    assert set(results) == {*urls.values(), refused}  # mailto: and relative paths are not checked

    ok = results[urls["ok"]]
    assert ok.ok and ok.status == 200 and ok.method == "HEAD"
    moved = results[urls["moved"]]
    assert moved.ok and moved.status == 200 and moved.final_url == urls["ok"]
    nohead = results[urls["nohead"]]
    assert nohead.ok and nohead.status == 200 and nohead.method == "GET"
    assert httpd.hits[("HEAD", "/nohead")] == 1 and httpd.hits[("GET", "/nohead")] == 1
    assert httpd.hits[("GET", "/ok")] == 0  # HEAD answered, no GET

    missing = results[urls["missing"]]
    assert not missing.ok and missing.status == 404 and missing.error == "HTTP 404"
    broken = results[urls["broken"]]
    assert not broken.ok and broken.status == 500
    slow = results[urls["slow"]]
    assert not slow.ok and slow.error == "timeout" and slow.status is None
    assert httpd.hits[("GET", "/slow")] == 0  # a timeout is not asked again with GET
    assert results[refused].error.startswith("connection error")


def test_dns_failure():
    result = LinkChecker(timeout=2).check(["http://no-such-host.invalid/x"])
    r = result["http://no-such-host.invalid/x"]
    assert not r.ok and r.error == "DNS failure"


def test_checkable():
    assert checkable("https://a.example/x") and checkable("HTTP://a.example")
    assert not checkable("mailto:x@y.z") and not checkable("images/a.png") and not checkable("#top")


def test_interleave_by_host():
    urls = [f"http://a/{i}" for i in range(3)] + ["http://b/0", "http://c/0"]
    assert _interleave_by_host(urls)[:3] == ["http://a/0", "http://b/0", "http://c/0"]


def test_per_host_limit_is_respected():
    active = Counter()
    peak = Counter()
    lock = threading.Lock()

    class Probe(LinkChecker):
        def _fetch(self, url):
            host = url.split("/")[2]
            with lock:
                active[host] += 1
                peak[host] = max(peak[host], active[host])
            time.sleep(0.05)
            with lock:
                active[host] -= 1
            from publisher.linkcheck import LinkResult
            return LinkResult(url, True, 200)

    urls = [f"http://h{i % 2}.example/{i}" for i in range(24)]
    Probe(concurrency=10, per_host=3).check(urls)
    assert peak["h0.example"] == 3 and peak["h1.example"] == 3


ISSUE = """---
date: 2026-11-30
status: ready
---

# 嵌入式AI简报 (2026-11-30)

> 导读：本次4条。示例。

## 业界新闻

- [正常 | 示例]({base}/ok)
摘要：跳转的链接 [这里]({base}/moved)。
- [不存在 | 示例]({base}/missing)
摘要：不允许 HEAD 的 [页面]({base}/nohead)。
- [出错 | 示例]({base}/broken)
摘要：发邮件 [给我们](mailto:editor@example.org)。
- [很慢 | 示例]({base}/slow)
摘要：慢。
"""


def test_check_command_reports_dead_links_with_file_line_and_caches(server, project):
    httpd, base = server
    (project / "publisher.toml").write_text(
        '[paths]\nissues = "issues"\nledger = "publisher.db"\n'
        # [check] timeout is an integer in the defaults, so whole seconds here (SLOW_SECONDS > 1)
        "[check]\ntimeout = 1\nconcurrency = 4\nper_host = 4\ncache_hours = 1\n"
        "[network]\nallow_private = true\n",  # the test server is on loopback
        encoding="utf-8",
    )
    path = project / "issues" / "2026-11-30.md"
    path.write_text(ISSUE.format(base=base), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "--format", "json", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    dead = {(f["line"], f["value"]) for f in doc["findings"] if f["kind"] == "link"}
    assert dead == {(14, 404), (16, 500), (18, "timeout")}
    assert all(f["file"] == str(path) and f["level"] == "error" for f in doc["findings"] if f["kind"] == "link")
    assert doc["links"] == {"urls": 6, "dead": 3, "cached": 0}

    first = Counter(httpd.hits)
    assert first[("HEAD", "/missing")] == 1 and first[("HEAD", "/nohead")] == 1
    text = runner.invoke(cli, ["check", str(path)], catch_exceptions=False)
    assert text.exit_code == 1
    assert f"{path}:14: error: dead link (HTTP 404): {base}/missing" in text.stderr
    assert f"{path}:18: error: dead link (timeout): {base}/slow" in text.stderr

    # The first run cached the answers that will not change (2xx/3xx and the 404): the second run
    # asked the server again only about the transient failures (500, timeout).
    assert httpd.hits - first == Counter({("HEAD", "/broken"): 1, ("HEAD", "/slow"): 1})

    rows = Ledger(project / "publisher.db").connect().execute("SELECT url, status FROM link_cache").fetchall()
    assert {r["url"]: r["status"] for r in rows} == {
        f"{base}/ok": 200, f"{base}/moved": 200, f"{base}/missing": 404, f"{base}/nohead": 200}

    second = Counter(httpd.hits)
    offline = runner.invoke(cli, ["check", "--offline", "--format", "json", str(path)], catch_exceptions=False)
    assert json.loads(offline.stdout)["links"] is None
    assert httpd.hits == second  # --offline asks nothing


def test_cache_expires(server, tmp_path):
    httpd, base = server
    ledger = Ledger(tmp_path / "l.db")
    LinkChecker(cache_hours=1, ledger=ledger, allow_private=True).check([f"{base}/ok"])
    assert LinkChecker(cache_hours=1, ledger=ledger, allow_private=True).check([f"{base}/ok"])[f"{base}/ok"].cached
    ledger.connect().execute("UPDATE link_cache SET checked_at = checked_at - 7200")
    again = LinkChecker(cache_hours=1, ledger=ledger, allow_private=True).check([f"{base}/ok"])[f"{base}/ok"]
    assert not again.cached and httpd.hits[("HEAD", "/ok")] == 2


def test_offline_machine_is_one_warning_not_n_errors(project):
    path = project / "issues" / "2026-11-30.md"
    path.write_text(ISSUE.format(base="http://no-such-host.invalid"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", "--format", "json", str(path)], catch_exceptions=False)
    doc = json.loads(result.stdout)
    links = [f for f in doc["findings"] if f["kind"] == "link"]
    assert len(links) == 1 and links[0]["level"] == "warning" and "offline" in links[0]["message"]
    assert result.exit_code == 0


def test_check_never_probes_loopback_or_private_addresses_by_default(server, project):
    """`publisher check` is no port scanner: links to loopback, private and link-local addresses
    are refused before any connection (the same policy as remote images), with the same opt-in."""
    httpd, base = server
    closed = f"http://127.0.0.1:{closed_port()}/x"
    extra = (f"\n- [内网 | 示例](http://10.0.0.1/admin)\n摘要：[元数据](http://169.254.169.254/latest/) "
             f"[本机](http://localhost:{httpd.server_address[1]}/ok) [简写](http://127.1:{httpd.server_address[1]}/ok) "
             f"[关闭的端口]({closed})。\n")
    path = project / "issues" / "2026-11-30.md"
    path.write_text(ISSUE.format(base=base) + extra, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "--format", "json", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    links = [f for f in doc["findings"] if f["kind"] == "link"]
    assert len(links) == 11 and {f["code"] for f in links} == {"private-link"}, links
    # the answer does not depend on what listens there: an open port and a closed one read the same
    by_url = {f["message"].rsplit(": ", 1)[-1]: f["message"] for f in links}
    assert by_url[f"{base}/ok"].replace(f"{base}/ok", "U").split("(", 1)[0] == \
        by_url[closed].replace(closed, "U").split("(", 1)[0]
    assert "[network] allow_private" in links[0]["message"]
    assert httpd.hits == Counter()  # not one request reached the server
    assert Ledger(project / "publisher.db").connect().execute("SELECT count(*) FROM link_cache").fetchone()[0] == 0

    # the opt-in: the same links are probed
    (project / "publisher.toml").write_text(
        (project / "publisher.toml").read_text(encoding="utf-8") + "\n[network]\nallow_private = true\n",
        encoding="utf-8")
    result = runner.invoke(cli, ["check", "--format", "json", str(path)], catch_exceptions=False)
    doc = json.loads(result.stdout)
    assert httpd.hits[("HEAD", "/ok")] >= 1
    assert not [f for f in doc["findings"] if f.get("code") == "private-link"]

    # answers cached under the opt-in are not served once it is off: refused again, not "ok"
    (project / "publisher.toml").write_text(
        (project / "publisher.toml").read_text(encoding="utf-8").replace("allow_private = true", "allow_private = false"),
        encoding="utf-8")
    hits = Counter(httpd.hits)
    result = runner.invoke(cli, ["check", "--format", "json", str(path)], catch_exceptions=False)
    doc = json.loads(result.stdout)
    assert len([f for f in doc["findings"] if f.get("code") == "private-link"]) == 11
    assert httpd.hits == hits
