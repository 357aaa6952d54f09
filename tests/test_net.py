"""publisher/net.py against real local servers: one deadline for the whole exchange (servers that
drip their headers or their body a byte at a time), and the address policy shared by remote
image downloads and `publisher check`."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from publisher.channels.wechat import images

from publisher import net
from publisher.linkcheck import LinkChecker

PNG_HEAD = b"\x89PNG\r\n\x1a\n"


class DripServer:
    """A raw TCP server on 127.0.0.1 that answers every connection with `head` then `body`, each
    byte `gap` seconds after the one before when that part is dripped."""

    def __init__(self, *, drip_head: bool, drip_body: bool, gap: float = 0.1, body_size: int = 400):
        self.body = PNG_HEAD + b"\x00" * body_size
        self.head = (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"p" * 300 + b"\r\n"
                     + f"Content-Length: {len(self.body)}\r\n\r\n".encode())
        self.drip_head, self.drip_body, self.gap = drip_head, drip_body, gap
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/drip.png"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket, data: bytes, drip: bool) -> None:
        if not drip:
            conn.sendall(data)
            return
        for i in range(len(data)):
            if self.closed.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(self.gap)

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request
            self._send(conn, self.head, self.drip_head)
            self._send(conn, self.body, self.drip_body)
        except OSError:
            pass  # the client gave up: that is the point
        finally:
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def drip(request):
    servers = []

    def make(**kw) -> DripServer:
        servers.append(DripServer(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# Without a total deadline each case below takes 30+ s (every byte arrives well within any
# per-read timeout); the bound asserted is the budget plus slack for a loaded machine.
@pytest.mark.parametrize("where", ["headers", "body"])
def test_image_download_has_one_deadline_for_headers_and_body(drip, where):
    server = drip(drip_head=where == "headers", drip_body=where == "body")
    started = time.monotonic()
    with pytest.raises(images.ImageError, match=r"timed out after 1 s \(\[wechat\] remote_image_timeout\)"):
        images.download(server.url, max_bytes=1_000_000, timeout=1, allow_private=True)
    assert time.monotonic() - started < 8
    assert server.connections == 1


def test_deadline_spans_redirect_hops(drip):
    """A redirect chain whose last hop drips: the budget started with the first request."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    target = drip(drip_head=False, drip_body=True)

    class Hop(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.4)  # each hop spends part of the budget
            self.send_response(302)
            self.send_header("Location", target.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    hop = ThreadingHTTPServer(("127.0.0.1", 0), Hop)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(net.NetError) as caught, \
                net.open_url(f"http://127.0.0.1:{hop.server_address[1]}/r", timeout=1.0, allow_private=True) as resp:
            resp.read(10_000_000)
        assert caught.value.kind == "timeout"
        assert time.monotonic() - started < 8
    finally:
        hop.shutdown()
        hop.server_close()


def test_a_whole_answer_within_the_budget_is_read(drip):
    server = drip(drip_head=False, drip_body=False)
    data = images.download(server.url, max_bytes=1_000_000, timeout=5, allow_private=True)
    assert data == server.body


@pytest.mark.parametrize("where", ["headers", "body"])
def test_link_check_has_one_deadline_too(drip, where):
    server = drip(drip_head=where == "headers", drip_body=where == "body")
    started = time.monotonic()
    result = LinkChecker(timeout=1, allow_private=True).check([server.url])[server.url]
    elapsed = time.monotonic() - started
    if where == "headers":
        assert not result.ok and result.error == "timeout", result
    else:  # the check reads headers only: a dripping body does not matter
        assert result.ok and result.status == 200, result
    assert elapsed < 8


# ---- the address policy ------------------------------------------------------------------------


@pytest.mark.parametrize("address, ok", [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False),
    ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("224.0.0.1", False), ("198.18.0.1", False), ("203.0.113.5", False),
])
def test_public_address_policy(address, ok):
    assert net.public(address) is ok


def test_every_resolved_address_is_checked(monkeypatch):
    """A name with one public and one private address is refused as a whole (a resolver would
    otherwise hand either one to the connection). The resolver is the one thing faked here: no
    DNS server of ours can answer the system's resolver on this machine."""
    def fake(host, port, *args, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(net.NetError, match=r"private, loopback, link-local or reserved address \(10\.0\.0\.7\)"):
        net.resolve("mixed.example", 80, allow_private=False, timeout=2)
    assert net.resolve("mixed.example", 80, allow_private=True, timeout=2) == "93.184.216.34"


def test_connection_goes_to_the_checked_address(drip, monkeypatch):
    """DNS rebinding: the name is resolved once, checked, and that address is connected to; a
    second lookup (which a rebinding server would answer differently) never happens."""
    server = drip(drip_head=False, drip_body=False)
    real = socket.getaddrinfo
    calls = []

    def counting(host, *args, **kw):
        calls.append(host)
        return real("127.0.0.1", *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    url = server.url.replace("127.0.0.1", "rebind.test")
    assert images.download(url, max_bytes=1_000_000, timeout=5, allow_private=True) == server.body
    # the only name looked up is the URL's, once (create_connection's numeric 127.0.0.1 is no lookup)
    assert [c for c in calls if c != "127.0.0.1"] == ["rebind.test"]


def test_https_goes_to_the_checked_address_and_verifies_the_name(tmp_path):
    """TLS on the checked address: the certificate is still verified for the URL's host name (a
    self-signed one is refused before any request is written)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served = []

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    served.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 9\r\n\r\n"
                                 + PNG_HEAD + b"x")
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(net.NetError) as caught:
            net.open_url(f"https://localhost:{port}/x.png", timeout=5, allow_private=True)
        assert caught.value.kind == "connect" and "CERTIFICATE_VERIFY_FAILED" in caught.value.message
        assert served == []  # the request never went out over an unverified connection
    finally:
        listener.close()


def test_a_redirect_to_a_private_address_is_refused_at_that_hop(drip, monkeypatch):
    """Every redirect hop is resolved and checked. Only loopback traffic is allowed here, so the
    policy is told that 127.0.0.1 stands for a public site (the first hop) while 127.0.0.2 stays
    what it is: a non-public address the public site redirects to (say, a metadata service)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    inner = socket.create_server(("127.0.0.2", 0))  # what must never be reached
    inner.settimeout(0.2)
    target = f"http://127.0.0.2:{inner.getsockname()[1]}/latest/meta-data"

    class Public(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Public)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    monkeypatch.setattr(net, "public", lambda address: address == "127.0.0.1")
    url = f"http://127.0.0.1:{site.server_address[1]}/img.png"
    try:
        with pytest.raises(images.ImageError, match=r"host 127\.0\.0\.2 is a private, loopback"):
            images.download(url, max_bytes=1000, timeout=5)
        result = LinkChecker(timeout=5).check([url])[url]
        assert not result.ok and result.refused and "127.0.0.2" in result.error
        with pytest.raises(TimeoutError):
            inner.accept()  # nothing ever connected to the private address
    finally:
        site.shutdown()
        site.server_close()
        inner.close()
