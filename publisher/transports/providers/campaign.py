"""One issue to every active subscriber through a provider's HTTP API, exactly once per reader.

Each call is a batch (publisher/stores/batches.py): its key and every reader's Message-ID are
committed, the readers' rows → `sending`, BEFORE the request leaves; the outcome of every reader
is committed in one transaction after the reply. So after any crash, the only readers whose fate
is unknown are those of calls still `open`:

* Postmark and Mailgun have a search (outbound messages; `accepted` events): the open call's
  readers the provider has are marked `sent`, the others go back to `pending` and are sent —
  no reader is lost, none gets two copies. This runs at the start of every campaign, and at once
  when a reply is lost mid-run (after [table] reconcile_delay: the search lags behind sending).
* SES has none: the call's reader (one a call) is ambiguous, counted, and [email] ambiguous
  decides — `resend` (a possible second copy, same Message-ID) or `skip` (never two, maybe none).

Failures: 429 and 5xx are retried after Retry-After or a back-off ([table] max_retries); a reader's
own refusal (Postmark 406/300, SES MessageRejected) marks it `failed`; a refusal of the whole
call that is not the readers' fault leaves them `pending` and, BREAKER_FAULTS times in a row,
stops the run; the same refusal for BREAKER_SAME readers in a row is the sender's problem, not
theirs: those go back to `pending` and the run stops. Credentials or account problems stop the
run at once. Every stop is resumable: run the push again.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from publisher.errors import PublisherError, TransportError
from publisher.registry import mail_channel, mail_table
from publisher.stores.base import DatabaseError, DiskReserve, StoreError, db_errors
from publisher.stores.batches import BatchStore
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.transports.delivery import SKIPPED_NOTE, Breaker, check_ledger, require_recipients, signature
from publisher.transports.providers import provider_class, provider_name
from publisher.transports.providers.base import (
    SENT,
    Fault,
    Lost,
    Outcome,
    RateLimiter,
    Reader,
    Retry,
    backoff,
    content_of,
)

log = logging.getLogger("publisher.email")


class LeaseLost(Exception):
    """Another process took this campaign over (we were paused past the lease)."""


@dataclass
class ProviderStats:
    provider: str = ""
    total: int = 0
    sent: int = 0
    already: int = 0
    failed: int = 0
    faults: int = 0
    resent: int = 0  # ambiguous readers (SES, lost reply or crash) sent again
    reconciled: int = 0  # readers of a lost call found at the provider (marked sent, not re-sent)
    deferred: int = 0
    withdrawn: int = 0  # unsubscribed (or bounced) after their batch was queued: not sent
    stale: int = 0  # sent after another process took the lease over: maybe sent twice
    unrecorded: int = 0  # answered by the provider, outcome not recorded (disk full): call left open
    calls: int = 0
    tripped: str | None = None
    ambiguous: list[str] = field(default_factory=list)
    ambiguous_policy: str = "resend"
    aborted: str | None = None
    lease_lost: bool = False
    elapsed: float = 0.0
    remaining: int = 0
    note: str = ""

    def summary(self) -> str:
        s = (f"email via {self.provider}: sent {self.sent}, failed {self.failed}, "
             f"ambiguous-resent {self.resent}, reconciled {self.reconciled}, "
             f"skipped {self.already} (done earlier), remaining {self.remaining}")
        if self.faults:
            s += f"; {self.faults} refused by the provider for a reason not the reader's (left pending)"
        if self.ambiguous:
            s += f"; {len(self.ambiguous)} ambiguous ({self.ambiguous_policy})"
        if self.withdrawn:
            s += f"; {self.withdrawn} unsubscribed during the campaign (not sent)"
        if self.stale:
            s += (f"; {self.stale} sent after another process took this campaign over "
                  "(ambiguous: those readers may have two copies)")
        if self.unrecorded:
            s += (f"; {self.unrecorded} answered by the provider but not recorded (the call is reconciled "
                  "on the next run)")
        if self.note:
            s += f"; {self.note}"
        return s

    def as_details(self) -> dict:
        d = {"provider": self.provider, "sent": self.sent, "failed": self.failed, "faults": self.faults,
             "ambiguous_resent": self.resent, "reconciled": self.reconciled, "skipped": self.already,
             "remaining": self.remaining, "ambiguous": len(self.ambiguous),
             "ambiguous_policy": self.ambiguous_policy, "calls": self.calls, "elapsed_s": round(self.elapsed, 3)}
        for key in ("withdrawn", "unrecorded"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.stale:
            d["stale_sender_ambiguous"] = self.stale
        return d


class ProviderCampaign:
    def __init__(self, rendition, settings, ledger: Ledger, *, secret: str,
                 progress: Callable[[int, int], None] | None = None, ambiguous: str | None = None,
                 after_ledger_loss: str | None = None):
        from publisher.errors import ConfigError
        from publisher.mailmsg import build_template
        from publisher.stores import open_subscribers

        self.settings = settings
        self.ledger = ledger
        self.secret = secret
        self.t = build_template(rendition, settings)
        self.p = provider_class(provider_name(settings))(settings, content_of(rendition, settings, self.t), self.t)
        self.issue = rendition.issue
        self.policy = ambiguous or mail_table(settings).get("ambiguous", "resend")
        if self.policy not in ("resend", "skip"):
            raise ConfigError(f"[{mail_channel()}] ambiguous must be resend or skip, got {self.policy!r}: "
                              f"fix it in {settings.where()}")
        self.after_ledger_loss = after_ledger_loss  # None (refuse), "resend" or "skip"
        self.progress = progress
        self.lease = None
        self.subs = open_subscribers(settings)
        self.mail = MailStore(ledger)
        self.batches = BatchStore(ledger)
        self.reserve = DiskReserve(ledger.path)
        self.stats = ProviderStats(provider=self.p.name, ambiguous_policy=self.policy)
        self.breaker = Breaker()  # publisher/transports/delivery.py, as the SMTP campaign's
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.limiter = RateLimiter(self.p.rate)
        self.done = 0
        self.workers: list[threading.Thread] = []

    # -- bookkeeping -------------------------------------------------------------------------

    def _close(self, key: str, outcomes: dict[str, Outcome], note: str = "") -> None:
        """Record a call's outcome (one transaction). On a full disk: free the reserve, record it,
        stop the run; if even that fails the call stays open and the next run reconciles it."""
        rows = [(e, o.state, o.code, o.error) for e, o in outcomes.items()]
        try:
            self.batches.close_batch(self.issue, key, rows, note)
        except StoreError as exc:
            if not exc.disk_full or not self.reserve.release():
                raise
            self._abort(str(exc))
            self.batches.close_batch(self.issue, key, rows, note)

    def _abort(self, reason: str) -> None:
        with self.lock:
            if self.stats.aborted is None:
                self.stats.aborted = reason
        self.stop.set()

    def _session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # no proxy from the environment between us and the provider's API
        return s

    # -- recovery ----------------------------------------------------------------------------

    def _reconcile(self, session, key: str, started: float, emails: list[str]) -> set[str]:
        """The readers of call `key` the provider has. Waits until the call is `timeout` +
        `reconcile_delay` old first: the provider may accept a call until its sender stops waiting
        for the reply (a killed sender's call too), and its search shows it `reconcile_delay` later."""
        wait = started + self.p.timeout + self.p.reconcile_delay - time.time()
        if wait > 0:
            log.info("waiting %.0f s for %s's search to catch up before reconciling", wait, self.p.name)
            time.sleep(wait)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.p.reconcile(session, key, started, emails)
            except (Retry, Lost) as exc:
                if attempt > self.p.max_retries:
                    raise TransportError(f"cannot reconcile the call {key} with {self.p.name}: {exc}; nothing was "
                                         "sent meanwhile, run the push again later") from None
                time.sleep(exc.after if isinstance(exc, Retry) and exc.after is not None else backoff(attempt))

    def recover(self) -> None:
        """Settle every call of this issue left open by an earlier run, then stray `sending` rows."""
        with self._session() as session:
            self._recover(session)

    def _recover(self, session) -> None:
        for key, provider, started in self.batches.open_batches(self.issue):
            emails = self.batches.members(self.issue, key)
            if provider == self.p.name and self.p.reconciles:
                found = self._reconcile(session, key, started, emails)
                self._close(key, {e: SENT if e in found else Outcome("pending", None, "reconciled: not at the provider")
                                  for e in emails}, "reconciled after an interrupted run")
                self.stats.reconciled += len(found)
                log.warning("an interrupted call to %s: %d reader(s) found there (sent), %d not (to send)",
                            provider, len(found), len(emails) - len(found))
            else:
                self._settle_ambiguous(key, emails, "interrupted in the ambiguous window")
        rows = self.mail.in_flight(self.issue)  # an SMTP run's, if the transport changed meanwhile
        if rows:
            self.stats.ambiguous += rows
            if self.policy == "resend":
                self.stats.resent += len(rows)
            self.mail.settle_in_flight(self.issue, "pending" if self.policy == "resend" else "ambiguous")

    def _settle_ambiguous(self, key: str, emails: list[str], why: str) -> None:
        with self.lock:
            self.stats.ambiguous += emails
            if self.policy == "resend":
                self.stats.resent += len(emails)
        state = "pending" if self.policy == "resend" else "ambiguous"
        self._close(key, {e: Outcome(state, None, why) for e in emails}, why)
        log.warning("%d reader(s) ambiguous (%s): %s", len(emails), self.policy, ", ".join(emails[:10]))

    # -- sending -----------------------------------------------------------------------------

    def _producer(self, q: queue.Queue) -> None:
        size = self.p.batch_size
        chunk: list[str] = []
        try:
            for page in self.subs.iter_pages("active", max(size, 500)):
                if self.stop.is_set():
                    break
                emails = [s.email for s in page]
                done = {e.lower() for e in self.mail.final(self.issue, emails)}
                for e in emails:
                    if e.lower() in done:
                        with self.lock:
                            self.stats.already += 1
                            self.done += 1
                        continue
                    chunk.append(e)
                    if len(chunk) >= size:
                        self._put(q, chunk)
                        chunk = []
            if chunk:
                self._put(q, chunk)
        except BaseException as exc:
            self._abort(str(exc) if isinstance(exc, PublisherError) else f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            for _ in range(self.p.concurrency):
                self._put(q, None, always=True)
            self.ledger.close()
            self.subs.close()

    def _put(self, q: queue.Queue, chunk: list[str] | None, *, always: bool = False) -> None:
        """Queue a chunk (or a worker's end marker: `always`, unless the workers are gone)."""
        while always or not self.stop.is_set():
            try:
                q.put(chunk, timeout=0.2)
                return
            except queue.Full:
                if always and not any(t.is_alive() for t in self.workers):
                    return  # no worker left to take it
                continue

    def _worker(self, q: queue.Queue) -> None:
        session = self._session()
        try:
            while True:
                chunk = q.get()
                if chunk is None:
                    return
                if self.stop.is_set():
                    continue
                try:
                    self._send(session, chunk)
                except LeaseLost as exc:
                    with self.lock:
                        self.stats.lease_lost = True
                    self._abort(str(exc))
                except (StoreError, TransportError, DatabaseError) as exc:
                    self._abort(str(exc))
                except db_errors() as exc:  # PostgreSQL gone or failing: resumable, never a traceback
                    self._abort(f"the database {self.ledger.where} failed: {' '.join(str(exc).split())[:300]}; "
                                "nothing is lost: run the push again once it is back")
                with self.lock:
                    self.done += len(chunk)
                    done = self.done
                if self.progress:
                    self.progress(done, self.stats.total)
        except BaseException as exc:
            self._abort(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            session.close()
            self.ledger.close()
            self.subs.close()

    def _send(self, session, emails: list[str]) -> None:
        """One chunk of readers: calls until each has an outcome, or is deferred or left pending."""
        attempt = 0
        while emails and not self.stop.is_set():
            attempt += 1
            if attempt > self.p.max_retries + 1:
                log.warning("%d reader(s) deferred after %d attempts", len(emails), attempt - 1)
                with self.lock:
                    self.stats.deferred += len(emails)
                self._refused(f"{len(emails)} reader(s) deferred after [{self.p.table}] max_retries")
                return
            emails = self._call(session, emails, attempt)

    def _still_ours(self) -> None:
        """Checked before each call: the lease is still ours, the ledger's disk has room."""
        if self.lease is not None and not self.lease.valid():
            raise LeaseLost("another process took this campaign over while this one was stopped or paused "
                            "past its lease; this one stopped sending")
        if self.reserve.low():
            self.reserve.release()
            raise StoreError(self.ledger.path, OSError(errno.ENOSPC, "the disk is full (less than "
                                                       f"{DiskReserve.LOW // 1024} KB free)"))

    def _readers(self, emails: list[str]) -> list[Reader]:
        """Those of `emails` still active now, just before their call is built: an unsubscribe
        answered 200 before this moment is never sent."""
        from publisher.mailmsg import unsubscribe_url_for

        active = {s.email.lower() for s in self.subs.active_among(emails)}
        gone = len(emails) - sum(1 for e in emails if e.lower() in active)
        if gone:
            with self.lock:
                self.stats.withdrawn += gone
        return [Reader(e, self.t.message_id(e), unsubscribe_url_for(self.settings, e, self.secret))
                for e in emails if e.lower() in active]

    def _call(self, session, emails: list[str], attempt: int) -> list[str]:
        """One call for `emails`; returns the readers to try again (empty: all settled)."""
        self._still_ours()
        self.limiter.wait(len(emails))
        readers = self._readers(emails)
        if not readers:
            return []
        key = uuid.uuid4().hex
        payload = self.p.prepare(key, readers)
        started = self.batches.open_batch(self.issue, key, self.p.name, [(r.email, r.message_id) for r in readers])
        with self.lock:
            self.stats.calls += 1
        try:
            outcomes = self.p.send(session, payload, readers)
        except Retry as exc:
            self._close(key, {r.email: Outcome("pending", exc.code, str(exc)[:500]) for r in readers}, "not accepted")
            if attempt <= self.p.max_retries:
                self.stop.wait(exc.after if exc.after is not None else backoff(attempt))
            return [r.email for r in readers]
        except Lost as exc:
            return self._lost(session, key, started, readers, exc)
        except Fault as exc:
            self._close(key, {r.email: Outcome("pending", exc.code, str(exc)[:500]) for r in readers},
                        "refused as a whole")
            log.warning("%s", exc)
            with self.lock:
                self.stats.faults += len(readers)
            self._refused(exc)
            return []
        except TransportError:
            self._close(key, {r.email: Outcome("pending", None, "stopped") for r in readers}, "stopped")
            raise
        self._answered(key, outcomes)
        return []

    def _lost(self, session, key: str, started: float, readers: list[Reader], exc: Lost) -> list[str]:
        """The call went out and no reply came: reconcile it (Postmark, Mailgun) or, where no
        search exists (SES), its readers are ambiguous ([email] ambiguous)."""
        emails = [r.email for r in readers]
        if not self.p.reconciles:
            self._settle_ambiguous(key, emails, f"lost reply: {exc}"[:500])
            return [] if self.policy == "skip" else emails
        try:
            found = self._reconcile(session, key, started, emails)
        except TransportError as exc2:
            self._abort(f"a reply was lost ({exc}) and {exc2}")
            return []  # the call stays open: the next run reconciles it
        self._close(key, {e: SENT if e in found else Outcome("pending", None, str(exc)[:500]) for e in emails},
                    "reconciled after a lost reply")
        with self.lock:
            self.stats.sent += len(found)
            self.stats.reconciled += len(found)
        return [e for e in emails if e not in found]

    def _refused(self, what: object) -> None:
        """A call refused (or deferred) for a reason that is not the readers': the breaker counts it."""
        trip = self.breaker.refused(what)
        if trip:
            with self.lock:
                self.stats.tripped = trip
            self._abort(f"circuit breaker: {trip}")

    def _answered(self, key: str, outcomes: dict[str, Outcome]) -> None:
        """Record the provider's answer, count it, feed the breaker; stop when the lease was lost."""
        stale = self.lease is not None and self.lease.taken_over()
        try:
            self._close(key, outcomes, "answered")
        except StoreError:
            with self.lock:
                self.stats.unrecorded += len(outcomes)
            raise
        sent = sum(1 for o in outcomes.values() if o.state == "sent")
        with self.lock:
            self.stats.sent += sent
            self.stats.stale += sent if stale else 0
        if outcomes and not sent and all(o.state == "pending" for o in outcomes.values()):
            # every message of the call refused for a reason not the readers' (e.g. Postmark's
            # account or sender codes per message): a refused call, for the breaker
            with self.lock:
                self.stats.faults += len(outcomes)
            self._refused(next(iter(outcomes.values())).error)
        else:
            self._outcomes(outcomes)
        if stale:
            raise LeaseLost("another process took this campaign over while this one was paused; this one "
                            "stopped sending")

    def _outcomes(self, outcomes: dict[str, Outcome]) -> None:
        """Each reader's outcome in the breaker's window: most of the run failing one way trips it."""
        for o in outcomes.values():
            if o.state == "sent":
                self.breaker.success()
                continue
            with self.lock:
                if o.state == "pending":
                    self.stats.faults += 1
                else:
                    self.stats.failed += 1
            trip = self.breaker.failure(signature(o.code, o.error or ""), campaign=False, what=o.error)
            if trip:
                with self.lock:
                    self.stats.tripped = trip
                self._abort(f"circuit breaker: {trip}")

    def _after_run(self) -> None:
        """Most of the run failed one way (now, or a small run at its end): the failures of that
        kind are the sender's problem, not the readers': they go back to `pending`."""
        rows = self.mail.failed(self.issue)
        late = self.breaker.at_end(lambda sig: next(
            (r[2] for r in rows if signature(r[1], r[2] or "") == sig), sig))
        if late:
            self.stats.tripped = late
            self.stats.aborted = self.stats.aborted or f"circuit breaker: {late}"
        sig = self.breaker.signature
        if not (self.stats.tripped and sig):
            return
        back = [r[0] for r in rows if signature(r[1], r[2] or "") == sig]
        self.mail.unfail(self.issue, back)
        with self.lock:
            self.stats.failed = max(0, self.stats.failed - len(back))
            self.stats.faults += len(back)

    def run(self) -> ProviderStats:
        start = time.monotonic()
        self.stats.total = require_recipients(self.subs)
        if not check_ledger(self.subs, self.ledger, lambda: self.mail.counts(self.issue), self.issue, mail_channel(),
                            self.after_ledger_loss):
            self.stats.note = SKIPPED_NOTE
            return self.stats
        try:
            self.reserve.take()
            self.recover()
            self._threads()
            self.reserve.release()  # room for the bookkeeping below, on a nearly full disk
            if self.stats.lease_lost:
                return self.stats  # the campaign is the new holder's now
            self._after_run()
            self.stats.remaining = self.remaining()
            finished = not self.stats.aborted and not self.stats.remaining
            self.subs.mark_campaign(self.issue, self.ledger.identity(), "done" if finished else "sending")
        except TransportError as exc:  # recovery could not reconcile: nothing was sent
            self.stats.aborted = str(exc)
            self.stats.remaining = self.remaining()
        finally:
            self.reserve.release()
            self.stats.elapsed = time.monotonic() - start
        return self.stats

    def _threads(self) -> None:
        q: queue.Queue = queue.Queue(maxsize=2 * self.p.concurrency)
        threads = [threading.Thread(target=self._producer, args=(q,), name="email-producer", daemon=True)]
        self.workers = [threading.Thread(target=self._worker, args=(q,), name=f"email-{self.p.name}-{i}",
                                         daemon=True) for i in range(self.p.concurrency)]
        threads += self.workers
        for t in self.workers:
            t.start()
        threads[0].start()  # after the workers: the producer's end markers wait for live workers
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            self._abort("interrupted")
            for t in threads:
                t.join(10)
            raise

    def remaining(self) -> int:
        left = 0
        for page in self.subs.iter_pages("active", 500):
            emails = [s.email for s in page]
            left += len(emails) - len(self.mail.final(self.issue, emails))
        return left


def push_campaign(rendition, ctx, secret: str, *, progress=None):
    """`publisher push --channel email` through the configured provider: the campaign, its
    summary on stderr, a PushResult, or a TransportError (resumable) saying what stopped it."""
    import sys

    from publisher.transports.base import PushResult

    campaign = ProviderCampaign(rendition, ctx.settings, ctx.ledger, secret=secret,
                                after_ledger_loss=ctx.options.get("after_ledger_loss"))
    campaign.lease = ctx.lease
    campaign.progress = progress
    stats = campaign.run()
    print(stats.summary(), file=sys.stderr)
    if stats.lease_lost:
        exc = TransportError(f"{stats.summary()}; stopped: another process took this campaign over while this "
                             f"one was paused past its lease. {stats.stale} reader(s) this process sent after that "
                             f"are counted as ambiguous (`publisher status {rendition.issue}`); the other process "
                             "goes on with the rest")
        exc.details = {**stats.as_details(), "stale_sender_ambiguous": stats.stale}
        exc.lease_lost = True
        raise exc
    if stats.aborted or stats.remaining:
        table = campaign.p.table
        why = stats.aborted or (f"{stats.faults} message(s) refused by {stats.provider} for a reason that is not "
                                "the reader's" if stats.faults else
                                f"{stats.deferred} message(s) deferred after [{table}] max_retries")
        fix = (f" Fix the sender or the account at {stats.provider} ([{mail_channel()}] from_address, [{table}]) first; "
               "nobody was marked failed for it." if stats.tripped or stats.faults else "")
        exc = TransportError(f"{stats.summary()}; stopped: {why}.{fix} Run the push again to resume "
                             "(readers already sent are skipped)")
        exc.details = stats.as_details()
        raise exc
    return PushResult(details=stats.as_details(), summary=stats.summary())


def send_test_via_provider(rendition, settings, to: str) -> str:
    """One copy to `to` through the configured provider, subject prefixed [TEST]; the campaign
    ledger is not touched. Returns the Message-ID."""
    from publisher.addresses import valid_address
    from publisher.errors import ConfigError
    from publisher.mailmsg import build_template, check_unsubscribe_url, unsubscribe_url_for

    if not valid_address(to):
        raise ConfigError(f"--to {to!r} is not an email address")
    check_unsubscribe_url(settings)
    secret = settings.secret(mail_channel(), "secret_env")
    template = build_template(rendition, settings, subject_prefix="[TEST] ")
    p = provider_class(provider_name(settings))(settings, content_of(rendition, settings, template), template)
    reader = Reader(to, template.message_id(to), unsubscribe_url_for(settings, to, secret))
    session = requests.Session()
    session.trust_env = False
    last: Exception | None = None
    for attempt in range(1, p.max_retries + 2):
        try:
            outcome = p.send(session, p.prepare("test-" + uuid.uuid4().hex, [reader]), [reader])[to]
        except Retry as exc:
            last = exc
            time.sleep(exc.after if exc.after is not None else backoff(attempt))
            continue
        except (Lost, Fault) as exc:
            raise TransportError(f"test message to {to} through {p.name}: {exc}") from None
        if outcome.state != "sent":
            raise TransportError(f"test message to {to} refused by {p.name}: {outcome.error}")
        return reader.message_id
    raise TransportError(f"test message to {to} not sent through {p.name} after {p.max_retries + 1} attempts: {last}")
