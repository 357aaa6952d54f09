"""Email providers' event webhooks, served by `publisher serve`:

    POST /hooks/ses        Amazon SNS (SES bounce / complaint notifications)
    POST /hooks/postmark   Postmark (Bounce, SpamComplaint, SubscriptionChange), HTTP basic auth
    POST /hooks/mailgun    Mailgun (failed, complained, unsubscribed), HMAC-signed

Every request is authenticated before anything is read from it:

* SNS: the message's signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over the
  canonical string of its fields is verified with the certificate at SigningCertURL, which must
  be https://sns.<region>.amazonaws.com/….pem (fetched over verified TLS, cached); the TopicArn
  must be one of [ses] topic_arns (anyone can create a topic and subscribe this URL; AWS signs
  their messages too). A SubscriptionConfirmation of such a topic is confirmed by fetching its
  SubscribeURL (same host rule).
* Postmark: basic auth, [postmark] webhook_user and the password in webhook_password_env.
* Mailgun: HMAC-SHA256(signing key, timestamp + token) equals `signature`, the timestamp is
  within [mailgun] webhook_max_age seconds of now, and the token was not seen before with other
  event data (the signature does not cover the event: a captured one must not carry another;
  tokens are remembered in memory for twice the window).

Then each event is applied through publisher/bounces.py (`Processor.apply`, the code of
`publisher bounces`): hard bounce → bounced, soft bounce → counted ([bounces] soft_limit),
complaint and unsubscribe → unsubscribed. Exactly once by the provider's event id (SNS MessageId
and recipient, Postmark's ID, Mailgun's event id): a delivery of an event already applied gets
200 and changes nothing; a forged, malformed or out-of-window request gets 4xx and changes
nothing; a failure while applying gets 500, so the provider retries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from publisher.bounces import Processor, Report
from publisher.refs import is_https

log = logging.getLogger("publisher.hooks")

MAX_BODY = 512 * 1024
MAX_CERT = 64 * 1024
SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,40}\.amazonaws\.com(\.cn)?")
# URL prefixes trusted besides SNS_HOST — for tests only (a local certificate server); there is no
# configuration key or environment variable that sets it.
TEST_TRUSTED_PREFIXES: list[str] = []
SNS_FIELDS = {"Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
              "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                           "TopicArn", "Type"),
              "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                          "TopicArn", "Type")}


class Refused(Exception):
    """The request is refused with this status and reason; nothing is changed."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


def _bad(reason: str) -> Refused:
    return Refused("400 Bad Request", reason)


def _forbidden(reason: str) -> Refused:
    return Refused("403 Forbidden", reason)


# -- SNS ------------------------------------------------------------------------------------------


def trusted_sns_url(url: str) -> bool:
    """https://sns.<region>.amazonaws.com/… (or a prefix a test trusts)."""
    if any(url.startswith(p) for p in TEST_TRUSTED_PREFIXES):
        return True
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (is_https(url) and parts.port in (None, 443) and not parts.username and not parts.password
            and SNS_HOST.fullmatch(parts.hostname or "") is not None)


def sns_string_to_sign(msg: dict) -> bytes:
    kind = msg.get("Type")
    fields = SNS_FIELDS.get(kind)
    if fields is None:
        raise _bad(f"unknown SNS message Type {str(kind)[:40]!r}")
    out = []
    for name in fields:
        if name not in msg:
            if name == "Subject":
                continue
            raise _bad(f"SNS message without {name}")
        value = msg[name]
        if not isinstance(value, str):
            raise _bad(f"SNS field {name} is not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


class CertCache:
    """Signing certificates by URL (a few, most recent kept)."""

    def __init__(self, size: int = 16):
        self.size = size
        self.certs: OrderedDict[str, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, url: str):
        from cryptography import x509

        with self.lock:
            cert = self.certs.get(url)
        if cert is None:
            import requests

            try:
                with requests.get(url, timeout=10, stream=True) as resp:
                    if resp.status_code != 200:
                        raise _forbidden(f"signing certificate answered {resp.status_code}")
                    data = resp.raw.read(MAX_CERT + 1, decode_content=True)
            except requests.RequestException as exc:
                raise Refused("503 Service Unavailable", f"signing certificate not fetched: {type(exc).__name__}") \
                    from None
            if len(data) > MAX_CERT:
                raise _forbidden("signing certificate too large")
            try:
                cert = x509.load_pem_x509_certificate(data)
            except ValueError:
                raise _forbidden("signing certificate is not a PEM certificate") from None
            with self.lock:
                self.certs[url] = cert
                while len(self.certs) > self.size:
                    self.certs.popitem(last=False)
        return cert


def verify_sns(msg: dict, certs: CertCache) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    version = msg.get("SignatureVersion")
    algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}.get(version)
    if algorithm is None:
        raise _forbidden(f"unsupported SignatureVersion {str(version)[:10]!r}")
    url = msg.get("SigningCertURL")
    if not isinstance(url, str) or not trusted_sns_url(url):
        raise _forbidden("SigningCertURL is not https://sns.<region>.amazonaws.com/")
    try:
        signature = base64.b64decode(str(msg.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise _forbidden("Signature is not base64") from None
    data = sns_string_to_sign(msg)
    cert = certs.get(url)
    now = time.time()
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        raise _forbidden("signing certificate expired or not yet valid")
    try:
        cert.public_key().verify(signature, data, padding.PKCS1v15(), algorithm())
    except (InvalidSignature, TypeError, ValueError):
        raise _forbidden("SNS signature does not verify") from None


def ses_events(msg: dict, issue_tag: str = "publisher-issue") -> list[tuple[str, Report, str]]:
    """(key, report, email) of an SES notification carried by an SNS Notification."""
    try:
        note = json.loads(msg["Message"])
    except (ValueError, TypeError):
        raise _bad("SNS Message is not an SES notification (JSON)") from None
    if not isinstance(note, dict):
        raise _bad("SES notification is not an object")
    kind = note.get("notificationType") or note.get("eventType")
    mail = note.get("mail") if isinstance(note.get("mail"), dict) else {}
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    tag = (tags.get(issue_tag) or [""])[0] if isinstance(tags.get(issue_tag), list) else ""
    issue = tag.removeprefix("publisher-") or None
    out = []
    if kind == "Bounce":
        b = note.get("bounce")
        if not isinstance(b, dict) or not isinstance(b.get("bouncedRecipients"), list):
            raise _bad("SES Bounce without bounce.bouncedRecipients")
        hard = b.get("bounceType") == "Permanent"
        for r in b["bouncedRecipients"]:
            if not isinstance(r, dict) or not isinstance(r.get("emailAddress"), str):
                raise _bad("SES bounced recipient without emailAddress")
            status = str(r.get("status") or ("5.0.0" if hard else "4.0.0"))[:20]
            evidence = f"SES {b.get('bounceType')}/{b.get('bounceSubType')}: {r.get('diagnosticCode') or ''}"
            out.append((r["emailAddress"], Report("hard" if hard else "soft", evidence[:500], status, issue=issue)))
    elif kind == "Complaint":
        c = note.get("complaint")
        if not isinstance(c, dict) or not isinstance(c.get("complainedRecipients"), list):
            raise _bad("SES Complaint without complaint.complainedRecipients")
        ftype = str(c.get("complaintFeedbackType") or "abuse")
        for r in c["complainedRecipients"]:
            if not isinstance(r, dict) or not isinstance(r.get("emailAddress"), str):
                raise _bad("SES complained recipient without emailAddress")
            report = Report("ignored" if ftype == "not-spam" else "complaint", f"SES complaint: {ftype}"[:500],
                            ftype[:20], issue=issue)
            out.append((r["emailAddress"], report))
    key = f"ses:{msg['MessageId']}"
    return [(f"{key}:{email.lower()}", report, email) for email, report in out]


# -- Postmark -------------------------------------------------------------------------------------

POSTMARK_HARD = {"HardBounce", "BadEmailAddress"}
POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError"}


def postmark_events(body) -> list[tuple[str, Report, str]]:
    if not isinstance(body, dict) or not isinstance(body.get("RecordType"), str):
        raise _bad("not a Postmark webhook (no RecordType)")
    kind = body["RecordType"]
    issue = str(body.get("Tag") or "").removeprefix("publisher-") or None
    if kind in ("Bounce", "SpamComplaint"):
        if not isinstance(body.get("ID"), int | str) or not isinstance(body.get("Email"), str):
            raise _bad(f"Postmark {kind} without ID or Email")
        btype = str(body.get("Type", ""))
        evidence = f"Postmark {btype}: {body.get('Description') or ''} {body.get('Details') or ''}"[:500]
        if kind == "SpamComplaint" or btype == "SpamComplaint":
            report = Report("complaint", evidence, "abuse", issue=issue)
        elif btype == "Unsubscribe":
            report = Report("unsubscribe", evidence, "", issue=issue)
        elif btype in POSTMARK_HARD:
            report = Report("hard", evidence, "5.0.0", issue=issue)
        elif btype in POSTMARK_SOFT:
            report = Report("soft", evidence, "4.0.0", issue=issue)
        else:
            report = Report("ignored", evidence, "", issue=issue)
        return [(f"postmark:{kind.lower()}:{body['ID']}", report, body["Email"])]
    if kind == "SubscriptionChange":
        email = body.get("Recipient")
        if not isinstance(email, str) or not isinstance(body.get("ChangedAt"), str):
            raise _bad("Postmark SubscriptionChange without Recipient or ChangedAt")
        reason = str(body.get("SuppressionReason") or "")
        ident = "\0".join(str(body.get(k)) for k in ("Recipient", "ChangedAt", "SuppressSending",
                                                      "SuppressionReason", "MessageStream", "MessageID"))
        key = "postmark:subscription:" + hashlib.sha256(ident.encode("utf-8")).hexdigest()[:40]
        evidence = f"Postmark suppression: {reason} ({body.get('Origin') or ''})"[:500]
        if body.get("SuppressSending") is not True:
            report = Report("ignored", "Postmark reactivation (not a subscription here)")
        elif reason == "HardBounce":
            report = Report("hard", evidence, "5.0.0", issue=issue)
        elif reason == "SpamComplaint":
            report = Report("complaint", evidence, "abuse", issue=issue)
        else:
            report = Report("unsubscribe", evidence, "", issue=issue)
        return [(key, report, email)]
    return []  # Delivery, Open, Click, …: nothing to apply


# -- Mailgun --------------------------------------------------------------------------------------


def verify_mailgun(body, key: str, max_age: float, now: float | None = None) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("signature"), dict) \
            or not isinstance(body.get("event-data"), dict):
        raise _bad("not a Mailgun webhook (signature and event-data)")
    sig = body["signature"]
    ts, token, given = sig.get("timestamp"), sig.get("token"), sig.get("signature")
    if not (isinstance(ts, str | int) and isinstance(token, str) and isinstance(given, str)) \
            or not str(ts).isdigit() or len(token) > 200:
        raise _bad("Mailgun signature without timestamp, token or signature")
    want = hmac.new(key.encode("utf-8"), f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, given.lower()):
        raise _forbidden("Mailgun signature does not verify")
    if abs((time.time() if now is None else now) - int(ts)) > max_age:
        raise _forbidden("Mailgun signature outside its timestamp window")
    return body["event-data"]


def mailgun_events(data: dict) -> list[tuple[str, Report, str]]:
    event, ident, email = data.get("event"), data.get("id"), data.get("recipient")
    if not isinstance(event, str) or not isinstance(ident, str) or not isinstance(email, str):
        raise _bad("Mailgun event-data without event, id or recipient")
    uv = data.get("user-variables") if isinstance(data.get("user-variables"), dict) else {}
    issue = str(uv.get("publisher-issue") or "") or None
    ds = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    evidence = f"Mailgun {event} {data.get('severity') or ''}: {ds.get('code') or ''} " \
               f"{ds.get('description') or ds.get('message') or data.get('reason') or ''}"[:500]
    if event == "failed":
        hard = data.get("severity") == "permanent"
        report = Report("hard" if hard else "soft", evidence, str(ds.get("code") or ("5.0.0" if hard else "4.0.0"))[:20],
                        issue=issue)
    elif event == "complained":
        report = Report("complaint", evidence, "abuse", issue=issue)
    elif event == "unsubscribed":
        report = Report("unsubscribe", evidence, "", issue=issue)
    else:
        return []  # accepted, delivered, opened, …
    return [(f"mailgun:{ident}", report, email)]


# -- the app --------------------------------------------------------------------------------------


def make_hooks_app(settings):
    """The WSGI app of /hooks/*; the events are applied by one Processor under one lock."""
    return Hooks(settings)


class Hooks:
    """/hooks/ses, /hooks/postmark, /hooks/mailgun as one WSGI app (see the module docstring)."""

    def __init__(self, settings):
        from publisher.stores import open_ledger
        from publisher.subscribers import open_db

        self.settings = settings
        self.subs = open_db(settings)
        self.proc = Processor(settings, open_ledger(settings), self.subs, "", verp=False)
        self.lock = threading.Lock()
        self.certs = CertCache()
        self.topics = set(settings["ses"]["topic_arns"])
        self.tokens: OrderedDict[str, tuple[float, str]] = OrderedDict()  # Mailgun token → (when, digest)
        self.routes = {"/hooks/ses": self.ses, "/hooks/postmark": self.postmark, "/hooks/mailgun": self.mailgun}
        self.configured = {"/hooks/ses": bool(self.topics),
                           "/hooks/postmark": bool(settings["postmark"]["webhook_user"]),
                           "/hooks/mailgun": bool(settings["mailgun"]["webhook_signing_key_env"])}

    def apply(self, events: list[tuple[str, Report, str]], source: str) -> str:
        """Apply each event once (by its key); what was done, for the reply."""
        done = []
        with self.lock:
            for key, report, email in events:
                already = self.proc.seen(key)
                if already is not None:
                    done.append(already)
                    continue
                sub = self.subs.get(email)
                done.append(self.proc.apply(key, report, sub.email if sub else None, source))
        return "; ".join(done) or "nothing to apply"

    def ses(self, environ, body) -> str:
        msg = _json(body)
        if not isinstance(msg, dict):
            raise _bad("not an SNS message (JSON object)")
        verify_sns(msg, self.certs)
        if msg.get("TopicArn") not in self.topics:
            raise _forbidden("TopicArn is not one of [ses] topic_arns")
        if msg["Type"] == "SubscriptionConfirmation":
            return _confirm_subscription(msg)
        if msg["Type"] == "UnsubscribeConfirmation":
            return "noted"
        return self.apply(ses_events(msg), f"ses:{msg['MessageId']}")

    def postmark(self, environ, body) -> str:
        user = self.settings["postmark"]["webhook_user"]
        password = self.settings.secret("postmark", "webhook_password_env")
        given = environ.get("HTTP_AUTHORIZATION", "")
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), want.encode("utf-8")):
            raise Refused("401 Unauthorized", "basic auth required")
        return self.apply(postmark_events(_json(body)), "postmark")

    def mailgun(self, environ, body) -> str:
        key = self.settings.secret("mailgun", "webhook_signing_key_env")
        max_age = float(self.settings["mailgun"]["webhook_max_age"])
        payload = _json(body)
        data = verify_mailgun(payload, key, max_age)
        # the signature covers timestamp + token, not the event: a token seen before with other
        # event data is a captured signature reused (Mailgun: cache tokens to stop replays)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()
        token = payload["signature"]["token"]
        with self.lock:
            now = time.time()
            while self.tokens and next(iter(self.tokens.values()))[0] < now - 2 * max_age:
                self.tokens.popitem(last=False)
            seen = self.tokens.get(token)
            if seen is not None and seen[1] != digest:
                raise _forbidden("Mailgun token reused with other event data")
            self.tokens[token] = (now, digest)
        return self.apply(mailgun_events(data), "mailgun")

    def answer(self, path: str, environ) -> tuple[str, str]:
        """(status, text) of one request."""
        handler = self.routes.get(path)
        try:
            if handler is None or not self.configured[path]:
                raise Refused("404 Not Found", "no such hook (or it is not configured)")
            if environ.get("REQUEST_METHOD") != "POST":
                raise Refused("405 Method Not Allowed", "POST only")
            return "200 OK", handler(environ, _body(environ))
        except Refused as exc:
            log.warning("%s: refused (%s): %s", path, exc.status, exc)
            return exc.status, str(exc)
        except Exception as exc:  # noqa: BLE001 - the provider retries; nothing half-applied stays wrong
            from publisher.errors import ConfigError

            log.error("%s: %s: %s", path, type(exc).__name__, exc)
            status = "503 Service Unavailable" if isinstance(exc, ConfigError) else "500 Internal Server Error"
            return status, "not applied; retry later"

    def __call__(self, environ, start_response):
        status, result = self.answer(environ.get("PATH_INFO", "").rstrip("/"), environ)
        data = (result + "\n").encode("utf-8")
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                   ("Cache-Control", "no-store")]
        if status.startswith("401"):
            headers.append(("WWW-Authenticate", 'Basic realm="publisher hooks"'))
        start_response(status, headers)
        return [data]


def _confirm_subscription(msg: dict) -> str:
    """Confirm an SNS subscription (of a topic already checked) by fetching its SubscribeURL."""
    url = msg.get("SubscribeURL", "")
    if not trusted_sns_url(url):
        raise _forbidden("SubscribeURL is not https://sns.<region>.amazonaws.com/")
    import requests

    try:
        resp = requests.get(url, timeout=10)
    except requests.RequestException as exc:
        raise Refused("502 Bad Gateway", f"subscription not confirmed: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise Refused("502 Bad Gateway", f"subscription not confirmed: SNS answered {resp.status_code}")
    log.info("SNS subscription to %s confirmed", msg["TopicArn"])
    return "subscription confirmed"


def _body(environ) -> bytes:
    """The request body, at most MAX_BODY bytes (413 beyond)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _bad("bad Content-Length") from None
    if length > MAX_BODY:
        raise Refused("413 Content Too Large", "request too large")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _json(body: bytes):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("body is not JSON") from None
