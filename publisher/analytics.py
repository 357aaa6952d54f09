"""What `publisher serve` adds for the report: the click redirect, the report behind a secret,
and the count of unsubscribes per issue.

    GET  /r/<issue>/<n>.<signature>   302 to link n of the issue, counted (per link, issue, UTC
                                      day); HEAD answers the same without counting (link checkers)
    GET  /report                      the campaign report (publisher/report.py), only when the
                                      variable named by [analytics] report_secret_env is set,
                                      behind HTTP Basic auth with that secret as the password

A redirect is refused with 400, and counted nowhere, unless the signature is genuine for this
issue, this number and a URL recorded for them when the issue was sent (publisher/clicks.py says
what "replayed" means). The Location is always that recorded URL: no part of the request chooses
where it points. Nothing about the reader is written: the log line names the issue and the link
number only.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from urllib.parse import quote

from publisher.clicks import PATH_RE, genuine

log = logging.getLogger("publisher.analytics")

REPORT_CACHE_SECONDS = 30.0
MIN_REPORT_SECRET = 16


def _plain(start_response, status: str, text: str, extra: list | None = None):
    data = text.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                            *(extra or [])])
    return [data]


def _location(url: str) -> str:
    """The recorded URL as a header value (non-ASCII percent-encoded; it was checked to hold no
    spaces or control characters when it was recorded)."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~-._")


def redirect_app(store, secret: str):
    """The WSGI app of /r/…: `store` an AnalyticsStore on the ledger."""

    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "method not allowed\n", [("Allow", "GET, HEAD")])
        m = PATH_RE.fullmatch(environ.get("PATH_INFO", ""))
        target = None
        if m:
            issue, number, sig = m.group("issue"), int(m.group("n")), m.group("sig")
            try:
                target = next((u for u in store.urls(issue, number) if genuine(secret, issue, number, u, sig)),
                              None)
                if target is None:  # a link recorded since this server cached the issue's links
                    target = next((u for u in store.urls(issue, number, fresh=True)
                                   if genuine(secret, issue, number, u, sig)), None)
            except Exception as exc:  # noqa: BLE001 - the database is down: say so, no traceback
                log.warning("click %s %d: the links cannot be read: %s", issue, number, exc)
                return _plain(start_response, "503 Service Unavailable", "try again in a moment\n",
                              [("Retry-After", "30")])
        if target is None:
            log.info("click refused")
            return _plain(start_response, "400 Bad Request", "this link is not valid\n")
        if method == "GET":
            try:
                store.count_click(issue, number, target)
                log.info("click %s %d", issue, number)
            except Exception as exc:  # noqa: BLE001 - the reader still gets the story; the log says what was lost
                log.warning("click %s %d not counted: %s", issue, number, exc)
        return _plain(start_response, "302 Found", f"{target}\n",
                      [("Location", _location(target)), ("Referrer-Policy", "no-referrer")])

    return app


def report_app(settings, secret: str):
    """The WSGI app of /report: HTTP Basic auth (any user name, `secret` as the password); the
    page is rebuilt at most every REPORT_CACHE_SECONDS. Failed attempts are limited per client."""
    from publisher.report import gather, to_html
    from publisher.subscribe import Limiter

    failures = Limiter(20, 3600.0)
    cache: dict[str, tuple[float, bytes]] = {}
    lock = threading.Lock()
    challenge = [("WWW-Authenticate", 'Basic realm="publisher report", charset="UTF-8"')]

    def authorized(environ) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Basic ") or len(header) > 1024:
            return False
        try:
            _, _, given = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))

    def app(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "method not allowed\n", [("Allow", "GET, HEAD")])
        ip = environ.get("REMOTE_ADDR", "")
        if not authorized(environ):
            if "HTTP_AUTHORIZATION" in environ and not failures.allow(ip):
                return _plain(start_response, "429 Too Many Requests", "too many attempts\n")
            return _plain(start_response, "401 Unauthorized", "the report needs its password\n", challenge)
        with lock:
            at, page = cache.get("page", (0.0, b""))
            if time.monotonic() - at > REPORT_CACHE_SECONDS:
                page = to_html(gather(settings), settings).encode("utf-8")
                cache["page"] = (time.monotonic(), page)
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page))),
                                  ("Cache-Control", "no-store, private"), ("X-Content-Type-Options", "nosniff"),
                                  ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer")])
        return [page]

    return app


def unsubscribe_counter(settings):
    """A callback for the unsubscribe endpoint: count an unsubscribe for the last issue sent to
    the address (none sent: counted under "" — it shows in no issue)."""
    from publisher.stores import location, open_ledger
    from publisher.stores.analytics import AnalyticsStore
    from publisher.stores.base import db_errors
    from publisher.stores.mail import MailStore

    location(settings, "ledger")  # a bad [database] url or no ledger path: an error at startup
    state: dict = {}
    lock = threading.Lock()

    def stores():
        with lock:
            if not state:
                ledger = open_ledger(settings)
                state["mail"], state["analytics"] = MailStore(ledger), AnalyticsStore(ledger)
        return state["mail"], state["analytics"]

    def counted(email: str) -> str:
        mail, analytics = stores()
        try:
            last = mail.delivered_issues(email, 1)
        except db_errors():  # a connection PostgreSQL dropped (restart): a read is safe to ask again
            last = mail.delivered_issues(email, 1)
        issue = last[0] if last else ""
        analytics.count_unsubscribe(issue)
        return issue

    return counted


def serve_app(settings):
    """What `publisher serve` runs: the unsubscribe and subscribe app
    (publisher.subscribe.app_from_settings, unsubscribes counted per issue) with /r/ when
    [analytics] clicks is on and /report when its secret is set."""
    import os

    from publisher.errors import ConfigError
    from publisher.subscribe import app_from_settings

    base = app_from_settings(settings, on_unsubscribe=unsubscribe_counter(settings))
    redirect = report = None
    if settings["analytics"]["clicks"]:
        from publisher.stores import open_ledger
        from publisher.stores.analytics import AnalyticsStore

        redirect = redirect_app(AnalyticsStore(open_ledger(settings)), settings.secret("analytics", "secret_env"))
    var = settings["analytics"]["report_secret_env"]
    if var and os.environ.get(var):
        if len(os.environ[var]) < MIN_REPORT_SECRET:
            raise ConfigError(f"environment variable {var} ([analytics] report_secret_env) is shorter than "
                              f"{MIN_REPORT_SECRET} characters: use a long random password, e.g. "
                              "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`")
        report = report_app(settings, os.environ[var])

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if redirect is not None and path.startswith("/r/"):
            return redirect(environ, start_response)
        if report is not None and path.rstrip("/") == "/report":
            return report(environ, start_response)
        return base(environ, start_response)

    app.routes = {"redirect": redirect is not None, "report": report is not None}
    return app
