"""Bounces and complaints: VERP envelope senders, DSN (RFC 3464) and ARF (RFC 5965) parsing,
reading a mailbox (IMAP over TLS, a Maildir or an mbox), and `publisher bounces`.

A campaign message to subscriber #ID for issue DATE leaves with the envelope sender (MAIL FROM,
the Return-Path the receiving system keeps)

    bounces+ID-YYYYMMDD-MAC@domain          ([bounces] address = "bounces@domain")

where MAC is 10 base32 characters of HMAC-SHA256(secret, "verp" NUL list_id NUL issue NUL ID NUL
email). Delivery status notifications come back to that address, and complaint reports (ARF)
carry it in Original-Mail-From or the original message's Return-Path; the original's signed
List-Unsubscribe token is accepted too. Nothing is applied without a genuine signature: anyone
can mail the bounce address, and a forged report must not unsubscribe a reader.

Effects: a hard bounce (Action: failed, Status 5.x.x; Exim's X-Failed-Recipients) marks the
address `bounced`; a soft bounce (Action: failed, Status 4.x.x) is recorded, and once the last
[bounces] soft_limit issues sent to the address have all soft-bounced the address is `bounced`;
a complaint (Feedback-Type: abuse) unsubscribes at once. Delay notices, auto-replies and anything
else are recorded as ignored. Each message is applied once: its key (Message-ID, else a SHA-256
of the bytes) is a primary key of the ledger table `mail_events`, and a processed message is
moved out of the way (IMAP: to [bounces] done_folder; Maildir: to its `.processed` folder; an
mbox is only read).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import imaplib
import logging
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from publisher.errors import ConfigError, PublisherError
from publisher.registry import mail_channel, mail_table
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.tokens import verify_token, verp_address, verp_mac, verp_pattern  # noqa: F401 (the VERP API)

log = logging.getLogger("publisher.bounces")

MAX_MESSAGE = 5 * 1024 * 1024  # a report larger than this is junk; it is not parsed
MAX_EVIDENCE = 500
DONE_MAILDIR = ".processed"


class BounceError(PublisherError):
    """The mailbox could not be read or the configuration is incomplete."""


# -- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What a message says: kind hard/soft/complaint/unsubscribe (a provider's webhook)/ignored, and
    for whom (by VERP token)."""

    kind: str
    evidence: str
    status: str = ""
    sub_id: int | None = None
    issue: str | None = None
    mac: str | None = None
    unsub_token: str | None = None  # from the original's List-Unsubscribe (complaints)


def _fields(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return [email.message_from_string(str(payload).lstrip("\r\n"), policy=email.policy.compat32)]


def _clean(text: object) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()[:MAX_EVIDENCE]


def _headers_text(msg: Message) -> str:
    """Every header value of the message and of its report/original parts (where tokens hide)."""
    out = []
    for part in msg.walk():
        out.extend(f"{k}: {v}" for k, v in part.items())
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/feedback-report"):
            for block in _fields(part):
                out.extend(f"{k}: {v}" for k, v in block.items())
        elif ctype == "text/rfc822-headers":
            out.append(str(part.get_payload(decode=True) or b"", "utf-8", "replace")[:200_000])
    return "\n".join(out)


def parse(raw: bytes, verp: re.Pattern) -> Report:
    """Classify one message. Never raises on bad input: junk is a Report of kind ignored."""
    if len(raw) > MAX_MESSAGE:
        return Report("ignored", f"larger than {MAX_MESSAGE} bytes")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        return _parse(msg, verp)
    except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the run
        return Report("ignored", f"unparseable: {type(exc).__name__}")


def _token(text: str, verp: re.Pattern) -> tuple[int, str, str] | None:
    m = verp.search(text)
    if not m:
        return None
    d = m.group(2)
    return int(m.group(1)), f"{d[:4]}-{d[4:6]}-{d[6:]}", m.group(3).lower()


def _parse(msg: Message, verp: re.Pattern) -> Report:
    ctype = msg.get_content_type()
    report_type = (msg.get_param("report-type") or "").lower() if ctype == "multipart/report" else ""
    headers = _headers_text(msg)
    tok = _token(headers, verp)
    if report_type == "delivery-status":
        blocks = [b for p in msg.walk() if p.get_content_type() == "message/delivery-status"
                  for b in _fields(p)]
        recipients = [b for b in blocks if b.get("Action")]
        failed = [b for b in recipients if _clean(b.get("Action")).lower() == "failed"]
        if not failed:
            actions = ", ".join(sorted({_clean(b.get("Action")).lower() for b in recipients})) or "none"
            return Report("ignored", f"delivery status notification without a failure (Action: {actions})")
        b = failed[0]
        status = _clean(b.get("Status")).split(" ")[0]
        evidence = "; ".join(filter(None, [
            f"Status: {status}" if status else "",
            f"Diagnostic-Code: {_clean(b.get('Diagnostic-Code'))}" if b.get("Diagnostic-Code") else "",
            f"Remote-MTA: {_clean(b.get('Remote-MTA'))}" if b.get("Remote-MTA") else "",
            f"Reporting-MTA: {_clean(blocks[0].get('Reporting-MTA'))}" if blocks[0].get("Reporting-MTA") else "",
        ]))[:MAX_EVIDENCE]
        kind = "soft" if status.startswith("4") else "hard"
        return _with_token(Report(kind, evidence, status), tok)
    if report_type == "feedback-report":
        fb = next((b for p in msg.walk() if p.get_content_type() == "message/feedback-report"
                   for b in _fields(p)), None)
        ftype = _clean(fb.get("Feedback-Type") if fb is not None else "").lower()
        if ftype not in ("abuse", "fraud"):
            return Report("ignored", f"feedback report of type {ftype or 'none'!r}")
        evidence = "; ".join(filter(None, [
            f"Feedback-Type: {ftype}",
            f"User-Agent: {_clean(fb.get('User-Agent'))}" if fb.get("User-Agent") else "",
            f"Source-IP: {_clean(fb.get('Source-IP'))}" if fb.get("Source-IP") else "",
            f"Arrival-Date: {_clean(fb.get('Arrival-Date'))}" if fb.get("Arrival-Date") else "",
        ]))
        unsub = re.search(r"[?&]token=([A-Za-z0-9_%.-]{10,1024})", headers)
        from urllib.parse import unquote

        return _with_token(Report("complaint", evidence, ftype, unsub_token=unquote(unsub.group(1)) if unsub else None),
                           tok)
    failed_rcpt = msg.get("X-Failed-Recipients")
    if failed_rcpt and ctype in ("text/plain", "multipart/mixed"):  # Exim's classic bounce
        body = msg.get_payload(decode=True) if not msg.is_multipart() else b""
        m = re.search(rb"(?m)^\s*(?:SMTP error from remote \S+ after [^:]+:\s*)?(5\d\d[ -][^\r\n]{0,200})", body or b"")
        status = m.group(1).decode("utf-8", "replace")[:3] if m else "5.0.0"
        evidence = f"X-Failed-Recipients: {_clean(failed_rcpt)}" + (
            f"; {_clean(m.group(1).decode('utf-8', 'replace'))}" if m else "")
        return _with_token(Report("hard", evidence, status), tok)
    auto = _clean(msg.get("Auto-Submitted")).lower()
    if auto and auto != "no":
        return Report("ignored", f"automatic message (Auto-Submitted: {auto}), not a report")
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or \
            _clean(msg.get("Precedence")).lower() in ("auto_reply", "bulk", "junk", "list"):
        return Report("ignored", "auto-reply, not a report")
    return Report("ignored", f"not a delivery report or complaint ({ctype})")


def _with_token(report: Report, tok) -> Report:
    if tok is None:
        return report
    sub_id, issue, mac = tok
    return Report(report.kind, report.evidence, report.status, sub_id, issue, mac, report.unsub_token)


# -- applying ---------------------------------------------------------------------------------


@dataclass
class Summary:
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    unsubscribes: int = 0  # a provider's own unsubscribe link or suppression (webhooks)
    ignored: int = 0
    already: int = 0
    bounced: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"bounces: {self.hard} hard, {self.soft} soft, {self.complaints} complaint(s), "
                + (f"{self.unsubscribes} unsubscribe(s) at the provider, " if self.unsubscribes else "") +
                f"{self.ignored} ignored, {self.already} already processed; "
                f"{len(self.bounced)} address(es) now bounced by soft bounces")


class Processor:
    """Applies reports to the subscriber database and records them in the ledger."""

    def __init__(self, settings, ledger: Ledger, subs, secret: str, *, verp: bool = True):
        """`verp=False`: for events whose reader is already authenticated (provider webhooks,
        publisher/hooks.py), which use `apply` only."""
        base = settings["bounces"]["address"]
        if verp and not base:
            raise ConfigError("[bounces] address is not set (the VERP base address, e.g. bounces@example.org, "
                              f"that campaigns use as envelope sender): set it in {settings.where()}")
        self.verp = verp_pattern(base) if base else None
        self.list_id = mail_table(settings)["list_id"]
        self.secret = secret
        self.soft_limit = max(1, int(settings["bounces"]["soft_limit"]))
        self.ledger = ledger
        self.subs = subs
        self.summary = Summary()
        self.mail = MailStore(ledger)

    @staticmethod
    def key(raw: bytes) -> str:
        m = re.search(rb"(?im)^Message-ID:[ \t]*(<[^>\r\n]{1,250}>)", raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
        if m:
            return "mid:" + m.group(1).decode("ascii", "replace").lower()
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    def process(self, raw: bytes, source: str) -> str:
        """Apply one message (at most once); returns what was done."""
        key = self.key(raw)
        done = self.seen(key)
        if done is not None:
            return done
        report = parse(raw, self.verp)
        who = self._recipient(report) if report.kind != "ignored" else None
        if report.kind != "ignored" and who is None:
            report = Report("ignored", f"{report.kind} report without a genuine VERP or unsubscribe token "
                                       f"({report.evidence[:200]})")
        return self.apply(key, report, who, source)

    def seen(self, key: str) -> str | None:
        """What was done with the event `key` if it was processed already, else None."""
        seen = self.mail.event(key)
        if seen is None:
            return None
        self.summary.already += 1
        if seen["kind"] == "soft" and seen["email"]:  # a crash may have come before the check
            self._soft_limit(seen["email"])
        return f"already processed: {seen['action']}"

    def apply(self, key: str, report: Report, who: str | None, source: str) -> str:
        """Apply one report about `who` (None: ignored) and record it under `key` — the one place
        a bounce, complaint or unsubscribe changes a subscriber, whether it came from a mailbox
        or a provider's webhook. Effects are state transitions that a second application leaves
        as they are, so applying before recording is safe across a crash."""
        if report.kind == "ignored" or who is None:
            self._record(key, report, None, f"ignored: {report.evidence}", source)
            self.summary.ignored += 1
            return f"ignored: {report.evidence}"
        if report.kind == "unsubscribe":  # a provider's own unsubscribe link or suppression
            changed = self.subs.set_state(who, "unsubscribed", only_from=("active", "pending", "bounced"))
            action = "unsubscribed (at the provider)" if changed else "no change (already unsubscribed)"
            # its own kind: the same effect as a complaint, but not a spam report (not counted as one)
            self._record(key, report, who, action, source)
            self.summary.unsubscribes += 1
        elif report.kind == "hard":
            changed = self.subs.set_state(who, "bounced", only_from=("active", "pending"))
            action = "bounced" if changed else "no change (not active)"
            self._record(key, report, who, action, source)
            self.summary.hard += 1
        elif report.kind == "complaint":
            changed = self.subs.set_state(who, "unsubscribed", only_from=("active", "pending", "bounced"))
            action = "unsubscribed (complaint)" if changed else "no change (already unsubscribed)"
            self._record(key, report, who, action, source)
            self.summary.complaints += 1
        else:
            self._record(key, report, who, "soft bounce counted", source)
            self.summary.soft += 1
            action = "soft bounce counted"
            if self._soft_limit(who):
                action = f"bounced after {self.soft_limit} soft bounces in a row"
                self.mail.set_event_action(key, action)
        log.info("%s: %s %s", source, report.kind, action)
        return action

    def _recipient(self, report: Report) -> str | None:
        if report.sub_id is not None and report.issue and report.mac:
            email = self.subs.email_of(report.sub_id)
            if email is not None:
                want = verp_mac(self.secret, self.list_id, report.issue, report.sub_id, email)
                if hmac.compare_digest(want, report.mac):
                    return email
        if report.unsub_token:
            return verify_token(self.secret, self.list_id, report.unsub_token)
        return None

    def _record(self, key: str, report: Report, who: str | None, action: str, source: str) -> None:
        self.mail.record_event(key, report.kind, who, report.issue if who else None, report.status or None,
                               report.evidence[:MAX_EVIDENCE], action[:MAX_EVIDENCE], source)

    def _soft_limit(self, who: str) -> bool:
        """Bounce `who` when the last soft_limit issues sent to it all soft-bounced."""
        soft = self.mail.soft_bounced_issues(who)
        sent = self.mail.delivered_issues(who, self.soft_limit)
        recent = sent if len(sent) == self.soft_limit else sorted(soft, reverse=True)[:self.soft_limit]
        if len(recent) < self.soft_limit or not all(i in soft for i in recent):
            return False
        if self.subs.set_state(who, "bounced", only_from=("active",)):
            self.summary.bounced.append(who)
            return True
        return False


# -- mailboxes --------------------------------------------------------------------------------


def maildir_messages(path: Path) -> Iterator[tuple[str, bytes, object]]:
    """(name, bytes, handle) of every message in new/ and cur/, oldest name first."""
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise BounceError(f"{path} is not a Maildir (it needs cur/ and new/): fix [bounces] mailbox")
    for sub in ("new", "cur"):
        for f in sorted((path / sub).iterdir()):
            if f.is_file() and not f.name.startswith("."):
                yield f"{sub}/{f.name}", f.read_bytes(), f


def maildir_done(path: Path, f: Path) -> None:
    """Move a processed message into the Maildir++ folder `.processed` (one atomic rename)."""
    done = path / DONE_MAILDIR
    for sub in ("tmp", "new", "cur"):
        (done / sub).mkdir(parents=True, exist_ok=True)
    name = f.name if ":2," in f.name else f.name + ":2,S"
    os.replace(f, done / "cur" / name)


def mbox_messages(path: Path) -> Iterator[tuple[str, bytes, object]]:
    import mailbox

    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield f"mbox#{key}", box.get_bytes(key), None
    finally:
        box.close()


class Imap:
    """An IMAP mailbox over TLS (implicit, or STARTTLS); processed messages move to done_folder."""

    def __init__(self, settings):
        b = settings["bounces"]
        self.host, self.port, self.security = b["imap_host"], int(b["imap_port"]), b["imap_security"]
        self.user, self.folder, self.done = b["imap_user"], b["imap_folder"], b["done_folder"]
        if self.security not in ("tls", "starttls"):
            raise ConfigError(f"[bounces] imap_security must be tls or starttls, got {self.security!r}: "
                              f"fix it in {settings.where()}")
        if not self.user:
            raise ConfigError(f"[bounces] imap_user is not set: set it in {settings.where()}")
        self.password = settings.secret("bounces", "imap_password_env")
        self.conn: imaplib.IMAP4 | None = None

    def __enter__(self) -> Imap:
        ctx = ssl.create_default_context()
        try:
            if self.security == "tls":
                self.conn = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ctx, timeout=30)
            else:
                self.conn = imaplib.IMAP4(self.host, self.port, timeout=30)
                self.conn.starttls(ssl_context=ctx)
            self.conn.login(self.user, self.password)
            typ, _ = self.conn.select(_quote(self.folder))
            if typ != "OK":
                raise BounceError(f"IMAP folder {self.folder!r} not found ([bounces] imap_folder)")
            self.conn.create(_quote(self.done))  # NO when it exists: fine
        except ssl.SSLCertVerificationError as exc:
            raise BounceError(f"TLS certificate of {self.host}:{self.port} not trusted: {exc.verify_message}; "
                              "fix [bounces] imap_host or trust the CA (SSL_CERT_FILE)") from None
        except imaplib.IMAP4.error as exc:
            raise BounceError(f"IMAP {self.host}:{self.port} as [bounces] imap_user {self.user!r}: {exc}; "
                              "check the user and the password in [bounces] imap_password_env") from None
        except OSError as exc:
            raise BounceError(f"cannot reach IMAP server {self.host}:{self.port} ([bounces] imap_host/"
                              f"imap_port): {exc}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                self.conn.logout()

    def messages(self) -> Iterator[tuple[str, bytes, object]]:
        typ, data = self.conn.uid("SEARCH", None, "ALL")
        for uid in (data[0] or b"").split():
            typ, got = self.conn.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((p[1] for p in got if isinstance(p, tuple)), None)
            if typ == "OK" and raw is not None:
                yield f"imap:{self.folder}/{uid.decode()}", raw, uid

    def done_with(self, uid: bytes) -> None:
        if "MOVE" in self.conn.capabilities:
            typ, _ = self.conn.uid("MOVE", uid, _quote(self.done))
            if typ == "OK":
                return
        self.conn.uid("COPY", uid, _quote(self.done))
        self.conn.uid("STORE", uid, "+FLAGS", r"(\Deleted \Seen)")
        self.conn.expunge()


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def process_mailboxes(settings, *, mailbox: Path | None = None, ledger: Ledger | None = None) -> Summary:
    """Read every configured source ([bounces] mailbox, [bounces] imap_host) and apply it."""
    from publisher.subscribers import open_db

    secret = settings.secret(mail_channel(), "secret_env")
    from publisher.stores import open_ledger

    ledger = ledger or open_ledger(settings)
    proc = Processor(settings, ledger, open_db(settings), secret)
    local = mailbox or settings.path("bounces", "mailbox")
    if local is None and not settings["bounces"]["imap_host"]:
        raise ConfigError("no mailbox to read: set [bounces] mailbox (a Maildir folder or an mbox file) or "
                          f"[bounces] imap_host in {settings.where()}, or pass --mailbox")
    if local is not None:
        if local.is_dir():
            for name, raw, f in maildir_messages(local):
                proc.process(raw, f"maildir:{name}")
                maildir_done(local, f)
        elif local.is_file():
            for name, raw, _ in mbox_messages(local):
                proc.process(raw, name)
        else:
            raise BounceError(f"{local} does not exist ([bounces] mailbox or --mailbox)")
    if settings["bounces"]["imap_host"] and mailbox is None:
        with Imap(settings) as box:
            for name, raw, uid in box.messages():
                proc.process(raw, name)
                box.done_with(uid)
    return proc.summary


def configured(settings) -> bool:
    b = settings["bounces"]
    return bool(b["address"] and (b["mailbox"] or b["imap_host"]))
