"""Email delivery: one campaign per issue over SMTP, exactly once per (issue, recipient).

Ledger table `email_sends` (same SQLite file as `pushes`, WAL), one row per (issue, email):

    pending → sending → sent | failed          (5xx: failed, never retried)
                     ↘ ambiguous               (see below)

For each message a connection sends MAIL FROM, RCPT TO, DATA and the whole body EXCEPT the final
`.`; then commits `sending`; then sends `.\\r\\n`; on the 250 reply it records `sent`. A 4xx
anywhere, or a dropped connection before the final dot, puts the row back to `pending` and the
message is retried with bounded exponential backoff ([smtp] max_retries).

**One thread drives every connection** (`[smtp] connections` coroutines on one asyncio loop,
publisher/transports/smtp.py for the client), so nothing is handed between threads for every
socket write and commit. What the connections record in one turn of the loop is committed in one
transaction (`_record`, `_flush`): a `sending` is awaited before its final dot leaves; a `sent`
is not awaited, and is committed at the latest with its connection's next `sending`.

**The ambiguous window.** A row found in `sending` — the process died, or the connection dropped
after the final dot and before the reply, or before its `sent` was committed — may or may not
have been accepted by the server. At most one message per connection is in that window at any
moment, so after a crash at most [smtp] connections rows are ambiguous. [email] ambiguous
decides what a re-run does with them:

* `resend` (default): send them again — nobody is skipped; at most `connections` recipients get
  a second copy, with the same Message-ID (mail systems that de-duplicate by Message-ID,
  Gmail among them, show it once).
* `skip`: mark them `ambiguous` and never send again — nobody gets two copies; at most
  `connections` recipients may get none. They are listed in the summary either way.

A recipient whose subscriber row is no longer active (unsubscribed or bounced) is never mailed.

**Failures are classified** (`classify`): a permanent failure that names the recipient (unknown
mailbox 5.1.x, disabled 5.2.1) is `failed` and bounces the address — at the end of a run that did
not trip the breaker; one that is the recipient's alone but not proof of a dead address (mailbox
full 5.2.2, 5.4.x routing) is `failed` without a bounce; anything that says the server or the
sender is the problem (MAIL FROM refused, relay denied, 5.7.x policy, 5.3.x/5.5.x, 5.6.x content,
a 5xx at end of DATA) is a *campaign fault*: the row stays `pending`. The **circuit breaker**
stops the campaign after BREAKER_FAULTS campaign faults in a row, or when most of the run fails
the same way (`signature`: stage, code, enhanced code and the reply's shape, ids normalised
away): at least BREAKER_SAME of this run's last BREAKER_WINDOW outcomes, and more than half of
them (at the end of a small run, BREAKER_SMALL). When it trips nobody is bounced, the failures
of that kind go back to `pending`, the push is recorded failed, and a re-run after the fix resumes.

**Promises checked at the point of send** (`Campaign._may_send`, just before a message starts;
the first and the last also before its final dot): the lease is still ours (a process paused
past its lease stops on waking; what it completes after a takeover is counted `stale`); the
reader is still active (an unsubscribe answered 200 holds from then on); the ledger's disk has
room (a DiskReserve beside the ledger is freed when it fills up, so what is in flight is
recorded, and the run stops).
Before sending, `check_ledger` compares the ledger's identity with the one the subscribers
database remembers for this campaign: a lost ledger never re-sends silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from publisher.addresses import valid_address
from publisher.channels.base import Rendition, check_rendition
from publisher.errors import ConfigError, PublisherError, TransportError
from publisher.mailmsg import MessageTemplate, build_template, check_unsubscribe_url
from publisher.refs import is_https
from publisher.registry import mail_channel, mail_table
from publisher.stores import ledger as ledger_store
from publisher.stores import open_subscribers
from publisher.stores.base import DiskReserve, StoreError, error_name
from publisher.stores.ledger import Ledger
from publisher.stores.mail import FINAL_STATES, MailStore
from publisher.stores.subscribers import SubscriberDB
from publisher.tokens import verp_sender
from publisher.transports.base import PushContext, PushResult, Transport
from publisher.transports.delivery import (
    BOUNCE,
    CAMPAIGN,
    SKIPPED_NOTE,
    Breaker,
    check_ledger,
    classify,
    require_recipients,
    signature,
)
from publisher.transports.providers import provider_name
from publisher.transports.smtp import (
    AfterDot,
    Permanent,
    Session,
    SmtpConfig,
    Temporary,
    drop,
    run_loop,
    send_message,
    transmit,
)

log = logging.getLogger("publisher.email")

BACKOFF_BASE = 1.0  # seconds; attempt n waits BACKOFF_BASE * 2**(n-1) (± 25 %), capped
BACKOFF_CAP = 60.0
PAGE = 500
_NOTHING = object()


class Durations:
    """Seconds, summarised in constant memory (a campaign of a million messages keeps no list):
    the count, the maximum, and quantiles within 2 % (log-spaced buckets)."""

    RATIO = 1.02
    _LOG_RATIO = math.log(RATIO)

    def __init__(self) -> None:
        self.count, self.max, self.buckets = 0, 0.0, {}

    def add(self, seconds: float) -> None:
        self.count += 1
        self.max = max(self.max, seconds)
        key = math.floor(math.log(max(seconds, 1e-7)) / self._LOG_RATIO)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def quantile(self, q: float) -> float | None:
        if not self.count:
            return None
        if q >= 1:
            return self.max
        rank, seen = q * (self.count - 1), 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen > rank:
                return min(self.RATIO ** (key + 0.5), self.max)
        return self.max

    def __bool__(self) -> bool:
        return self.count > 0


@dataclass
class CampaignStats:
    total: int = 0  # active subscribers when the run started
    sent: int = 0  # sent by this run
    already: int = 0  # skipped: sent (or failed/ambiguous) by an earlier run
    failed: int = 0  # 5xx by this run, recipient-level (campaign faults are not counted here)
    bounced: int = 0  # subscribers marked bounced at the end of this run
    faults: int = 0  # campaign-level 5xx by this run (rows left pending)
    resent: int = 0  # ambiguous messages sent again by this run (from a crash or a lost reply)
    deferred: int = 0  # 4xx / connection trouble after max_retries: left pending
    withdrawn: int = 0  # unsubscribed (or bounced, forgotten) during the run: not sent
    stale: int = 0  # sent after another process took the lease over: maybe sent twice (ambiguous)
    unrecorded: list[str] = field(default_factory=list)  # accepted by the server, `sent` not recorded
    tripped: str | None = None  # why the circuit breaker stopped the campaign
    ambiguous: list[str] = field(default_factory=list)  # rows found in `sending` at start
    ambiguous_policy: str = "resend"
    aborted: str | None = None
    lease_lost: bool = False  # another process took this campaign over
    windows: Durations = field(default_factory=Durations)  # seconds `sending` → `sent` committed
    accept_to_commit: Durations = field(default_factory=Durations)  # 250 received → `sent` committed
    elapsed: float = 0.0
    remaining: int = 0
    note: str = ""  # e.g. recorded as sent without sending, after a lost ledger

    def summary(self) -> str:
        s = (f"email: sent {self.sent}, failed {self.failed}, bounced {self.bounced}, "
             f"ambiguous-resent {self.resent}, skipped {self.already} (done earlier), "
             f"remaining {self.remaining}")
        if self.faults:
            s += f"; {self.faults} refused by the server for a reason not the reader's (left pending)"
        if self.ambiguous:
            s += f"; {len(self.ambiguous)} ambiguous from an interrupted run ({self.ambiguous_policy})"
        if self.withdrawn:
            s += f"; {self.withdrawn} unsubscribed during the campaign (not sent)"
        if self.stale:
            s += (f"; {self.stale} sent after another process took this campaign over "
                  "(ambiguous: those readers may have two copies)")
        if self.unrecorded:
            s += (f"; {len(self.unrecorded)} accepted by the server but not recorded in the ledger "
                  f"(ambiguous: {self.ambiguous_policy} on the next run)")
        if self.note:
            s += f"; {self.note}"
        return s

    def as_details(self) -> dict:
        d = {"provider": "smtp", "sent": self.sent, "failed": self.failed, "bounced": self.bounced,
             "faults": self.faults,
             "ambiguous_resent": self.resent, "skipped": self.already,
             "remaining": self.remaining, "ambiguous": len(self.ambiguous),
             "ambiguous_policy": self.ambiguous_policy, "elapsed_s": round(self.elapsed, 3)}
        if self.withdrawn:
            d["withdrawn"] = self.withdrawn
        if self.unrecorded:
            d["unrecorded"] = len(self.unrecorded)
        if self.windows:
            d["window_max_ms"] = round(self.windows.max * 1000, 3)
            d["window_p50_ms"] = round(self.windows.quantile(0.5) * 1000, 3)
        return d


def envelope_sender(template: MessageTemplate, rcpt: str) -> str:
    """The envelope sender (MAIL FROM) of the message to `rcpt`: the one place to change it
    (e.g. a VERP Return-Path per recipient)."""
    return template.envelope_from


class RateLimiter:
    """At most `rate` message starts a second over all connections (0: no cap)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Until this message's slot; `sleep` waits (and may end early when the run stops)."""
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await sleep(slot - now)


def backoff(attempt: int) -> float:
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.75, 1.25)


# -- the campaign -------------------------------------------------------------------------------


class Withdrawn(Exception):
    """The recipient is no longer active (unsubscribed, bounced, forgotten): not sent."""


class LeaseLost(Exception):
    """Another process took this campaign over (we were paused past the lease)."""


class _Mark(NamedTuple):
    """A state queued for the ledger (Campaign._record)."""

    email: str
    state: str
    message_id: str
    code: int | None
    error: str | None
    attempt: bool
    done: asyncio.Future | None  # awaited (`sending`)
    timing: tuple[float, float] | None


@dataclass
class _Connection:
    """One campaign connection and what is in flight on it."""

    smtp: Session | None = None
    connect_failures: int = 0
    chained: str | None = None  # the email whose MAIL/RCPT/DATA went out with the last dot
    nxt: object = _NOTHING  # an item taken from the queue ahead of time


class Campaign:
    """Sends one issue to every active subscriber not yet done (see the module docstring).

    One thread drives every connection: each is a coroutine (`_connection`) on one asyncio loop,
    and the recipients come from `_feed`. The database calls run on the loop between the socket
    waits; none of them waits on the network but PostgreSQL's, which is as short as a commit."""

    def __init__(self, template: MessageTemplate, settings, ledger: Ledger, *, secret: str,
                 progress: Callable[[int, int], None] | None = None, smtp: SmtpConfig | None = None,
                 ambiguous: str | None = None, after_ledger_loss: str | None = None):
        self.t = template
        self.settings = settings
        self.ledger = ledger
        self.secret = secret
        self.cfg = smtp or SmtpConfig.from_settings(settings)
        self.subs = open_subscribers(settings)
        self.progress = progress
        self.policy = ambiguous or mail_table(settings).get("ambiguous", "resend")
        if self.policy not in ("resend", "skip"):
            raise ConfigError(f"[{mail_channel()}] ambiguous must be resend or skip, got {self.policy!r}: "
                              f"fix it in {settings.where()}")
        self.after_ledger_loss = after_ledger_loss  # None (refuse), "resend" or "skip"
        self.stats = CampaignStats(ambiguous_policy=self.policy)
        self.lease = None  # a publisher.stores.ledger.Lease: stop when it is lost
        self.source = None  # publisher.campaign.Shared: recipients claimed from a shared campaign
        self.breaker = Breaker()  # publisher/transports/delivery.py
        self.stop = threading.Event()  # also read by the shared source between its claims
        self.woken: asyncio.Event | None = None  # set with `stop` while the loop runs: ends the waits
        self.limiter = RateLimiter(self.cfg.rate)
        self.done = 0
        self.queued: list[_Mark] = []  # marks not yet committed (_record)
        self.failed_commit: Exception | None = None  # what made a commit of them fail
        self.mail = MailStore(ledger)
        self.reserve = DiskReserve(ledger.path)
        # [bounces] address set: a VERP envelope sender per recipient (publisher/tokens.py)
        self.envelope = verp_sender(settings, secret, template.list_id, template.issue, self.subs)

    # the ledger: what the connections record in one turn of the loop is one transaction
    def _mark(self, email: str, state: str, *, code: int | None = None, error: str | None = None,
              attempt: bool = False, message_id: str | None = None) -> None:
        """Record one state now (after whatever is queued: the order of the marks is kept)."""
        self._flush()
        self._write([(email, state, message_id or self.t.message_id(email), code, error, attempt)])

    def _write(self, rows: list[tuple]) -> None:
        try:
            self.mail.mark_many(self.t.issue, rows)
        except StoreError as exc:
            if not exc.disk_full or not self.reserve.release():
                raise
            self._abort(str(exc))  # the disk is full: free our reserve, record this, stop
            self.mail.mark_many(self.t.issue, rows)

    def _record(self, email: str, state: str, message_id: str, *, code: int | None = None,
                attempt: bool = False, timing: tuple[float, float] | None = None) -> asyncio.Future | None:
        """Queue one state for the commit at the end of this turn of the loop. `sending` returns
        a future, done when it is committed: the final dot waits for it. `sent` is not waited
        for: it is committed with the marks of the next turn, at the latest with its
        connection's next `sending`, so after a crash at most one message per connection is
        still found `sending`. `timing`: (sending committed, 250 received), for the stats."""
        done = self.loop.create_future() if state == "sending" else None
        if done is not None and self.failed_commit is not None:
            # a commit failed: its `sent`s are still `sending`, so no other message may begin its
            # ambiguous window on this run (one per connection, crash or not)
            done.set_exception(self.failed_commit)
            return done
        self.queued.append(_Mark(email, state, message_id, code, None, attempt, done, timing))
        if len(self.queued) == 1:
            self.loop.call_soon(self._flush)
        return done

    def _flush(self) -> None:
        rows, self.queued = self.queued, []
        if not rows:
            return
        try:
            self._write([row[:6] for row in rows])  # the columns of MailStore.mark_many
        except Exception as exc:  # the disk is full, the database went away: the run stops
            self.failed_commit = exc
            if isinstance(exc, StoreError):  # tried again at the end of the run (_record_unrecorded)
                self.stats.unrecorded += [row.email for row in rows if row.state == "sent"]
            for row in rows:
                if row.done is not None and not row.done.done():
                    row.done.set_exception(exc)
            self._abort(str(exc) if isinstance(exc, PublisherError) else f"{error_name(exc)}: {exc}")
            return
        now = time.monotonic()
        for row in rows:
            if row.done is not None and not row.done.done():
                row.done.set_result(None)
            if row.timing:
                self.stats.windows.add(now - row.timing[0])
                self.stats.accept_to_commit.add(now - row.timing[1])

    def recover(self) -> None:
        if self.source is not None:  # a shared campaign: only the rows of senders found dead
            rows = self.source.reap(self.policy)
        else:
            rows = self.mail.in_flight(self.t.issue)
        self.stats.ambiguous = rows
        if not rows:
            return
        new = "pending" if self.policy == "resend" else "ambiguous"
        if new == "pending":
            self.stats.resent += len(rows)
        if self.source is None:
            self.mail.settle_in_flight(self.t.issue, new)
        log.warning("%d message(s) were in flight when an earlier run stopped (%s): %s",
                    len(rows), "re-sending" if new == "pending" else "treated as sent", ", ".join(rows[:10]))

    def check_ledger(self) -> bool:
        """publisher.transports.delivery.check_ledger for this campaign."""
        return check_ledger(self.subs, self.ledger, lambda: self.mail.counts(self.t.issue), self.t.issue,
                            mail_channel(), self.after_ledger_loss)

    async def _send_all(self) -> None:
        """The connections and their feed, until the feed ends or the run stops."""
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        if self.stop.is_set():
            self.woken.set()
        # a shared campaign's recipients are claimed: hold no more than a batch ahead, or this
        # sender keeps hundreds from the others and the campaign ends on one sender's queue
        q: asyncio.Queue = asyncio.Queue(maxsize=4 * self.cfg.connections + (0 if self.source else PAGE))
        conns = [asyncio.create_task(self._connection(q)) for _ in range(self.cfg.connections)]
        self.tasks = [asyncio.create_task(self._feed(q)), *conns]
        restore = self._catch_signals()
        try:
            await asyncio.wait(conns)
        finally:
            restore()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            self._flush()

    def _catch_signals(self) -> Callable[[], None]:
        """Ctrl-C, and SIGTERM (systemd's stop), end the run once the messages in flight are
        done (10 s at most); a second one ends it at once. Returns what puts the previous
        handlers back. (Signals reach the main thread only: elsewhere there is nothing to do.)"""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            self.loop.add_signal_handler(sig, self._interrupt)

        def restore() -> None:
            for sig, handler in previous.items():
                self.loop.remove_signal_handler(sig)
                signal.signal(sig, handler)
        return restore

    def _interrupt(self) -> None:
        if self.interrupted:  # what is in flight stays `sending`: ambiguous, counted by the next run
            for task in self.tasks:
                task.cancel()
            return
        self.interrupted = True
        self._abort("interrupted")
        self.loop.call_later(10, self._interrupt)

    async def _feed(self, q: asyncio.Queue) -> None:
        """Every recipient not yet done, in order, then one None per connection."""
        try:
            pages = self.source.pages(self.stop) if self.source else self.subs.iter_pages("active", PAGE)
            for page in pages:
                if self.stop.is_set():
                    break
                emails = [s.email for s in page]
                done = {e.lower() for e in self.mail.final(self.t.issue, emails)}
                for e in emails:
                    if e.lower() in done:
                        self.stats.already += 1
                        self.done += 1
                    else:
                        await q.put(e)
                    if self.stop.is_set():
                        break
        except Exception as exc:
            self._abort(str(exc) if isinstance(exc, PublisherError) else f"{error_name(exc)}: {exc}")
        for _ in range(self.cfg.connections):  # (after a stop the connections end by themselves)
            await q.put(None)

    async def _connection(self, q: asyncio.Queue) -> None:
        w = _Connection()
        clean = False
        try:
            while not self.stop.is_set():
                if w.nxt is not _NOTHING:
                    email, w.nxt = w.nxt, _NOTHING
                else:
                    email = await q.get()
                if email is None:
                    clean = True
                    return
                await self._deliver(w, q, email)
                self.done += 1
                if self.progress:
                    self.progress(self.done, self.stats.total)
        except Exception as exc:  # the database went away (team mode: the worker reconnects), a bug
            log.debug("a connection stopped", exc_info=True)
            self._abort(f"{error_name(exc)}: {exc}")
        finally:
            if w.smtp is not None:
                if w.chained is not None or not clean:  # maybe a half-open transaction: just drop it
                    w.smtp.close()
                else:
                    await w.smtp.quit()

    async def _deliver(self, w: _Connection, q: asyncio.Queue, email: str) -> None:
        """Send to one reader over `w`, retrying what may be retried; record the outcome."""
        attempt = 0
        while not self.stop.is_set():
            attempt += 1
            group_sent, w.chained = (w.chained == email and w.smtp is not None), None
            if w.nxt is _NOTHING and not q.empty():
                w.nxt = q.get_nowait()
            try:
                if w.smtp is None:
                    w.smtp = await Session.open(self.cfg)
                    w.connect_failures = 0
                next_rcpt = w.nxt if isinstance(w.nxt, str) else None
                if await self._send_one(w.smtp, email, group_sent=group_sent, next_rcpt=next_rcpt):
                    w.chained = next_rcpt
                return
            except Withdrawn:  # checked before anything of it went out
                self.stats.withdrawn += 1
                return
            except Temporary as exc:
                if await self._temporary(w, email, exc, attempt):
                    return
            except AfterDot as exc:
                if await self._after_dot(w, email, exc, attempt):
                    return
            except Permanent as exc:
                self._permanent(email, exc)
                await self._reset(w)
                return
            except LeaseLost as exc:
                w.smtp = drop(w.smtp)  # a message half sent is discarded by the server
                self.stats.lease_lost = True
                self._abort(str(exc))
                return
            except (TransportError, StoreError) as exc:
                w.smtp = drop(w.smtp)  # maybe mid-message: the server discards it
                self._abort(str(exc))
                return

    async def _reset(self, w: _Connection) -> None:
        """RSET after a refused transaction; a connection that cannot is closed."""
        if w.smtp is None:
            return
        try:
            await w.smtp.rset()
        except (OSError, Temporary, Permanent):
            w.smtp = drop(w.smtp)

    async def _temporary(self, w: _Connection, email: str, exc: Temporary, attempt: int) -> bool:
        """A temporary failure: True when this reader is done with (deferred, or the run aborted);
        False after waiting to try again."""
        if w.smtp is not None and "connection lost" in str(exc):
            w.smtp = drop(w.smtp)
        elif w.smtp is None:
            w.connect_failures += 1
        else:
            await self._reset(w)
        if w.connect_failures > self.cfg.max_retries:
            self._abort(f"cannot connect to the SMTP server: {exc}")
            return True
        if attempt > self.cfg.max_retries:
            log.warning("%s: deferred after %d attempts: %s", email, attempt, exc)
            self._mark(email, "pending", error=str(exc)[:500])
            self.stats.deferred += 1
            return True
        log.info("%s: %s; retry %d in a moment", email, exc, attempt)
        await self._pause(backoff(attempt))
        return False

    async def _after_dot(self, w: _Connection, email: str, exc: AfterDot, attempt: int) -> bool:
        """The connection died after the final dot: whether the reader got it is unknown. The
        policy decides (resend or skip); True when this reader is done with."""
        w.smtp = drop(w.smtp)
        if self.policy == "skip":
            self._mark(email, "ambiguous", error=str(exc)[:500])
            self.stats.ambiguous.append(email)
            return True
        self.stats.resent += 1  # counted when it is sent again
        if attempt > self.cfg.max_retries:
            self._mark(email, "pending", error=str(exc)[:500])
            self.stats.deferred += 1
            return True
        await self._pause(backoff(attempt))
        return False

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the run stops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.woken.wait()

    def _permanent(self, email: str, exc: Permanent) -> None:
        """Record a permanent failure by its class and feed the circuit breaker."""
        error = str(exc)[:500]
        if exc.kind == CAMPAIGN:
            self._mark(email, "pending", code=exc.code, error=error)
            log.warning("%s: refused for a reason that is not the reader's: %s", email, exc)
            self.stats.faults += 1
        else:
            self._mark(email, "failed", code=exc.code, error=error)
            log.warning("%s: failed: %s", email, exc)
            self.stats.failed += 1
        trip = self.breaker.failure(signature(exc.code, error), campaign=exc.kind == CAMPAIGN, what=exc)
        if trip:
            self.stats.tripped = trip
            self._abort(f"circuit breaker: {trip}")

    def _after_run(self) -> None:
        """Tripped: the failures of the kind that tripped it go back to pending, nobody bounced.
        Otherwise: every recipient failure of this issue that proves a dead address bounces it
        (idempotent, so a crash before this point is mended by the next run)."""
        rows = self.mail.failed(self.t.issue)
        late = self.breaker.at_end(lambda sig: next(
            (f"{r[2]}" for r in rows if signature(r[1], r[2] or "") == sig), sig))
        if late:  # a small run: most of it failed the same way
            self.stats.tripped = late
            self.stats.aborted = self.stats.aborted or f"circuit breaker: {late}"
        if self.stats.tripped:
            sig = self.breaker.signature
            back = [r[0] for r in rows if classify(r[1], r[2] or "") == CAMPAIGN
                    or (sig and signature(r[1], r[2] or "") == sig)]
            self.mail.unfail(self.t.issue, back)
            self.stats.failed = max(0, self.stats.failed - len(back))
            return
        for email, code, error in rows:
            if classify(code, error or "") == BOUNCE and \
                    self.subs.set_state(email, "bounced", only_from=("active",)):
                self.stats.bounced += 1

    def _abort(self, reason: str) -> None:
        if self.stats.aborted is None:
            self.stats.aborted = reason
        self.stop.set()
        if self.woken is not None:
            self.woken.set()

    def _may_send(self, email: str) -> None:
        """Checked just before a message to `email` starts (its MAIL FROM is written): the reader
        is still active (an unsubscribe answered 200 holds from that moment), and `_still_ours`."""
        self._still_ours()
        if not self.subs.is_active(email):
            raise Withdrawn(email)

    def _still_ours(self) -> None:
        """Checked before a message starts and again before its final dot: the lease is still
        ours (we may have been paused past it), the ledger's disk has room."""
        if self.lease is not None and not self.lease.valid():
            raise LeaseLost("another process took this campaign over while this one was stopped or "
                            "paused past its lease; this one stopped sending")
        if self.reserve.low():
            self._mark_disk_full()

    def _mark_disk_full(self) -> None:
        self.reserve.release()
        raise StoreError(self.ledger.path, OSError(errno.ENOSPC, "the disk is full (less than "
                                                   f"{DiskReserve.LOW // 1024} KB free)"))

    async def _send_one(self, smtp: Session, email: str, *, group_sent: bool = False,
                        next_rcpt: str | None = None) -> bool:
        from publisher.mailmsg import unsubscribe_url_for

        await self.limiter.wait(self._pause)  # first: what is checked next holds when the message starts
        if not group_sent:
            if self.stop.is_set():
                return False  # the run stopped while it waited for its slot: not started
            self._may_send(email)
        mid = self.t.message_id(email)  # one digest a message: the message and its two marks
        msg = self.t.render(email, unsubscribe_url_for(self.settings, email, self.secret), wire=True, message_id=mid)
        marked: list[float] = []

        async def before_dot() -> bool:
            self._still_ours()
            await self._record(email, "sending", mid, attempt=True)
            marked.append(time.monotonic())
            if next_rcpt is None or self.stop.is_set():
                return False
            try:  # the next message's MAIL/RCPT/DATA would go out with this dot: it starts now
                return self.subs.is_active(next_rcpt)
            except Exception:  # (PostgreSQL's errors too: `sending` is committed, this dot must leave)
                return False  # not chained: its own start will say what is wrong

        try:
            sender = self.envelope or (lambda rcpt: envelope_sender(self.t, rcpt))
            accepted, chained = await transmit(smtp, sender(email), email, msg, before_dot, stuffed=True,
                                               group_sent=group_sent, next_rcpt=next_rcpt,
                                               next_sender=sender(next_rcpt) if next_rcpt else None)
        except Temporary as exc:
            if marked:  # the server answered 4xx to the final dot: it does not have the message
                self._mark(email, "pending", error=str(exc)[:500], message_id=mid)
            raise
        stale = self.lease is not None and self.lease.taken_over()
        self._record(email, "sent", mid, code=250, timing=(marked[0], accepted))
        self.breaker.success()
        self.stats.sent += 1
        if stale:
            self.stats.stale += 1
            raise LeaseLost("another process took this campaign over while this one was paused; this "
                            "one stopped sending")
        return chained

    def run(self) -> CampaignStats:
        start = time.monotonic()
        self.stats.total = require_recipients(self.subs)
        if not self.check_ledger():
            self.stats.note = SKIPPED_NOTE
            return self.stats
        self.recover()
        self.reserve.take()
        self.interrupted = False
        try:
            try:
                run_loop(self._send_all())
            except KeyboardInterrupt:  # raised outside the campaign's own handlers
                self.interrupted = True
                self._abort("interrupted")
            finally:
                self.mail.close()  # the senders' writer connection
            if self.interrupted:
                raise KeyboardInterrupt
            self.reserve.release()  # room for the bookkeeping below, on a nearly full disk
            self._record_unrecorded()
            if self.stats.lease_lost:
                return self.stats  # the campaign is the new holder's now
            self._after_run()
            self.stats.remaining = self.remaining()
            finished = not self.stats.aborted and not self.stats.remaining
            self.subs.mark_campaign(self.t.issue, self.ledger.identity(), "done" if finished else "sending")
        finally:
            self.reserve.release()
            self.stats.elapsed = time.monotonic() - start
        return self.stats

    def _record_unrecorded(self) -> None:
        """Messages the server accepted whose `sent` could not be written (disk full): try once
        more now that the reserve is free; those still not written stay `sending` (ambiguous)."""
        for email in list(self.stats.unrecorded):
            try:
                self._mark(email, "sent", code=250)
            except StoreError:
                continue
            self.stats.unrecorded.remove(email)

    def remaining(self) -> int:
        """Active subscribers without a final row for this issue (streamed, page by page); in a
        shared campaign, its recipients pending or in flight."""
        if self.source is not None:
            return self.source.store.open_rows(self.t.issue)
        left = 0
        for page in self.subs.iter_pages("active", PAGE):
            emails = [s.email for s in page]
            left += len(emails) - len(self.mail.final(self.t.issue, emails))
        return left


def run_campaign(rendition: Rendition, settings, ledger: Ledger, *, progress=None,
                 ambiguous: str | None = None, lease=None) -> CampaignStats:
    """Send `rendition` to every active subscriber not yet done; the standalone entry point.
    `lease`: the (issue, mail channel) lease the caller holds (push_issue takes it), if any."""
    check_unsubscribe_url(settings)
    secret = settings.secret(mail_channel(), "secret_env")
    template = build_template(rendition, settings)
    campaign = Campaign(template, settings, ledger, secret=secret, progress=progress, ambiguous=ambiguous)
    campaign.lease = lease
    return campaign.run()


def send_test(rendition: Rendition, settings, to: str) -> str:
    """One copy to `to`, subject prefixed [TEST]; the campaign ledger is not touched."""
    from publisher.mailmsg import unsubscribe_url_for

    if not valid_address(to):
        raise ConfigError(f"--to {to!r} is not an email address")
    check_unsubscribe_url(settings)
    secret = settings.secret(mail_channel(), "secret_env")
    cfg = SmtpConfig.from_settings(settings)
    template = build_template(rendition, settings, subject_prefix="[TEST] ")
    msg = template.render(to, unsubscribe_url_for(settings, to, secret))
    last: Exception | None = None
    for attempt in range(1, cfg.max_retries + 2):
        try:
            send_message(cfg, envelope_sender(template, to), to, msg)
            return template.message_id(to)
        except (Temporary, AfterDot) as exc:
            last = exc
            time.sleep(backoff(attempt))
        except Permanent as exc:
            raise TransportError(f"test message to {to} refused: {exc}") from None
    raise TransportError(f"test message to {to} not sent after {cfg.max_retries + 1} attempts: {last}")


def campaign_status(ledger: Ledger, issue: str) -> dict[str, int]:
    return MailStore(ledger).counts(issue)


def _raise_if_stopped(stats: CampaignStats, issue: str) -> None:
    """A campaign that did not finish is a TransportError (resumable) saying what stopped it."""
    if stats.lease_lost:
        exc = TransportError(
            f"{stats.summary()}; stopped: another process took this campaign over while this one "
            f"was paused past its lease ({ledger_store.LEASE_STALE:.0f} s without heartbeat). "
            f"{stats.stale} message(s) this process sent after that are counted as ambiguous "
            f"(`publisher status {issue}`); the other process goes on with the rest")
        exc.details = {"stale_sender_ambiguous": stats.stale}
        exc.lease_lost = True
        raise exc
    if stats.aborted or stats.remaining or stats.unrecorded:
        why = stats.aborted or (f"{stats.faults} message(s) refused by the server for a reason that is "
                                "not the reader's" if stats.faults else
                                f"{stats.deferred} message(s) deferred after [smtp] max_retries"
                                if stats.deferred else "some messages could not be recorded")
        fix = (f" Fix the SMTP server or the sender ([{mail_channel()}] from_address, [smtp]) first; nobody was "
               "marked bounced." if stats.tripped or stats.faults else "")
        exc = TransportError(f"{stats.summary()}; stopped: {why}.{fix} Run the push again to resume "
                             "(recipients already sent are skipped)")
        exc.details = stats.as_details()
        raise exc


# -- progress display ---------------------------------------------------------------------------


class _Lines:
    """Progress as a line `email: done/total` on stderr every 5 s and at the end (the default when
    the caller passes no progress callback; `publisher push` draws a bar on a terminal instead)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= 5 or done == total:
            self.last = now
            print(f"{mail_channel()}: {done}/{total}", file=sys.stderr, flush=True)


def _refuse_unreachable_images(rendition: Rendition) -> None:
    """Readers would see broken images: refuse before anything is sent (the channel's own `check`,
    its "image" rule, is the one judge)."""
    bad = [v.value for v in check_rendition(rendition) if v.what == "image"]
    if bad:
        raise TransportError(f"the email's image {bad[0]!r} is not a public http(s) URL, so no mail client "
                             "can show it; nothing was sent. Set [newsletter] image_base_url to where the "
                             "issue's images are published (`{date}` in it is the issue's date), or use "
                             "https:// image URLs in the issue")


class EmailTransport(Transport):
    channel = "mail"  # the kind it is (like "git", "outbox"): it carries the channel that mails subscribers

    @classmethod
    def check_config(cls, settings) -> None:
        for key in ("from_address", "unsubscribe_url", "list_id"):  # no shipped placeholder reaches readers
            settings.require_own(mail_channel(), key, "subscribers would see it: set it before pushing email")

    @classmethod
    def counts(cls, ledger, record) -> dict[str, int]:
        """The campaign's recipients by state, and the last run's bounced / ambiguous_resent."""
        counts = campaign_status(ledger, record.issue)
        d = record.details
        out = {k: counts[k] for k in ("sent", "failed", "pending", "ambiguous") if counts.get(k)}
        out.update({k: int(d[k]) for k in ("bounced", "ambiguous_resent", "stale_sender_ambiguous",
                                           "withdrawn", "unrecorded", "reconciled") if k in d})
        return out

    @classmethod
    def via(cls, record) -> str | None:
        """smtp or the provider that carried the campaign (recorded in the push's details)."""
        return record.details.get("provider")

    @classmethod
    def report(cls, settings, ledger, issue, push) -> dict:
        from publisher.transports.mailreport import numbers

        return numbers(settings, ledger, issue, push)

    @classmethod
    def lost_pushes(cls, settings, ledger, slug, records) -> list[dict]:
        """Campaigns the subscribers database knows were sent (or being sent) through another
        ledger, or that this ledger does not record as finished."""
        channel = mail_channel()
        path = settings.path(channel, "subscribers_db")
        if path is None or not Path(path).exists():
            return []
        ident = ledger.identity() if ledger is not None else None
        rows = []
        for mark in SubscriberDB(path).campaigns():
            if slug and mark.issue != slug:
                continue
            if mark.ledger_id == ident and (mark.state != "done" or (mark.issue, channel) in records):
                continue
            why = ("the ledger was emptied, deleted or replaced" if mark.ledger_id != ident else
                   "the ledger has no record of it (restored from a copy older than the campaign?)")
            said = "sent" if mark.state == "done" else "sending"
            rows.append({"issue": mark.issue, "channel": channel, "state": "unknown", "attempts": 0,
                         "remote_id": None, "url": None,
                         "counts": {}, "updated": mark.updated_at,
                         "last_error": f"the subscribers database says {said} since {mark.started_at}; "
                                       f"{why}: a push refuses until you restore it or pass "
                                       "--after-ledger-loss (docs/email.md)"})
        return rows

    @classmethod
    def check_limits(cls, rendition: Rendition, settings) -> list[str]:
        """Warnings: the complete message over the configured provider's message size limit."""
        from publisher.mailmsg import sample_eml
        from publisher.transports.providers import size_limit

        limit = size_limit(settings)
        if limit is None:
            return []
        size = len(sample_eml(rendition, settings))
        if size <= limit[1]:
            return []
        return [f"the email is {size:,} bytes; {limit[0]} accepts at most {limit[1]:,} bytes a message "
                f"([{mail_channel()}] transport): shrink the issue or send it over SMTP"]

    @classmethod
    def records_push(cls, options) -> bool:
        return not options.get("to")  # a test copy (--to) leaves the campaign's row alone

    @classmethod
    def extra_files(cls, rendition: Rendition, settings) -> dict[str, bytes]:
        from publisher.mailmsg import sample_eml

        # the complete message as a subscriber receives it (with a sample recipient)
        return {f"{rendition.issue}.eml": sample_eml(rendition, settings)}

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        settings = ctx.settings
        table = mail_channel()
        if rendition.channel != table:  # the table it reads is the table of the channel it carries
            raise TransportError(f"the mail transport carries the channel that mails subscribers ({table!r}), "
                                 f"not {rendition.channel!r}: give that channel a transport of its own")
        _refuse_unreachable_images(rendition)
        if ctx.options.get("to"):
            return self._test_copy(rendition, ctx, ctx.options["to"])
        if ctx.dry_run:
            return self._dry_run(rendition, ctx)
        check_unsubscribe_url(settings)
        if not is_https(settings[table]["unsubscribe_url"]):
            print(f"warning: [{table}] unsubscribe_url is not https://; mail clients ignore one-click "
                  "unsubscribe (RFC 8058) over plain http", file=sys.stderr)
        secret = settings.secret(table, "secret_env")
        via = provider_name(settings)
        try:
            if via != "smtp":  # an email service provider's API (providers/)
                from publisher.transports.providers.campaign import push_campaign

                return push_campaign(rendition, ctx, secret, progress=ctx.progress or _Lines())
            stats = self._smtp_campaign(rendition, ctx, secret)
        except TransportError as exc:  # the ledger's row says what carried it, also when it failed
            exc.details = {"provider": via, **(getattr(exc, "details", None) or {})}
            raise
        print(stats.summary(), file=sys.stderr)
        _raise_if_stopped(stats, rendition.issue)
        return PushResult(details=stats.as_details(), summary=stats.summary())

    def _test_copy(self, rendition: Rendition, ctx: PushContext, to: str) -> PushResult:
        """`push --to ADDRESS`: one [TEST] copy; the campaign's ledger is untouched."""
        if ctx.dry_run:
            return PushResult(summary=f"email: dry run: would send one [TEST] copy to {to}")
        if provider_name(ctx.settings) != "smtp":
            from publisher.transports.providers.campaign import send_test_via_provider

            mid = send_test_via_provider(rendition, ctx.settings, to)
        else:
            mid = send_test(rendition, ctx.settings, to)
        return PushResult(remote_id=mid, details={"test_to": to},
                          summary=f"email: test copy sent to {to} ({mid}); campaign ledger untouched")

    @staticmethod
    def _smtp_campaign(rendition: Rendition, ctx: PushContext, secret: str) -> CampaignStats:
        """The SMTP campaign: this process alone, or the shared campaign in team mode."""
        settings = ctx.settings
        template = build_template(rendition, settings)
        after_ledger_loss = ctx.options.get("after_ledger_loss")
        if settings["database"]["url"]:  # team mode: start the shared campaign, or join it
            from publisher import campaign as shared
            shared.start(ctx.ledger, open_subscribers(settings), template, rendition.issue)
            sender = functools.partial(Campaign, after_ledger_loss=after_ledger_loss)
            stats, _ = shared.send(settings, ctx.ledger, rendition.issue, sender=sender, secret=secret,
                                   lease=ctx.lease, progress=ctx.progress or _Lines())
            return stats
        campaign = Campaign(template, settings, ctx.ledger, secret=secret, after_ledger_loss=after_ledger_loss)
        campaign.lease = ctx.lease
        campaign.progress = ctx.progress or _Lines()
        return campaign.run()

    def _dry_run(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        from publisher.mailmsg import sample_eml

        settings = ctx.settings
        subs = open_subscribers(settings)
        active = subs.count("active")
        first = next(subs.iter("active", 1), None)
        status = campaign_status(ctx.ledger, rendition.issue)
        done = sum(status.get(s, 0) for s in FINAL_STATES)
        sample = sample_eml(rendition, settings, first.email if first else None)
        from publisher.mailmsg import readable_message

        print(readable_message(sample))
        via = provider_name(settings)
        if via != "smtp":
            from publisher.transports.providers import provider_class

            cls = provider_class(via)
            via = f"{via} ({cls.batch_limit} a call, at most {cls.max_message_bytes:,} bytes a message)"
        return PushResult(details={"active": active, "done": done, "provider": provider_name(settings)},
                          summary=f"email: dry run: {active} active subscriber(s), {done} already done "
                                  f"for {rendition.issue}, via {via}; sample message above")
