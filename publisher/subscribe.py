"""Subscribe with double opt-in: the form, the confirmation email, the confirmation link.

Served by `publisher serve` beside the unsubscribe endpoint (publisher/unsubscribe.py dispatches
these paths here):

    GET  /subscribe          the form ([subscribe] language; templates/subscribe/)
    POST /subscribe          email=…: a new address becomes `pending` and is sent a confirmation
                             email with a signed link that expires ([subscribe] confirm_hours)
    GET  /confirm?token=…    a page with a button; changes nothing (mail scanners follow links)
    POST /confirm            token=…: the address becomes `active`

The POST /subscribe answer is the same page whether the address is new, pending, active or
unsubscribed, and the email is sent by a background thread, so neither the page nor its timing
tells whether an address is on the list. A filled-in honeypot field (`website`, hidden from
people) gets the same page and changes nothing; more than [subscribe] per_ip_per_hour requests
from one IP get 429; an address gets at most per_address_per_hour confirmation emails.

A confirmation token is `base64url(email) "." REQUEST "." EXPIRES "." base64url(HMAC-SHA256(secret,
"confirm" NUL list_id NUL email NUL REQUEST NUL EXPIRES))` (REQUEST: the number of the form
request it answers; EXPIRES: Unix seconds), signed with the same secret as unsubscribe links but
never interchangeable with them. It is single-use and bound to the pending state it was issued
for: it confirms only while the address is still `pending` from that very request (the latest
one, unconfirmed), so an old link never re-activates a reader who unsubscribed since.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import queue
import threading
import time
import tomllib
from collections import deque
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import parse_qs, quote

from publisher.addresses import valid_address
from publisher.mailmsg import from_line, sender_name
from publisher.registry import mail_channel, mail_table

log = logging.getLogger("publisher.subscribe")

MAX_BODY = 4096
PATHS = ("/subscribe", "/confirm")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, list_id: str, email: str, request: int, expires: int) -> bytes:
    msg = f"confirm\0{list_id}\0{email.strip().lower()}\0{request}\0{expires}".encode()
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).digest()


def make_confirm_token(secret: str, list_id: str, email: str, request: int, expires: int) -> str:
    """The token of the confirmation link for form request number `request` of `email`."""
    mac = _mac(secret, list_id, email, request, expires)
    return f"{_b64(email.encode('utf-8'))}.{request}.{expires}.{_b64(mac)}"


def check_confirm_token(secret: str, list_id: str, token: str, now: float | None = None
                        ) -> tuple[tuple[str, int] | None, str]:
    """((email, request), "ok") for a genuine unexpired token; (None, "expired") or (None, "invalid").
    Whether the request is still the pending one is the store's question (SubscriberDB.confirm)."""
    try:
        head, req, exp, sig = token.split(".")
        if len(token) > 1024 or not exp.isdigit() or not req.isdigit() or len(req) > 18:
            return None, "invalid"
        email, request, expires, given = _unb64(head).decode("utf-8"), int(req), int(exp), _unb64(sig)
    except (ValueError, UnicodeDecodeError):
        return None, "invalid"
    if not hmac.compare_digest(given, _mac(secret, list_id, email, request, expires)):
        return None, "invalid"
    if (time.time() if now is None else now) > expires:
        return None, "expired"
    return (email, request), "ok"


class Limiter:
    """At most `limit` events per key in the last `window` seconds (in memory, bounded)."""

    def __init__(self, limit: int, window: float = 3600.0, max_keys: int = 100_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self.hits: dict[str, deque] = {}
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            q = self.hits.get(key)
            if q is None:
                if len(self.hits) >= self.max_keys:  # forget the idle keys first
                    for k in [k for k, v in self.hits.items() if not v or now - v[-1] > self.window]:
                        del self.hits[k]
                    if len(self.hits) >= self.max_keys:
                        return False
                q = self.hits[key] = deque()
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            return True


def strings(settings) -> dict[str, str]:
    from publisher.channels.base import template_env

    lang = settings["subscribe"]["language"]
    env = template_env(settings)
    source, _, _ = env.loader.get_source(env, "subscribe/strings.toml")
    table = tomllib.loads(source)
    if lang not in table:
        from publisher.errors import ConfigError

        raise ConfigError(f"[subscribe] language {lang!r} has no words in templates/subscribe/strings.toml "
                          f"(known: {', '.join(sorted(table))}): fix it in {settings.where()}")
    name = settings["newsletter"]["name"]
    return {k: v.replace("{name}", name) for k, v in table[lang].items()}


def snippet(settings) -> str:
    """The form as HTML to paste into the archive site (posts to [subscribe] url)."""
    from publisher.channels.base import template_env

    url = settings.require("subscribe", "url", "the public https:// URL of /subscribe")
    return template_env(settings).get_template("subscribe/snippet.html").render(t=strings(settings), action=url)


class Mailer:
    """Sends confirmation emails from one background thread (the request never waits for SMTP)."""

    def __init__(self, settings, secret: str):
        from publisher.channels.base import template_env
        from publisher.transports.smtp import SmtpConfig

        self.settings = settings
        self.secret = secret
        self.cfg = SmtpConfig.from_settings(settings)
        self.env = template_env(settings)
        self.q: queue.Queue = queue.Queue(maxsize=1000)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def message(self, email: str, request: int) -> bytes:
        s, em = self.settings, mail_table(self.settings)
        hours = s["subscribe"]["confirm_hours"]
        expires = int(time.time() + hours * 3600)
        token = make_confirm_token(self.secret, em["list_id"], email, request, expires)
        link = s["subscribe"]["confirm_url"].replace("{token}", quote(token, safe=""))
        t = strings(s)
        body = self.env.get_template("subscribe/confirm_email.txt").render(
            t=t, lang=s["subscribe"]["language"], name=s["newsletter"]["name"], link=link, hours=hours)
        msg = EmailMessage()
        msg["To"] = email
        msg["Subject"] = t["email_subject"]
        msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
        msg["Message-ID"] = make_msgid(domain=em["from_address"].rsplit("@", 1)[-1])
        msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: vacation responders stay quiet
        msg.set_content(body, cte="quoted-printable")
        from email import policy

        # the From line is the newsletter's own (mailmsg.from_line): the email package would
        # re-encode a display name with a comma or quote in it into two mailboxes
        return from_line(s).encode("ascii") + b"\r\n" + msg.as_bytes(policy=policy.SMTP)

    def send_now(self, email: str, request: int) -> None:
        from publisher.transports.smtp import send_message

        sender = self.settings["bounces"]["address"] or mail_table(self.settings)["from_address"]
        send_message(self.cfg, sender, email, self.message(email, request))

    def submit(self, email: str, request: int) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="subscribe-mailer", daemon=True)
                self.thread.start()
        try:
            self.q.put_nowait((email, request))
        except queue.Full:
            log.warning("confirmation queue full; a request was dropped (the reader can submit again)")

    def _run(self) -> None:
        while True:
            email, request = self.q.get()
            for attempt in range(3):
                try:
                    self.send_now(email, request)
                    log.info("confirmation email sent")
                    break
                except Exception as exc:  # noqa: BLE001 - keep the thread alive; the row stays pending
                    log.warning("confirmation email not sent (attempt %d): %s", attempt + 1,
                                type(exc).__name__)
                    time.sleep(2 ** attempt)


def make_subscribe_app(settings, secret: str, *, mailer: Mailer | None = None):
    """The WSGI app of /subscribe and /confirm."""
    return SubscribeApp(settings, secret, mailer=mailer)


class SubscribeApp:
    """/subscribe (the form, and a POST of it) and /confirm (the link of the confirmation email)."""

    def __init__(self, settings, secret: str, *, mailer: Mailer | None = None) -> None:
        from publisher.channels.base import template_env
        from publisher.subscribers import open_db

        self.db = open_db(settings)
        self.env = template_env(settings)
        sub = settings["subscribe"]
        self.secret = secret
        self.list_id = mail_table(settings)["list_id"]
        self.lang = sub["language"]
        self.t = strings(settings)
        self.hours = sub["confirm_hours"]
        self.per_ip = Limiter(int(sub["per_ip_per_hour"]))
        self.per_address = Limiter(int(sub["per_address_per_hour"]))
        self.proxies = set(sub["trusted_proxies"])
        self.mailer = mailer or Mailer(settings, secret)

    def page(self, start_response, status: str, template: str, title: str, **values):
        data = self.env.get_template(template).render(t=self.t, lang=self.lang, title=title, **values).encode("utf-8")
        start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Length", str(len(data))),
                                ("Cache-Control", "no-store"),
                                ("X-Content-Type-Options", "nosniff"),
                                ("X-Frame-Options", "DENY"),
                                ("Referrer-Policy", "no-referrer")])
        return [data]

    def client_ip(self, environ) -> str:
        ip = environ.get("REMOTE_ADDR", "")
        fwd = environ.get("HTTP_X_FORWARDED_FOR", "")
        if ip in self.proxies and fwd:
            ip = fwd.split(",")[-1].strip()  # the hop our proxy added
        return ip[:64]

    def __call__(self, environ, start_response):
        from publisher.unsubscribe import read_form

        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/").rstrip("/")
        if method not in ("GET", "HEAD", "POST"):
            start_response("405 Method Not Allowed", [("Allow", "GET, POST"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        form: dict[str, list[str]] = {}
        if method == "POST":
            got, status = read_form(environ, max_body=MAX_BODY)
            if got is None:
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [b"request too large\n" if status.startswith("413") else
                        b"malformed form: at most 10 url-encoded UTF-8 fields\n"]
            form = got
        if path == "/subscribe":
            return self.subscribe(environ, start_response, method, form)
        return self.confirm(environ, start_response, method, form)

    def subscribe(self, environ, start_response, method: str, form: dict[str, list[str]]):
        t = self.t
        if method != "POST":
            return self.page(start_response, "200 OK", "subscribe/form.html", t["form_title"], action="subscribe",
                             error="")
        ip = self.client_ip(environ)
        if not self.per_ip.allow(ip):
            log.info("subscribe: rate limited")
            return self.page(start_response, "429 Too Many Requests", "subscribe/message.html",
                             t["limited_title"], body=t["limited_body"])
        email = (form.get("email") or [""])[0].strip()
        if not valid_address(email):
            return self.page(start_response, "400 Bad Request", "subscribe/form.html", t["form_title"],
                             action="subscribe", error=t["bad_email"])
        if (form.get("website") or [""])[0]:
            log.info("subscribe: honeypot filled; ignored")
        else:
            request = self.db.request(email, ip)
            if request is not None and self.per_address.allow(email.lower()):
                self.mailer.submit(email, request)
        return self.page(start_response, "200 OK", "subscribe/message.html", t["thanks_title"],
                         body=t["thanks_body"].format(email=email, hours=self.hours))

    def confirm(self, environ, start_response, method: str, form: dict[str, list[str]]):
        t, db = self.t, self.db
        token = (form.get("token") or parse_qs(environ.get("QUERY_STRING", "")).get("token") or [""])[0]
        signed, why = check_confirm_token(self.secret, self.list_id, token) if token else (None, "invalid")
        email = signed[0] if signed else None
        if signed is not None and not db.can_confirm(*signed):
            # used already, superseded by a newer request, or the address changed since the link
            # was sent (unsubscribed, bounced, erased): an old link never re-activates anyone
            email, why = None, "invalid"
        elif signed is not None and method == "POST" and not db.confirm(*signed, self.client_ip(environ)):
            email, why = None, "invalid"  # lost a race with another change
        if email is None:
            status = "410 Gone" if why == "expired" else "400 Bad Request"
            return self.page(start_response, status, "subscribe/message.html", t[f"{why}_title"],
                             body=t[f"{why}_body"])
        if method == "POST":
            log.info("confirm: subscribed")
            return self.page(start_response, "200 OK", "subscribe/message.html", t["confirmed_title"],
                             body=t["confirmed_body"].format(email=email))
        return self.page(start_response, "200 OK", "subscribe/confirm.html", t["confirm_title"],
                         body=t["confirm_body"].format(email=email), token=token)


def app_from_settings(settings, *, on_unsubscribe=None):
    """What `publisher serve` runs (inside publisher.analytics.serve_app, which adds the click
    redirect and the report): the site (`site_from_settings`) and, under /hooks/, the email
    providers' event webhooks (publisher/hooks.py)."""
    from publisher.hooks import make_hooks_app

    site = site_from_settings(settings, on_unsubscribe=on_unsubscribe)
    hooks = make_hooks_app(settings)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/hooks/"):
            return hooks(environ, start_response)
        return site(environ, start_response)

    return app


def site_from_settings(settings, *, on_unsubscribe=None):
    """The unsubscribe endpoint (publisher/unsubscribe.py) with this
    module's subscribe form and confirmation behind /subscribe and /confirm. (Here, not in
    unsubscribe.py: the subscribe side sends mail through the email transport, which builds its
    messages with unsubscribe links — so unsubscribe.py must not import this module.)"""
    from publisher.channels.base import template_env
    from publisher.subscribers import open_db
    from publisher.unsubscribe import make_app

    # the confirmation email links readers to confirm_url: never a shipped placeholder
    settings.require_own("subscribe", "confirm_url", "the confirmation email links readers to it")
    db = open_db(settings)
    secret = settings.secret(mail_channel(), "secret_env")
    return make_app(secret, mail_table(settings)["list_id"], db, sender_name(settings),
                    subscribe=make_subscribe_app(settings, secret), env=template_env(settings),
                    on_unsubscribe=on_unsubscribe)
