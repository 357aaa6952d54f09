"""`publisher serve` on its production server (waitress): bursts, limits, idle timeouts, forgery."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from publisher.subscribers import SubscriberDB
from publisher.unsubscribe import make_app, make_token, serve_in_thread

SECRET = "s3cret-for-tests"
LIST = "embedded-ai.example.org"


@pytest.fixture
def served(tmp_path):
    db_path = tmp_path / "subscribers.db"
    db = SubscriberDB(db_path)
    db.add_many([(f"r{k}@example.org", "", "test") for k in range(500)])
    server = serve_in_thread(make_app(SECRET, LIST, db_path), "127.0.0.1", 0, threads=8, timeout=2)
    yield server, db
    server.shutdown()


def _post(port: int, email: str) -> int:
    token = urllib.parse.quote(make_token(SECRET, LIST, email), safe="")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", f"/unsubscribe?token={token}", body=b"List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_five_bursts_of_100_parallel_one_click_posts_are_all_answered_and_applied(served):
    server, db = served
    with ThreadPoolExecutor(100) as pool:
        for round_ in range(5):
            emails = [f"r{round_ * 100 + k}@example.org" for k in range(100)]
            statuses = list(pool.map(lambda e: _post(server.server_port, e), emails))
            assert statuses == [200] * 100
            assert all(db.get(e).state == "unsubscribed" for e in emails)
    assert db.count("active") == 0


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_limits_answer_with_status_and_no_traceback(served):
    server, db = served
    port = server.server_port
    answer = _raw(port, b"GET /unsubscribe?token=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414") and b"Traceback" not in answer
    answer = _raw(port, b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    tls_hello = bytes.fromhex("16030100a5010000a10303") + b"\x00" * 200
    answer = _raw(port, tls_hello)
    assert (answer == b"" or b" 400 " in answer.split(b"\r\n")[0]) and b"Traceback" not in answer
    answer = _raw(port, b"GARBAGE\r\n\r\n")
    assert b" 400 " in answer.split(b"\r\n")[0] and b"Traceback" not in answer
    assert db.count("active") == 500


def test_forged_token_gets_400_and_changes_nothing(served):
    server, db = served
    forged = make_token("wrong", LIST, "r1@example.org")
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.request("POST", "/unsubscribe?token=" + urllib.parse.quote(forged), body=b"List-Unsubscribe=One-Click")
    assert conn.getresponse().status == 400
    assert db.get("r1@example.org").state == "active"


def test_200_idle_connections_are_closed_after_the_timeout(served):
    server, _ = served
    socks = [socket.create_connection(("127.0.0.1", server.server_port), timeout=15) for _ in range(200)]
    try:
        start = time.monotonic()
        closed = 0
        for s in socks:
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
        assert closed == 200
        assert time.monotonic() - start < 14  # the 2 s timeout, swept every second, not the 15 s of the client
        assert _post(server.server_port, "r7@example.org") == 200  # and the server still answers
    finally:
        for s in socks:
            s.close()
