"""Provider webhooks in `publisher serve` (publisher/hooks.py), over real HTTP: SNS messages signed
by the test with a certificate it generates (cryptography), Postmark basic auth, Mailgun HMAC;
forged, replayed, malformed and out-of-window requests; a 100-request burst."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from publisher import hooks
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.subscribe import app_from_settings
from publisher.subscribers import SubscriberDB
from publisher.unsubscribe import serve_in_thread
from tests.provider_support import (
    MG_SIGNING_KEY,
    WEBHOOK_PASSWORD,
    add_subscribers,
    provider_env,
    settings_for,
)

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


def make_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-1.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


class CertServer(ThreadingHTTPServer):
    """Serves the signing certificate and counts subscription confirmations (SubscribeURL)."""

    daemon_threads = True

    def __init__(self, pem: bytes):
        self.pem, self.confirmed, self.fetches = pem, 0, 0

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(h):
                if h.path.startswith("/cert.pem"):
                    self.fetches += 1
                    body = self.pem
                elif h.path.startswith("/confirm"):
                    self.confirmed += 1
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    h.send_response(404)
                    h.end_headers()
                    return
                h.send_response(200)
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)

        super().__init__(("127.0.0.1", 0), H)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def string_to_sign(msg: dict) -> bytes:
    """Written from the SNS documentation, independently of publisher/hooks.py."""
    if msg["Type"] == "Notification":
        names = ["Message", "MessageId"] + (["Subject"] if "Subject" in msg else []) + ["Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{msg[n]}\n" for n in names).encode()


def sign(msg: dict, key, cert_url: str, version: str = "2") -> dict:
    msg = {**msg, "SignatureVersion": version, "SigningCertURL": cert_url}
    algo = hashes.SHA256() if version == "2" else hashes.SHA1()
    msg["Signature"] = base64.b64encode(key.sign(string_to_sign(msg), padding.PKCS1v15(), algo)).decode()
    return msg


def ses_bounce(email: str, kind: str = "Permanent", message_id: str | None = None, topic: str = TOPIC) -> dict:
    note = {"notificationType": "Bounce", "bounce": {"bounceType": kind, "bounceSubType": "General",
                                                     "bouncedRecipients": [{"emailAddress": email, "status": "5.1.1",
                                                                            "diagnosticCode": "smtp; 550 5.1.1 unknown"}]},
            "mail": {"messageId": "x", "tags": {"publisher-issue": ["publisher-2026-11-23"]}}}
    return {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic,
            "Message": json.dumps(note), "Timestamp": dt.datetime.now(dt.UTC).isoformat()}


@pytest.fixture
def site(tmp_path, monkeypatch):
    provider_env(monkeypatch)
    key, pem = make_cert()
    certs = CertServer(pem)
    monkeypatch.setattr(hooks, "TEST_TRUSTED_PREFIXES", [certs.base + "/"])
    settings = settings_for(tmp_path, "ses", "http://127.0.0.1:9", topic=TOPIC)
    emails = add_subscribers(settings, 120)
    server = serve_in_thread(app_from_settings(settings), threads=8)
    base = f"http://127.0.0.1:{server.server_port}"
    yield {"settings": settings, "emails": emails, "base": base, "key": key, "certs": certs,
           "db": SubscriberDB(settings.path("email", "subscribers_db")),
           "mail": MailStore(Ledger(settings.path("paths", "ledger")))}
    server.shutdown()
    certs.shutdown()


def state(site, email):
    return site["db"].get(email).state


def events(site) -> int:
    return site["mail"].db.connect().execute("SELECT COUNT(*) FROM mail_events").fetchone()[0]


# -- SES / SNS ------------------------------------------------------------------------------------


def test_sns_bounce_verified_applied_once(site):
    e = site["emails"][0]
    msg = sign(ses_bounce(e), site["key"], site["certs"].base + "/cert.pem")
    r = requests.post(site["base"] + "/hooks/ses", data=json.dumps(msg), timeout=10)
    assert r.status_code == 200 and "bounced" in r.text
    assert state(site, e) == "bounced" and events(site) == 1
    again = requests.post(site["base"] + "/hooks/ses", data=json.dumps(msg), timeout=10)  # SNS retries
    assert again.status_code == 200 and "already processed" in again.text and events(site) == 1
    v1 = sign(ses_bounce(site["emails"][1], kind="Transient"), site["key"], site["certs"].base + "/cert.pem", "1")
    assert requests.post(site["base"] + "/hooks/ses", data=json.dumps(v1), timeout=10).status_code == 200
    assert state(site, site["emails"][1]) == "active" and events(site) == 2  # soft: counted only


@pytest.mark.parametrize("attack", ["tampered", "other_key", "cert_host", "http_aws", "topic", "no_sig",
                                    "version", "junk", "not_json"])
def test_sns_forged_or_malformed_refused_nothing_changes(site, attack):
    e = site["emails"][2]
    cert_url = site["certs"].base + "/cert.pem"
    msg = sign(ses_bounce(e), site["key"], cert_url)
    if attack == "tampered":
        msg["Message"] = msg["Message"].replace("Permanent", "Permanent ")
    elif attack == "other_key":
        msg = sign(ses_bounce(e), rsa.generate_private_key(public_exponent=65537, key_size=2048), cert_url)
    elif attack == "cert_host":
        msg = sign(ses_bounce(e), site["key"], "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem")
    elif attack == "http_aws":
        msg = sign(ses_bounce(e), site["key"], "http://sns.eu-west-1.amazonaws.com/cert.pem")
    elif attack == "topic":
        msg = sign(ses_bounce(e, topic="arn:aws:sns:eu-west-1:999:someone-elses"), site["key"], cert_url)
    elif attack == "no_sig":
        del msg["Signature"]
    elif attack == "version":
        msg["SignatureVersion"] = "3"
    body = {"junk": b'{"Type": "Notification"}', "not_json": b"\xff\xfe<xml/>"}.get(attack, json.dumps(msg).encode())
    fetched = site["certs"].fetches
    r = requests.post(site["base"] + "/hooks/ses", data=body, timeout=10)
    assert 400 <= r.status_code < 500, (attack, r.status_code, r.text)
    assert state(site, e) == "active" and events(site) == 0
    if attack in ("cert_host", "http_aws"):
        assert site["certs"].fetches == fetched  # an untrusted certificate URL is never fetched


def test_sns_subscription_confirmation(site):
    cert_url = site["certs"].base + "/cert.pem"
    conf = {"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": "t0k",
            "TopicArn": TOPIC, "Message": "You have chosen to subscribe…",
            "SubscribeURL": site["certs"].base + "/confirm?Action=ConfirmSubscription&Token=t0k",
            "Timestamp": dt.datetime.now(dt.UTC).isoformat()}
    r = requests.post(site["base"] + "/hooks/ses", data=json.dumps(sign(conf, site["key"], cert_url)), timeout=10)
    assert r.status_code == 200 and site["certs"].confirmed == 1
    evil = {**conf, "SubscribeURL": "https://attacker.example/confirm"}
    r = requests.post(site["base"] + "/hooks/ses", data=json.dumps(sign(evil, site["key"], cert_url)), timeout=10)
    assert r.status_code == 403 and site["certs"].confirmed == 1


def test_cert_host_rule():
    ok = hooks.trusted_sns_url
    assert ok("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
    assert ok("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    for bad in ("https://sns.us-east-1.amazonaws.com.evil.org/x.pem", "https://evil.org/sns.us-east-1.amazonaws.com/",
                "http://sns.us-east-1.amazonaws.com/x.pem", "https://user@sns.us-east-1.amazonaws.com/x.pem",
                "https://sns.us-east-1.amazonaws.com:8443/x.pem", "https://s3.amazonaws.com/x.pem", ""):
        assert not ok(bad), bad


# -- Postmark -------------------------------------------------------------------------------------


def pm(site, body, auth=("postmark", WEBHOOK_PASSWORD)):
    return requests.post(site["base"] + "/hooks/postmark", json=body, auth=auth, timeout=10)


def test_postmark_events(site):
    e0, e1, e2 = site["emails"][10:13]
    bounce = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1,
              "Email": e0, "Tag": "publisher-2026-11-23", "MessageStream": "broadcast", "Description": "unknown user"}
    assert pm(site, bounce, auth=None).status_code == 401
    assert pm(site, bounce, auth=("postmark", "guess")).status_code == 401
    assert state(site, e0) == "active" and events(site) == 0
    assert pm(site, bounce).status_code == 200 and state(site, e0) == "bounced"
    assert pm(site, bounce).status_code == 200 and events(site) == 1  # Postmark retries: nothing more
    assert pm(site, {"RecordType": "SpamComplaint", "ID": 77, "Type": "SpamComplaint", "Email": e1}).status_code == 200
    assert state(site, e1) == "unsubscribed"
    change = {"RecordType": "SubscriptionChange", "MessageID": "a", "ServerID": 1, "MessageStream": "broadcast",
              "ChangedAt": "2026-12-03T10:00:00Z", "Recipient": e2, "Origin": "Recipient", "SuppressSending": True,
              "SuppressionReason": "ManualSuppression", "Tag": "publisher-2026-11-23"}
    assert pm(site, change).status_code == 200 and state(site, e2) == "unsubscribed"
    assert pm(site, {"RecordType": "Delivery", "MessageID": "b", "Recipient": e0}).status_code == 200
    for junk in ({"RecordType": "Bounce", "Email": e0}, ["not", "an", "object"], {"no": "type"}):
        assert pm(site, junk).status_code == 400
    assert events(site) == 3


# -- Mailgun --------------------------------------------------------------------------------------


def mg_body(email, event="failed", severity="permanent", ident=None, ts=None, key=MG_SIGNING_KEY):
    ts = str(int(time.time() if ts is None else ts))
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    sig = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": ts, "token": token, "signature": sig},
            "event-data": {"event": event, "severity": severity, "id": ident or uuid.uuid4().hex[:22],
                           "recipient": email, "timestamp": float(ts),
                           "user-variables": {"publisher-issue": "2026-11-23"},
                           "delivery-status": {"code": 550, "description": "mailbox unavailable"}}}


def mg(site, body):
    return requests.post(site["base"] + "/hooks/mailgun", json=body, timeout=10)


def test_mailgun_signature_window_replay(site):
    e0, e1, e2 = site["emails"][20:23]
    body = mg_body(e0)
    assert mg(site, body).status_code == 200 and state(site, e0) == "bounced"
    assert mg(site, body).status_code == 200 and events(site) == 1  # replayed within the window: no change
    assert mg(site, mg_body(e1, ts=time.time() - 3600)).status_code == 403  # outside the window
    assert mg(site, mg_body(e1, ts=time.time() + 3600)).status_code == 403
    assert mg(site, mg_body(e1, key="not-the-key")).status_code == 403
    forged = mg_body(e1)
    assert mg(site, forged).status_code == 200 and state(site, e1) == "bounced"
    forged["event-data"]["recipient"] = e2  # a captured signature (timestamp + token) on another event
    forged["event-data"]["id"] = "other"
    assert mg(site, forged).status_code == 403 and state(site, e2) == "active"
    site["db"].set_state(e1, "active", only_from=("bounced",))
    site["mail"].db.connect().execute("DELETE FROM mail_events WHERE email = ?", (e1,))
    tampered_sig = mg_body(e1)
    tampered_sig["signature"]["signature"] = "0" * 64
    assert mg(site, tampered_sig).status_code == 403
    assert state(site, e1) == "active" and events(site) == 1
    assert mg(site, mg_body(e1, severity="temporary")).status_code == 200 and state(site, e1) == "active"
    assert mg(site, mg_body(e2, event="unsubscribed")).status_code == 200 and state(site, e2) == "unsubscribed"
    assert mg(site, {"signature": "x"}).status_code == 400
    assert mg(site, mg_body(e0, event="delivered")).status_code == 200 and events(site) == 3


def test_burst_of_100_each_applied_once(site):
    """100 concurrent requests: 50 genuine events, each delivered twice (a provider's retry racing
    the first delivery) — 50 applied, every request answered 2xx."""
    targets = site["emails"][40:90]
    bodies = []
    for i, e in enumerate(targets):
        body = mg_body(e, ident=f"burst-{i}") if i % 2 else None
        if body is None:
            msg = sign(ses_bounce(e, message_id=f"burst-sns-{i}"), site["key"], site["certs"].base + "/cert.pem")
            bodies += [("ses", msg), ("ses", msg)]
        else:
            bodies += [("mailgun", body), ("mailgun", body)]
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda kb: requests.post(f"{site['base']}/hooks/{kb[0]}", json=kb[1],
                                                        timeout=30).status_code, bodies))
    assert codes == [200] * 100
    assert all(state(site, e) == "bounced" for e in targets)
    assert events(site) == 50
