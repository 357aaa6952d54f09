"""The asyncio SMTP client (publisher/transports/smtp.py) against servers that misbehave the ways
real ones do: silent, slow to the byte, long-winded, not SMTP at all, picky about AUTH. Each is a
real TCP server on 127.0.0.1 playing a script; aiosmtpd plays the well-behaved server elsewhere.
Also Ctrl-C in the middle of a campaign (`publisher push`, a real process)."""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from contextlib import contextmanager, suppress

import pytest

from publisher.errors import TransportError
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.transports.email import campaign_status
from publisher.transports.smtp import (
    REPLY_LINE,
    REPLY_LINES,
    AfterDot,
    Permanent,
    Session,
    SmtpConfig,
    Temporary,
    send_message,
)
from tests import test_email_delivery as delivery
from tests.email_support import ISSUE, Handler, write_project
from tests.test_email_delivery import _cli, add_subscribers, start_server
from tests.test_email_faults import _push_proc

cert, env = delivery.cert, delivery.env  # the same fixtures: TLS certificate, environment

MSG = b"From: news@example.org\r\nTo: reader@example.com\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"
EHLO = b"250-test.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


class _Talk(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        with suppress(OSError):
            self.server.script(self.rfile, self.wfile, self.server)


class Scripted(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script):
        self.script = script
        self.seen: list[bytes] = []  # every line the client sent, in order
        self.data: list[bytes] = []  # every message body received
        super().__init__(("127.0.0.1", 0), _Talk)


@contextmanager
def serving(script):
    server = Scripted(script)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def smtp(*, greeting=b"220 test ESMTP\r\n", ehlo=EHLO, auth=None, at=None, after_dot=b"250 2.0.0 queued\r\n"):
    """A server script: `at(verb, line, w)` may answer a command instead (return True), e.g. by
    saying nothing; `after_dot` is the reply to the final dot (None: say nothing)."""

    def script(r, w, server):
        w.write(greeting)
        while line := r.readline():
            server.seen.append(line)
            verb = line.split(b" ")[0].strip().upper()
            if at and at(verb, line, r, w):
                continue
            if verb == b"EHLO":
                w.write(ehlo)
            elif verb == b"HELO":
                w.write(b"250 test.example\r\n")
            elif verb == b"AUTH" and auth:
                auth(line, r, w)
            elif verb in (b"MAIL", b"RCPT", b"RSET"):
                w.write(b"250 OK\r\n")
            elif verb == b"DATA":
                w.write(b"354 go ahead\r\n")
                body = b""
                while (chunk := r.readline()) not in (b".\r\n", b""):
                    body += chunk
                server.data.append(body)
                if after_dot is None:
                    time.sleep(30)  # silent: the client's timeout must end this
                    return
                w.write(after_dot)
            elif verb == b"QUIT":
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"502 5.5.2 what\r\n")
    return script


def cfg(port: int, *, username: str = "", timeout: float = 1.0) -> SmtpConfig:
    return SmtpConfig("127.0.0.1", port, "none", username, "s3cret" if username else "", timeout, 0, 1, 0)


def send(server, **kw) -> None:
    send_message(cfg(server.server_address[1], **kw), "news@example.org", "reader@example.com", MSG)


def test_a_message_goes_through_pipelined_and_dot_stuffed():
    with serving(smtp()) as server:
        send(server)
    assert server.data == [MSG.replace(b"\r\n.leading", b"\r\n..leading").split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                           + b"..leading dot\r\nbody\r\n"]
    verbs = [line.split(b" ")[0].strip() for line in server.seen]
    assert verbs == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]


def test_a_server_silent_after_the_final_dot_is_ambiguous_within_the_timeout():
    with serving(smtp(after_dot=None)) as server:
        t0 = time.monotonic()
        with pytest.raises(AfterDot, match=r"no answer in 1 s \(\[smtp\] timeout\)"):
            send(server)
    assert time.monotonic() - t0 < 5
    assert len(server.data) == 1  # it has the message: whether it will deliver it is unknown


def test_a_server_silent_before_the_final_dot_is_temporary_within_the_timeout():
    def mute_rcpt(verb, line, r, w):
        if verb == b"RCPT":
            time.sleep(30)
            return True
        return False

    with serving(smtp(at=mute_rcpt)) as server:
        t0 = time.monotonic()
        with pytest.raises(Temporary, match="no answer in 1 s"):
            send(server)
    assert time.monotonic() - t0 < 5 and server.data == []


def test_an_answer_read_late_because_the_loop_was_busy_is_not_a_timeout():
    # the loop also runs the database calls: one that takes longer than [smtp] timeout (a
    # PostgreSQL failover) must not turn the answers that arrived meanwhile into timeouts
    def slow_noop(verb, line, r, w):
        if verb == b"NOOP":
            time.sleep(0.3)
            w.write(b"250 2.0.0 ok\r\n")
            return True
        return False

    async def main(port: int) -> int:
        s = await Session.open(cfg(port))
        s.write(b"NOOP\r\n")
        waiting = asyncio.ensure_future(s.reply())
        await asyncio.sleep(0.1)  # the reply is awaited ...
        time.sleep(1.5)  # ... and the loop is busy past the timeout while the answer arrives
        code, _ = await waiting
        s.close()
        return code

    with serving(smtp(at=slow_noop)) as server:
        assert asyncio.run(main(server.server_address[1])) == 250


def test_a_server_closing_after_the_final_dot_is_ambiguous():
    def close_after_dot(verb, line, r, w):
        if verb == b"DATA":
            w.write(b"354 go ahead\r\n")
            while r.readline() not in (b".\r\n", b""):
                pass
            raise ConnectionError("hang up")
        return False

    with serving(smtp(at=close_after_dot)) as server, pytest.raises(AfterDot, match="closed by the server"):
        send(server)


@pytest.mark.parametrize("greeting, expected", [
    (b"220-" + b"x" * 100_000 + b"\r\n220 ok\r\n", f"longer than {REPLY_LINE} bytes"),
    (b"".join(b"220-more\r\n" for _ in range(100_000)), "more than 200 lines"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not an SMTP reply: b'HTTP/1.1 400"),
    (b"554 5.7.1 no service for you\r\n", "greeting: 554 5.7.1 no service for you"),
])
def test_a_greeting_that_is_not_a_reasonable_smtp_reply_is_a_connect_failure(greeting, expected):
    with serving(smtp(greeting=greeting)) as server, pytest.raises(Temporary) as err:
        send(server)
    assert str(err.value).startswith(f"connect 127.0.0.1:{server.server_address[1]}: ")
    assert expected in str(err.value)


def test_replies_arriving_a_byte_at_a_time_are_read_whole():
    def script(r, w, server):
        def say(data: bytes) -> None:
            for i in range(len(data)):
                w.write(data[i:i + 1])
                w.flush()
                time.sleep(0.0005)

        say(b"220-test\r\n220 ESMTP\r\n")
        while line := r.readline():
            verb = line.split(b" ")[0].strip().upper()
            if verb == b"EHLO":
                say(EHLO)
            elif verb == b"DATA":
                say(b"354 go\r\n")
                while r.readline() not in (b".\r\n", b""):
                    pass
                server.data.append(b"ok")
                say(b"250-2.0.0 queued\r\n250 as 1234\r\n")
            elif verb == b"QUIT":
                say(b"221 bye\r\n")
                return
            else:
                say(b"250 OK\r\n")

    with serving(script) as server:
        send(server)
    assert server.data == [b"ok"]


def test_a_server_refusing_ehlo_gets_helo_and_no_pipelining():
    def refuse_ehlo(verb, line, r, w):
        if verb == b"EHLO":
            w.write(b"502 5.5.1 EHLO not implemented\r\n")
            return True
        return False

    with serving(smtp(at=refuse_ehlo)) as server:
        send(server)
    verbs = [line.split(b" ")[0].strip() for line in server.seen]
    assert verbs == [b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"QUIT"] and len(server.data) == 1


def _login_only(line, r, w):
    assert line.split()[1] == b"LOGIN"
    user = base64.b64decode(line.split()[2])
    w.write(b"334 UGFzc3dvcmQ6\r\n")
    password = base64.b64decode(r.readline().strip())
    w.write(b"235 ok\r\n" if (user, password) == (b"editor", b"s3cret") else b"535 5.7.8 no\r\n")


def test_auth_login_when_plain_is_not_offered():
    ehlo = b"250-test.example\r\n250-AUTH LOGIN\r\n250 PIPELINING\r\n"
    with serving(smtp(ehlo=ehlo, auth=_login_only)) as server:
        send(server, username="editor")
    assert len(server.data) == 1


def test_auth_advertised_the_old_way_is_understood():
    ehlo = b"250-test.example\r\n250-AUTH=LOGIN\r\n250 PIPELINING\r\n"
    with serving(smtp(ehlo=ehlo, auth=_login_only)) as server:
        send(server, username="editor")
    assert len(server.data) == 1


def test_an_address_with_a_line_break_never_becomes_a_command():
    with serving(smtp()) as server, pytest.raises(Permanent, match="control character"):
        send_message(cfg(server.server_address[1]), "news@example.org",
                     "reader@example.com>\r\nRCPT TO:<victim@example.net", MSG)
    assert not [line for line in server.seen if b"victim" in line] and server.data == []


@pytest.mark.parametrize("ehlo, auth, expected", [
    (EHLO, None, "does not offer AUTH"),
    (b"250-test.example\r\n250 AUTH CRAM-MD5\r\n", None, "offers AUTH CRAM-MD5"),
    (b"250-test.example\r\n250 AUTH PLAIN\r\n", lambda line, r, w: w.write(b"535 5.7.8 bad credentials\r\n"),
     "login as [smtp] username 'editor' refused (535)"),
])
def test_what_only_a_fix_of_the_smtp_settings_mends_is_a_clear_error(ehlo, auth, expected):
    with serving(smtp(ehlo=ehlo, auth=auth)) as server, pytest.raises(TransportError) as err:
        send(server, username="editor")
    assert expected in str(err.value) and "s3cret" not in str(err.value)
    assert server.data == []


def test_send_message_works_from_code_that_runs_an_event_loop():
    async def host_application() -> None:  # e.g. a notebook: a loop is running in this thread
        send(server)

    with serving(smtp()) as server:
        asyncio.run(host_application())
    assert len(server.data) == 1


# -- Ctrl-C in the middle of a campaign -----------------------------------------------------------


def test_ctrl_c_mid_campaign_finishes_what_is_in_flight_and_a_rerun_completes_once(tmp_path, env):
    handler = Handler(data_delay=0.02)
    server = start_server(env, handler)
    try:
        emails = add_subscribers(load_settings(write_project(tmp_path, server.port, connections=3)), 300)
        proc = _push_proc(tmp_path, "push", str(ISSUE), "--channel", "email")
        deadline = time.monotonic() + 60
        while len(handler.messages) < 30 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5, "the messages in flight take milliseconds"
        assert proc.returncode == 130 and "aborted" in err and "Traceback" not in err, err
        counts = campaign_status(Ledger(tmp_path / "publisher.db"), "2026-11-23")
        assert "sending" not in counts, counts  # each message in flight finished and was recorded
        first = Counter(handler.recipients())
        assert 30 <= len(first) < 300 and counts.get("sent") == len(first)
        again = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
        assert again.returncode == 0, again.stderr
    finally:
        server.stop()
    got = Counter(handler.recipients())
    assert sorted(got) == emails and max(got.values()) == 1


# -- what a server (or a man in the middle) sends that nobody asked for ---------------------------


@contextmanager
def raw_server(script):
    """One connection to a plain socket script(conn, server) (for what a line-based script cannot
    do: switching to TLS, flooding)."""
    sock = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run() -> None:
        conn, _ = sock.accept()
        with conn, suppress(OSError):
            script(conn)
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1], done
    finally:
        sock.close()


def test_a_reply_injected_before_the_tls_handshake_is_never_read_as_the_servers(monkeypatch, cert):
    # RFC 3207 section 6: what arrived before TLS is not the server's word after it (a man in the
    # middle appends a line to the plaintext 220; smtplib discarded its read buffer on starttls)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    got: list[bytes] = []

    def script(conn) -> None:
        f = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        f.readline()
        conn.sendall(b"250-test.example\r\n250 STARTTLS\r\n")
        f.readline()
        conn.sendall(b"220 2.0.0 go ahead\r\n250 injected.example\r\n")  # one packet: the injection
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert[0], cert[1])
        tls = ctx.wrap_socket(conn, server_side=True)
        f = tls.makefile("rb")
        while line := f.readline():
            got.append(line)
            verb = line.split(b" ")[0].strip().upper()
            if verb == b"EHLO":
                tls.sendall(b"250-test.example\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                tls.sendall(b"354 go ahead\r\n")
                while f.readline() not in (b".\r\n", b""):
                    pass
                got.append(b"<message>")
                tls.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                tls.sendall(b"221 bye\r\n")
                return
            else:
                tls.sendall(b"250 OK\r\n")

    with raw_server(script) as (port, _):
        tls_cfg = SmtpConfig("127.0.0.1", port, "starttls", "", "", 2.0, 0, 1, 0)
        with pytest.raises(Temporary, match="after its STARTTLS reply"):
            send_message(tls_cfg, "news@example.org", "reader@example.com", MSG)
    assert b"<message>" not in got


def test_what_a_server_sends_unasked_while_nobody_reads_is_bounded():
    # between replies (a backoff of up to a minute with the session open, the rate limit) nothing
    # reads the socket: a server streaming bytes must not grow the client's buffer without end
    flood = 32 * 1024 * 1024

    def script(conn) -> None:
        f = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        f.readline()
        conn.sendall(EHLO)
        chunk = b"x" * 65536
        for _ in range(flood // len(chunk)):
            conn.sendall(chunk)

    async def main(port: int, done: threading.Event) -> tuple[int, BaseException | None]:
        s = await Session.open(cfg(port, timeout=5.0))
        t0 = time.monotonic()
        while not done.is_set() and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.05)  # the loop reads the socket; this session reads no reply
        held = len(s.wire.buf)
        try:
            await s.reply()
        except OSError as exc:
            return held, exc
        finally:
            s.close()
        return held, None

    with raw_server(script) as (port, done):
        held, exc = asyncio.run(main(port, done))
    assert held <= 4 * REPLY_LINE * REPLY_LINES, f"{held:,} bytes held"
    assert isinstance(exc, OSError)


def test_a_server_that_talks_but_never_reads_the_message_is_silent_within_the_timeout():
    # the body waits for room in the socket's buffers; a byte now and then from the server is not
    # room: smtplib's sendall timed out after [smtp] timeout without progress, and so must this
    def script(conn) -> None:
        f = conn.makefile("rb")
        conn.sendall(b"220 test ESMTP\r\n")
        f.readline()
        conn.sendall(EHLO)
        for _ in range(3):
            f.readline()
        conn.sendall(b"250 OK\r\n250 OK\r\n354 go ahead\r\n")
        for _ in range(100):  # reads nothing more
            conn.sendall(b"2")
            time.sleep(0.3)

    body = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 16_000
    with raw_server(script) as (port, _):
        t0 = time.monotonic()
        with pytest.raises(Temporary, match=r"no answer in 1 s"):
            send_message(cfg(port), "news@example.org", "reader@example.com", body)
    assert time.monotonic() - t0 < 10


def test_ctrl_c_while_the_rate_cap_holds_messages_back_starts_none_of_them(tmp_path, env):
    # [smtp] rate_per_second = 1 over 2 connections: at any moment a connection waits for its slot;
    # Ctrl-C finishes what is in flight, and a message still waiting for its slot is not in flight
    class Timed(Handler):
        def __init__(self):
            super().__init__(pipelining=False)  # each message starts with its own MAIL FROM
            self.mail_at: list[float] = []

        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            self.mail_at.append(time.monotonic())
            return await super().handle_MAIL(server, session, envelope, address, mail_options)

    handler = Timed()
    server = start_server(env, handler)
    try:
        add_subscribers(load_settings(write_project(tmp_path, server.port, connections=2,
                                                    extra="rate_per_second = 1")), 20)
        proc = _push_proc(tmp_path, "push", str(ISSUE), "--channel", "email")
        deadline = time.monotonic() + 60
        while len(handler.messages) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.2)  # the message of this slot is done: both connections wait for their next slot
        proc.send_signal(signal.SIGINT)
        sigint = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        server.stop()
    assert proc.returncode == 130 and "Traceback" not in err, err
    late = [round(t - sigint, 2) for t in handler.mail_at if t > sigint]
    assert late == [], f"messages started after Ctrl-C (s after it): {late}"
    assert "sending" not in campaign_status(Ledger(tmp_path / "publisher.db"), "2026-11-23")


def test_nothing_listening_is_a_connect_failure_that_says_so():
    from tests.email_support import free_port

    port = free_port()
    with pytest.raises(Temporary) as err:
        send_message(cfg(port), "news@example.org", "reader@example.com", MSG)
    assert str(err.value) == (f"connect 127.0.0.1:{port}: connection refused "
                              "(is the server running, and is [smtp] port right?)")
