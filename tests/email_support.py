"""Test support for email delivery: a real aiosmtpd server (STARTTLS with a self-signed
certificate made with the openssl CLI, AUTH), a project folder with subscribers, renditions."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.conftest import EXAMPLES

USER, PASSWORD, SECRET = "mailer", "pw-s3cret:123", "unsubscribe-secret-for-tests"
ISSUE = EXAMPLES / "issues" / "2026-11-23.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found (needed to make a self-signed certificate)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    auth: bool


@dataclass
class Handler:
    """Records every accepted message; optional faults."""

    messages: list[Received] = field(default_factory=list)
    reject_rcpt: set[str] = field(default_factory=set)  # 550 at RCPT TO
    reject_all: str | None = None  # this reply to every RCPT TO (a misconfigured relay)
    tempfail_first_data: bool = False  # 451 at the first end-of-DATA per recipient
    data_delay: float = 0.0
    stop_after: int | None = None  # set `stop_now` once this many are accepted, then stall MAIL
    stop_now: threading.Event = field(default_factory=threading.Event)
    drop_after_data: set[str] = field(default_factory=set)  # accept, then cut the line before the reply
    pipelining: bool = True  # advertise PIPELINING (aiosmtpd reads pipelined commands in order)
    ehlo_features: list[str] = field(default_factory=list)
    _tempfailed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        self.ehlo_features = list(responses)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.stop_after is not None and len(self.messages) >= self.stop_after:
            self.stop_now.set()
            await asyncio.sleep(30)  # the server is stopped while this client waits
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_all:
            return self.reject_all
        if address in self.reject_rcpt:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        rcpt = envelope.rcpt_tos[0]
        if self.tempfail_first_data and rcpt not in self._tempfailed:
            self._tempfailed.add(rcpt)
            return "451 4.3.0 try again later"
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content or envelope.content,
                                          list(envelope.mail_options),
                                          session.ssl is not None, bool(session.authenticated)))
        if rcpt in self.drop_after_data:
            self.drop_after_data.discard(rcpt)
            server.transport.abort()  # the message is kept; the client never hears the 250
        return "250 2.0.0 queued"

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpts]


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1 with STARTTLS required and AUTH required."""

    def __init__(self, handler: Handler, cert: Path, key: Path, port: int | None = None, *,
                 smtputf8: bool = False):
        self.handler = handler
        self.port = port or free_port()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     require_starttls=True, authenticator=authenticator, auth_required=True,
                                     auth_require_tls=True, enable_SMTPUTF8=smtputf8)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def write_project(folder: Path, smtp_port: int, *, web_port: int = 8025, connections: int = 2,
                  max_retries: int = 3, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "publisher.toml"
    cfg.write_text(f"""
[paths]
issues = "issues"
ledger = "publisher.db"

[email]
from_address = "news@example.org"
list_id = "embedded-ai.example.org"
unsubscribe_url = "http://127.0.0.1:{web_port}/unsubscribe?token={{token}}&src=email"
unsubscribe_mailto = "unsubscribe@example.org"
subscribers_db = "subscribers.db"

[newsletter]
image_base_url = "https://news.example.org/{{date}}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
username = "{USER}"
connections = {connections}
max_retries = {max_retries}
timeout = 10
{extra}
""", encoding="utf-8")
    return cfg


def rendition_json(rendition) -> str:
    return json.dumps({"channel": rendition.channel, "issue": rendition.issue, "body": rendition.body,
                       "media_type": rendition.media_type, "filename": rendition.filename,
                       "metadata": dict(rendition.metadata), "parts": dict(rendition.parts)},
                      ensure_ascii=False)


CHILD = """
import json, sys
from publisher.channels.base import Rendition
from publisher.stores.ledger import Ledger
from publisher.settings import load_settings
from publisher.transports.email import run_campaign
settings = load_settings(sys.argv[1])
rendition = Rendition(**json.loads(open(sys.argv[2], encoding="utf-8").read()))
stats = run_campaign(rendition, settings, Ledger(settings.path("paths", "ledger")))
print(json.dumps(stats.as_details()))
"""
