"""The SMTP client: one session on asyncio streams, and one message over it (`transmit`).

A campaign drives all its connections from one thread (publisher/transports/email.py): each
connection is a coroutine and the ledger commits run between them, so no lock is handed from
thread to thread for every socket write and every commit (see docs/email.md, Benchmark).
`send_message` sends one message on its own connection, for the one-off senders (a test copy,
a confirmation mail).

What is implemented of SMTP is what a sender needs: the greeting, EHLO (HELO when EHLO is
refused), STARTTLS or implicit TLS (certificates checked against the system's or
SSL_CERT_FILE's CAs), AUTH PLAIN or LOGIN, PIPELINING (RFC 2920), SMTPUTF8 (RFC 6531), RSET and
QUIT. Every reply is bounded (REPLY_LINE bytes a line, REPLY_LINES lines) and every wait is
bounded by [smtp] timeout.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from publisher.errors import ConfigError, TransportError
from publisher.transports.delivery import classify

T = TypeVar("T")
REPLY_LINE = 8192  # bytes; RFC 5321 allows 512, servers send longer texts
REPLY_LINES = 200
UNREAD = 2 * REPLY_LINE * REPLY_LINES  # bytes received and not yet read: more is no SMTP server's
_PERIODS = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    username: str
    password: str
    timeout: float
    max_retries: int
    connections: int
    rate: float

    @classmethod
    def from_settings(cls, settings) -> SmtpConfig:
        s = settings["smtp"]
        if s["security"] not in ("starttls", "tls", "none"):
            raise ConfigError(f"[smtp] security must be starttls, tls or none, got {s['security']!r}: "
                              f"fix it in {settings.where()}")
        password = settings.secret("smtp", "password_env") if s["username"] else ""
        if not (password.isascii() and s["username"].isascii()):
            raise ConfigError(f"the SMTP username or the password in ${s['password_env']} has non-ASCII "
                              "characters, which SMTP AUTH (PLAIN/LOGIN) cannot carry: use an ASCII password")
        if s["connections"] < 1:
            raise ConfigError(f"[smtp] connections must be at least 1: fix it in {settings.where()}")
        return cls(s["host"], int(s["port"]), s["security"], s["username"], password,
                   float(s["timeout"]), max(0, int(s["max_retries"])), int(s["connections"]),
                   float(s["rate_per_second"]))


class Temporary(Exception):
    """Try again later (4xx, dropped connection before the final dot)."""


class Permanent(Exception):
    """5xx (or an address this server cannot take): not retried in this run; see classify()."""

    def __init__(self, code: int | None, message: str):
        super().__init__(message)
        self.code = code
        self.kind = classify(code, message)


class AfterDot(Exception):
    """The connection failed after the final dot: the server may or may not have the message."""


class Lost(ConnectionError):
    """The server closed the connection, or sent what is not an SMTP reply. Like a timeout
    (TimeoutError) and a TLS failure (ssl.SSLError), an OSError: what a failed read or write
    raises."""




@functools.cache
def local_name() -> str:
    """The name this host gives in EHLO (as smtplib: its fully qualified name)."""
    name = socket.getfqdn()
    return name if name.isascii() and "." in name else "[127.0.0.1]"


class _Wire(asyncio.BufferedProtocol):
    """The session's end of the connection: bytes received, end of file, room to write.
    Buffered: the socket is read into one small buffer of its own (a plain Protocol gets a new
    256 KB bytes object from every read, which costs the allocator three system calls)."""

    def __init__(self) -> None:
        self.chunk = memoryview(bytearray(16384))
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None  # a reply or room to write is awaited
        self.paused = False
        self.reading = True  # what arrives wakes the waiter (not while it waits for room to write)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.chunk

    def buffer_updated(self, nbytes: int) -> None:
        self.buf += self.chunk[:nbytes]
        if len(self.buf) > UNREAD and self.error is None:  # streamed while nobody reads (a backoff)
            self.error = Lost(f"it sent more than {UNREAD} bytes nobody asked for")
            self.transport.abort()
        if self.reading:
            self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed, self.error = True, self.error or exc
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Session:
    """One SMTP session. `write` queues bytes; `reply` reads one reply (code, text).

    Every wait (`reply`, `drain`) is bounded by [smtp] timeout: the wait sets a deadline, and one
    timer per session, re-armed only when it fires, drops the connection once a wait outlives
    it (a timer per wait would cost more than the rest of the wait)."""

    def __init__(self, wire: _Wire, cfg: SmtpConfig):
        self.wire, self.cfg = wire, cfg
        self.loop = asyncio.get_running_loop()
        self.extensions: dict[str, str] = {}  # EHLO keywords (lower case) → their parameters
        self.does_esmtp = False
        self.lines: list[bytes] = []  # of the reply being read, up to `pos` in wire.buf
        self.pos = 0
        self.deadline: float | None = None  # while a wait is under way
        self.timed_out = False
        self.timer = self.loop.call_later(cfg.timeout, self._watch)

    @classmethod
    async def open(cls, cfg: SmtpConfig) -> Session:
        """Connect, greet, TLS and log in: a ready session. Temporary when the server cannot be
        reached or answers 4xx/5xx; TransportError for what only a fix of [smtp] mends."""
        context = ssl.create_default_context() if cfg.security != "none" else None
        s = None
        try:
            async with asyncio.timeout(cfg.timeout):
                loop = asyncio.get_running_loop()
                _, wire = await loop.create_connection(
                    _Wire, cfg.host, cfg.port, ssl=context if cfg.security == "tls" else None)
                s = cls(wire, cfg)
                await s.expect(220, "greeting")
                await s.ehlo()
                if cfg.security == "starttls":
                    if not s.has_extn("starttls"):
                        raise TransportError(f"{cfg.host}:{cfg.port} does not offer STARTTLS; set [smtp] security")
                    await s.expect(220, "STARTTLS", b"STARTTLS\r\n")
                    if wire.buf:  # RFC 3207 6: nothing said before TLS may be read as said after it
                        raise Lost("the server sent more after its STARTTLS reply (a man in the middle?)")
                    wire.transport = await loop.start_tls(wire.transport, wire, context, server_hostname=cfg.host)
                    await s.ehlo()
                if cfg.username:
                    await s.login()
            return s
        except ssl.SSLCertVerificationError as exc:
            drop(s)
            raise TransportError(f"TLS certificate of {cfg.host}:{cfg.port} not trusted: {exc.verify_message}; "
                                 "fix [smtp] host or trust the CA (SSL_CERT_FILE)") from None
        except (Temporary, Permanent) as exc:  # refused for everyone: counted as a failed connection
            drop(s)
            raise Temporary(f"connect {cfg.host}:{cfg.port}: {exc}") from None
        except OSError as exc:
            drop(s)
            raise Temporary(f"connect {cfg.host}:{cfg.port}: {_describe(exc, cfg.timeout)}") from None
        except BaseException:
            drop(s)
            raise

    def has_extn(self, name: str) -> bool:
        return self.does_esmtp and name.lower() in self.extensions

    def write(self, data: bytes) -> None:
        if self.wire.closed:
            raise self._lost()
        self.wire.transport.write(data)

    async def drain(self) -> None:
        """Wait until what was written fits the socket's buffers (what the server says meanwhile
        is no progress: a server that talks but never reads is silent for this wait)."""
        self.wire.reading = False
        try:
            while self.wire.paused:
                await self._wait()
        finally:
            self.wire.reading = True

    async def reply(self) -> tuple[int, bytes]:
        """One reply: its code and its text (the lines joined by newlines)."""
        while True:
            got = self._parse()
            if got is not None:
                return got
            await self._wait()

    def _parse(self) -> tuple[int, bytes] | None:
        """The next whole reply in what was received, or None; reads each byte once (the lines
        of a reply that is still arriving are kept in `lines`, up to `pos`)."""
        buf = self.wire.buf
        while True:
            end = buf.find(b"\n", self.pos)
            if end < 0:
                if len(buf) - self.pos > REPLY_LINE:
                    raise Lost(f"reply line longer than {REPLY_LINE} bytes")
                if self.wire.closed:
                    raise self._lost()
                return None
            if end - self.pos > REPLY_LINE:
                raise Lost(f"reply line longer than {REPLY_LINE} bytes")
            if len(self.lines) >= REPLY_LINES:
                raise Lost(f"reply of more than {REPLY_LINES} lines")
            line = bytes(buf[self.pos:end + 1])
            if not line[:3].isdigit():
                raise Lost(f"not an SMTP reply: {line[:80]!r}")
            self.lines.append(line[4:].strip())
            self.pos = end + 1
            if line[3:4] != b"-":
                del buf[:self.pos]
                lines, self.lines, self.pos = self.lines, [], 0
                return int(line[:3]), b"\n".join(lines)

    async def _wait(self) -> None:
        """Until something arrives, the connection ends, or there is room to write."""
        if self.wire.closed:
            raise self._lost()
        self.deadline = self.loop.time() + self.cfg.timeout
        self.wire.waiter = self.loop.create_future()
        try:
            await self.wire.waiter
        finally:
            self.wire.waiter = self.deadline = None
        if self.timed_out:
            raise self._lost()

    def _watch(self) -> None:
        now = self.loop.time()
        # (what arrived while the loop was busy elsewhere is an answer, however late it is read)
        answered = self.wire.waiter is not None and self.wire.waiter.done()
        if self.deadline is not None and now >= self.deadline and not answered:
            self.timed_out = True
            self.close()
        elif not self.wire.closed:
            due = self.deadline if self.deadline is not None and self.deadline > now else now + self.cfg.timeout
            self.timer = self.loop.call_at(due, self._watch)

    def _lost(self) -> Exception:
        if self.timed_out:
            return TimeoutError(_silent(self.cfg.timeout))
        return Lost(f"connection closed by the server{f' ({self.wire.error})' if self.wire.error else ''}")

    async def command(self, line: str, *, utf8: bool = False) -> tuple[int, bytes]:
        self.write(line.encode("utf-8" if utf8 else "ascii") + b"\r\n")
        return await self.reply()

    async def expect(self, code: int, stage: str, line: bytes | None = None) -> bytes:
        """Send `line` (if any) and read a reply that must be `code`; else Temporary (4xx) or
        Permanent (5xx, anything else)."""
        if line is not None:
            self.write(line)
        got, text = await self.reply()
        if got != code:
            _check(got if got >= 400 else 554, text, stage)
        return text

    async def ehlo(self) -> None:
        code, text = await self.command(f"EHLO {local_name()}")
        if code == 250:
            self.does_esmtp = True
            self.extensions = {}
            for line in text.split(b"\n")[1:]:
                keyword, _, params = line.decode("ascii", "replace").partition(" ")
                keyword = keyword.lower()
                if keyword.startswith("auth="):  # the old style of some servers: AUTH=LOGIN PLAIN
                    keyword, params = "auth", f"{keyword[5:]} {params} {self.extensions.get('auth', '')}"
                self.extensions[keyword] = params
            return
        self.does_esmtp = False
        await self.expect(250, "HELO", f"HELO {local_name()}\r\n".encode())

    async def login(self) -> None:
        cfg = self.cfg
        if not self.has_extn("auth"):
            raise TransportError(f"{cfg.host}:{cfg.port} does not offer AUTH, and [smtp] username is set: use the "
                                 "server's submission port (587 or 465), or empty [smtp] username")
        offered = self.extensions["auth"].upper().split()
        user, password = cfg.username.encode(), cfg.password.encode()
        if "PLAIN" in offered:
            code, text = await self.command("AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password))
        elif "LOGIN" in offered:
            code, text = await self.command("AUTH LOGIN " + _b64(user))
            if code == 334:
                code, text = await self.command(_b64(password))
        else:
            raise TransportError(f"{cfg.host}:{cfg.port} offers AUTH {' '.join(offered) or '(nothing)'}, and "
                                 "publisher logs in with PLAIN or LOGIN (over TLS): use the server's submission "
                                 "port, or ask its operator for PLAIN")
        if code == 235:
            return
        if 400 <= code < 500:
            raise Temporary(f"AUTH: {code} {_text(text)}")
        raise TransportError(f"SMTP login as [smtp] username {cfg.username!r} refused ({code}); "
                             "check the username and the password environment variable")

    async def rset(self) -> None:
        await self.expect(250, "RSET", b"RSET\r\n")

    async def quit(self) -> None:
        """QUIT and close; a server that went away already is closed all the same."""
        with contextlib.suppress(OSError):
            self.write(b"QUIT\r\n")
            await self.reply()
        self.close()

    def close(self) -> None:
        """Drop the connection at once (what is still queued is discarded: the server sees a
        half-open transaction end, and discards it)."""
        self.timer.cancel()
        if self.wire.transport is not None:
            self.wire.transport.abort()
        self.wire.closed = True
        self.wire._wake()


def drop(s: Session | None) -> None:
    """Drop `s` (if any) at once and return None, for `s = drop(s)`."""
    if s is not None:
        s.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(resp: bytes) -> str:
    return " ".join(resp.decode("utf-8", "replace").split())


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return _silent(timeout)
    if isinstance(exc, ConnectionRefusedError):  # asyncio says "Connect call failed (host, port)"
        return "connection refused (is the server running, and is [smtp] port right?)"
    return str(exc) or type(exc).__name__


def _silent(timeout: float) -> str:
    return f"no answer in {timeout:g} s ([smtp] timeout)"


def _check(code: int, resp: bytes, stage: str) -> None:
    if 200 <= code < 400:
        return
    if 500 <= code < 600:
        raise Permanent(code, f"{stage}: {code} {_text(resp)}")
    raise Temporary(f"{stage}: {code} {_text(resp)}")


def needs_smtputf8(s: Session, sender: str, rcpt: str) -> bool:
    """Whether this message needs SMTPUTF8 (RFC 6531); Permanent (a recipient failure, never a
    bounce) when the server does not offer it."""
    if sender.isascii() and rcpt.isascii():
        return False
    if s.has_extn("smtputf8"):
        return True
    raise Permanent(None, f"address {rcpt!r} has non-ASCII characters and the SMTP server does not offer "
                          "SMTPUTF8 (RFC 6531): not sent, not bounced; use a server that offers SMTPUTF8 "
                          "or ask the reader for an ASCII address")


def _group(sender: str, rcpt: str, utf8: bool = False) -> bytes:
    if utf8:
        return f"MAIL FROM:<{sender}> SMTPUTF8\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode("ascii")


def stuff(msg: bytes) -> bytes:
    """`msg` dot-stuffed (RFC 5321 4.5.2), ending with CRLF."""
    data = _PERIODS.sub(b"..", msg)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


async def transmit(s: Session, sender: str, rcpt: str, msg: bytes,
                   before_dot: Callable[[], Awaitable[bool]] | None = None, *, stuffed: bool = False,
                   group_sent: bool = False, next_rcpt: str | None = None,
                   next_sender: str | None = None) -> tuple[float, bool]:
    """One message over an open session; awaits `before_dot` just before the final dot (it may
    raise to abandon the message, or return False to keep the next message's group back).

    With PIPELINING (RFC 2920) MAIL, RCPT and DATA go in one write, and when `next_rcpt` is given
    the next message's MAIL/RCPT/DATA ride in the same write as this message's final dot (one
    round trip per message); `group_sent` says this message's group was sent that way. If
    anything goes wrong while such a group is outstanding the connection is closed, so the
    server discards the half-open transaction (never an empty message).
    `stuffed`: msg is already dot-stuffed. Returns (time of the 250 reply, next group sent)."""
    if not (sender.isprintable() and rcpt.isprintable()):  # a CR or LF would start a command of its own
        raise Permanent(None, f"address {rcpt!r} or sender {sender!r} has a control character: not sent")
    pipelining = s.has_extn("pipelining")
    utf8 = needs_smtputf8(s, sender, rcpt)
    chain = (bool(next_rcpt) and pipelining and next_rcpt.isascii() and next_rcpt.isprintable() and not utf8
             and (next_sender or sender).isprintable())
    try:
        if pipelining:
            if not group_sent:
                s.write(_group(sender, rcpt, utf8))
            replies = [await s.reply() for _ in range(3)]
            if replies[2][0] == 354 and not all(200 <= c < 300 for c, _ in replies[:2]):
                s.write(b".\r\n")  # the server wants a message although MAIL or RCPT failed
                await s.reply()
            (c1, r1), (c2, r2), (c3, r3) = replies
            _check(c1, r1, "MAIL FROM")
            _check(c2, r2, "RCPT TO")
        else:
            c1, r1 = await s.command(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if utf8 else ""), utf8=utf8)
            _check(c1, r1, "MAIL FROM")
            c2, r2 = await s.command(f"RCPT TO:<{rcpt}>", utf8=utf8)
            _check(c2, r2, "RCPT TO")
            c3, r3 = await s.command("DATA")
        if c3 != 354:
            _check(c3 if c3 >= 400 else 451, r3, "DATA")
        s.write(msg if stuffed else stuff(msg))
        await s.drain()
    except OSError as exc:
        raise Temporary(f"connection lost: {_describe(exc, s.cfg.timeout)}") from None
    if before_dot is not None and await before_dot() is False:
        chain = False  # the next message may not start now (its reader left)
    try:
        s.write(b".\r\n" + _group(next_sender or sender, next_rcpt) if chain else b".\r\n")
    except OSError as exc:  # known closed before the dot left: the server does not have the message
        raise Temporary(f"connection lost: {_describe(exc, s.cfg.timeout)}") from None
    try:
        code, resp = await s.reply()
    except OSError as exc:
        raise AfterDot(f"connection lost after the final dot: {_describe(exc, s.cfg.timeout)}") from None
    accepted = time.monotonic()
    if chain and not 200 <= code < 300:
        s.close()  # the next message's group is outstanding: drop it with the connection
    _check(code, resp, "end of DATA")
    return accepted, chain


def send_message(cfg: SmtpConfig, sender: str, rcpt: str, msg: bytes) -> None:
    """One message on a connection of its own (a test copy, a confirmation); raises as transmit
    (Temporary, AfterDot, Permanent) or as Session.open."""

    async def one() -> None:
        s = await Session.open(cfg)
        try:
            await transmit(s, sender, rcpt, msg)
            await s.quit()
        finally:
            s.close()

    run_loop(one())


def run_loop(main: Awaitable[T]) -> T:
    """asyncio.run(main), also when called from code already running an event loop in this
    thread (a notebook, an async host application): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="publisher-smtp") as pool:
        return pool.submit(asyncio.run, main).result()
