"""What every provider module shares: the batch-sender interface the campaign calls, the HTTP
call with its failure classes, back-off, and the per-reader content.

A provider module (ses.py, postmark.py, mailgun.py) is one `Provider` subclass:

    prepare(batch_key, readers) -> payload      # no I/O; the call's body with every reader's own
                                                # unsubscribe link and List-Unsubscribe headers
    send(session, payload, readers) -> {email: Outcome}
    reconcile(session, batch_key, started, emails) -> set of emails the provider has
                                                # (only when `reconciles`; see docs/email.md)

`send` raises `Retry` (429 / 5xx / no connection: nothing was accepted; try again later),
`Lost` (the request went out and no reply came back: the provider may have it), `Fault` (the
whole call refused for a reason that is not the readers': sender, domain, content) or
`TransportError` (credentials or configuration: stop).
"""

from __future__ import annotations

import email.utils
import html
import random
import threading
import time
from dataclasses import dataclass

import requests

from publisher.errors import ConfigError, TransportError
from publisher.registry import mail_table

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
RETRY_AFTER_CAP = 300.0  # a Retry-After longer than this is waited for in 300 s steps (re-asked)


class Retry(Exception):
    """Nothing was accepted; try again after `after` seconds (Retry-After) or a back-off."""

    def __init__(self, message: str, after: float | None = None, code: int | None = None):
        super().__init__(message)
        self.after = after
        self.code = code


class Lost(Exception):
    """The request was sent and no reply came: the provider may or may not have accepted it."""


class Fault(Exception):
    """The whole call was refused for a reason that is not the readers' (the campaign's fault)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reader:
    email: str
    message_id: str  # <…@domain>, deterministic per (issue, reader)
    unsubscribe_url: str


@dataclass(frozen=True)
class Outcome:
    state: str  # sent | failed | pending
    code: int | None = None
    error: str | None = None


SENT = Outcome("sent")


def backoff(attempt: int) -> float:
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.75, 1.25)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), RETRY_AFTER_CAP))


def http(session: requests.Session, method: str, url: str, *, timeout: float, what: str,
         **kw) -> requests.Response:
    """One HTTP call. Raises Retry when it surely did not reach the provider (no connection) or
    the provider said so (429, 5xx), Lost when it was sent and no reply came; returns the
    response otherwise (the caller reads 2xx and 4xx)."""
    try:
        resp = session.request(method, url, timeout=(min(timeout, 10.0), timeout), **kw)
    except requests.exceptions.ConnectTimeout as exc:
        raise Retry(f"{what}: cannot connect: {exc}") from None
    except requests.exceptions.ConnectionError as exc:
        if _never_sent(exc):
            raise Retry(f"{what}: cannot connect: {_short(exc)}") from None
        raise Lost(f"{what}: connection lost before the reply: {_short(exc)}") from None
    except requests.exceptions.Timeout as exc:
        raise Lost(f"{what}: no reply within {timeout:g} s: {_short(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise Lost(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
    if resp.status_code == 429:
        raise Retry(f"{what}: 429 rate limited", retry_after(resp.headers.get("Retry-After")), 429)
    if resp.status_code >= 500:
        raise Retry(f"{what}: {resp.status_code} {resp.text[:200]!r}", retry_after(resp.headers.get("Retry-After")),
                    resp.status_code)
    return resp


def _never_sent(exc: Exception) -> bool:
    """A connection that was refused or never opened (so the request never left)."""
    import urllib3.exceptions

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None:
            e = e.reason
            continue
        e = e.__cause__ or e.__context__ or (e.args[0] if e.args and isinstance(e.args[0], BaseException) else None)
    return False


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


class RateLimiter:
    """At most `rate` messages a second over all threads (0 = no cap)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, n: int = 1) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(self.next, now)
            self.next = slot + self.interval * n
        if slot > now:
            time.sleep(slot - now)


@dataclass(frozen=True)
class Content:
    """The issue as the JSON APIs take it: everything but the reader's own parts."""

    issue: str
    subject: str
    from_header: str
    from_address: str
    reply_to: str
    list_id_header: str
    unsubscribe_mailto: str
    html: str  # with PLACEHOLDER where the reader's unsubscribe URL goes
    text: str

    def html_for(self, url: str) -> str:
        from publisher.mailmsg import PLACEHOLDER

        return self.html.replace(PLACEHOLDER, html.escape(url, quote=True))

    def text_for(self, url: str) -> str:
        from publisher.mailmsg import PLACEHOLDER

        return self.text.replace(PLACEHOLDER, url)

    def list_unsubscribe(self, url: str) -> str:
        return f"<{url}>" + (f", <{self.unsubscribe_mailto}>" if self.unsubscribe_mailto else "")


def content_of(rendition, settings, template) -> Content:
    """The Content of an email rendition (subject and sender as the MIME template has them)."""
    from publisher.mailmsg import from_header, list_id_tokens, text_part_of

    em = mail_table(settings)
    mailto = em["unsubscribe_mailto"]
    if mailto and not mailto.startswith("mailto:"):
        mailto = "mailto:" + mailto
    list_id = em["list_id"]
    return Content(issue=rendition.issue, subject=template.subject,
                   from_header=from_header(settings),
                   from_address=em["from_address"], reply_to=em["reply_to"],
                   list_id_header=" ".join(list_id_tokens(settings, list_id)),
                   unsubscribe_mailto=mailto, html=rendition.body, text=text_part_of(rendition))


def tag_of(issue: str) -> str:
    """The tag every message of `issue` carries at the provider (reconciliation searches it)."""
    return f"publisher-{issue}"


class Provider:
    """One email service provider's HTTP API (see the module docstring)."""

    name = ""
    batch_limit = 1  # the API's maximum recipients a call
    max_message_bytes = 0  # the API's maximum size of one message
    reconciles = False  # a message/event search exists to settle a lost reply
    table = ""

    def __init__(self, settings, content: Content, template):
        self.settings = settings
        self.content = content
        self.template = template  # publisher.mailmsg.MessageTemplate (raw MIME)
        cfg = settings[self.table]
        self.timeout = float(cfg["timeout"])
        self.max_retries = max(0, int(cfg["max_retries"]))
        self.concurrency = int(cfg["concurrency"])
        if self.concurrency < 1:
            raise ConfigError(f"[{self.table}] concurrency must be at least 1: fix it in {settings.where()}")
        size = int(cfg.get("batch_size", self.batch_limit))
        if not 1 <= size <= self.batch_limit:
            raise ConfigError(f"[{self.table}] batch_size must be 1 to {self.batch_limit} (the API's limit), "
                              f"got {size}: fix it in {settings.where()}")
        self.batch_size = size
        self.reconcile_delay = float(cfg.get("reconcile_delay", 0))
        self.rate = float(cfg.get("rate_per_second", 0))

    def describe(self) -> str:
        return self.name

    def prepare(self, batch_key: str, readers: list[Reader]):
        raise NotImplementedError

    def send(self, session: requests.Session, payload, readers: list[Reader]) -> dict[str, Outcome]:
        raise NotImplementedError

    def reconcile(self, session: requests.Session, batch_key: str, started: float, emails: list[str]) -> set[str]:
        raise NotImplementedError

    @staticmethod
    def fatal(what: str, resp: requests.Response, fix: str) -> TransportError:
        return TransportError(f"{what}: {resp.status_code} {resp.text[:300]!r}; {fix}")
