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

import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from publisher.errors import TransportError
from publisher.stores.batches import BatchStore
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
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

BREAKER_FAULTS = 3
BREAKER_SAME = 20
_ADDRESSY = re.compile(r"<[^>]*>|\S+@\S+")


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
    calls: int = 0
    tripped: str | None = None
    ambiguous: list[str] = field(default_factory=list)
    ambiguous_policy: str = "resend"
    aborted: str | None = None
    elapsed: float = 0.0
    remaining: int = 0

    def summary(self) -> str:
        s = (f"email via {self.provider}: sent {self.sent}, failed {self.failed}, "
             f"ambiguous-resent {self.resent}, reconciled {self.reconciled}, "
             f"skipped {self.already} (done earlier), remaining {self.remaining}")
        if self.faults:
            s += f"; {self.faults} refused by the provider for a reason not the reader's (left pending)"
        if self.ambiguous:
            s += f"; {len(self.ambiguous)} ambiguous ({self.ambiguous_policy})"
        return s

    def as_details(self) -> dict:
        return {"provider": self.provider, "sent": self.sent, "failed": self.failed, "faults": self.faults,
                "ambiguous_resent": self.resent, "reconciled": self.reconciled, "skipped": self.already,
                "remaining": self.remaining, "ambiguous": len(self.ambiguous),
                "ambiguous_policy": self.ambiguous_policy, "calls": self.calls, "elapsed_s": round(self.elapsed, 3)}


class ProviderCampaign:
    def __init__(self, rendition, settings, ledger: Ledger, *, secret: str,
                 progress: Callable[[int, int], None] | None = None, ambiguous: str | None = None):
        from publisher.errors import ConfigError
        from publisher.mailmsg import build_template
        from publisher.subscribers import open_db

        self.settings = settings
        self.ledger = ledger
        self.secret = secret
        self.t = build_template(rendition, settings)
        self.p = provider_class(provider_name(settings))(settings, content_of(rendition, settings, self.t), self.t)
        self.issue = rendition.issue
        self.policy = ambiguous or settings["email"].get("ambiguous", "resend")
        if self.policy not in ("resend", "skip"):
            raise ConfigError(f"[email] ambiguous must be resend or skip, got {self.policy!r}: "
                              f"fix it in {settings.where()}")
        self.progress = progress
        self.lease = None
        self.subs = open_db(settings)
        self.mail = MailStore(ledger)
        self.batches = BatchStore(ledger)
        self.stats = ProviderStats(provider=self.p.name, ambiguous_policy=self.policy)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.limiter = RateLimiter(self.p.rate)
        self.done = 0
        self.faults_in_row = 0
        self.same: tuple[str, list[str]] = ("", [])

    # -- bookkeeping -------------------------------------------------------------------------

    def _close(self, key: str, outcomes: dict[str, Outcome], note: str = "") -> None:
        self.batches.close_batch(self.issue, key, ((e, o.state, o.code, o.error) for e, o in outcomes.items()),
                                 note)

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
        """The readers of call `key` the provider has (waits out the search's lag first)."""
        wait = started + self.p.reconcile_delay - time.time()
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
        finally:
            for _ in range(self.p.concurrency):
                q.put(None)
            self.ledger.close()
            self.subs.close()

    def _put(self, q: queue.Queue, chunk: list[str]) -> None:
        while not self.stop.is_set():
            try:
                q.put(chunk, timeout=0.2)
                return
            except queue.Full:
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
                self._send(session, chunk)
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
        from publisher.mailmsg import unsubscribe_url_for

        # an address that unsubscribed or bounced since its page was read is not mailed
        active = {s.email.lower() for s in self.subs.active_among(emails)}
        emails = [e for e in emails if e.lower() in active]
        readers = [Reader(e, self.t.message_id(e), unsubscribe_url_for(self.settings, e, self.secret)) for e in emails]
        attempt = 0
        while readers and not self.stop.is_set():
            if self.lease is not None and self.lease.lost.is_set():
                self._abort("the lease of this campaign was taken over by another process (our heartbeat "
                            "stopped); stopped sending")
                return
            attempt += 1
            if attempt > self.p.max_retries + 1:
                log.warning("%d reader(s) deferred after %d attempts", len(readers), attempt - 1)
                with self.lock:
                    self.stats.deferred += len(readers)
                return
            key = uuid.uuid4().hex
            payload = self.p.prepare(key, readers)
            self.limiter.wait(len(readers))
            started = self.batches.open_batch(self.issue, key, self.p.name, [(r.email, r.message_id) for r in readers])
            with self.lock:
                self.stats.calls += 1
            try:
                outcomes = self.p.send(session, payload, readers)
            except Retry as exc:
                self._close(key, {r.email: Outcome("pending", exc.code, str(exc)[:500]) for r in readers},
                            "not accepted")
                if attempt > self.p.max_retries:
                    continue  # deferred (above)
                self.stop.wait(exc.after if exc.after is not None else backoff(attempt))
                continue
            except Lost as exc:
                if self.p.reconciles:
                    try:
                        found = self._reconcile(session, key, started, [r.email for r in readers])
                    except TransportError as exc2:
                        self._abort(f"a reply was lost ({exc}) and {exc2}")
                        return  # the call stays open: the next run reconciles it
                    self._close(key, {r.email: SENT if r.email in found else Outcome("pending", None, str(exc)[:500])
                                      for r in readers}, "reconciled after a lost reply")
                    with self.lock:
                        self.stats.sent += len(found)
                        self.stats.reconciled += len(found)
                    readers = [r for r in readers if r.email not in found]
                    continue
                self._settle_ambiguous(key, [r.email for r in readers], f"lost reply: {exc}"[:500])
                if self.policy == "skip":
                    return
                continue
            except Fault as exc:
                self._close(key, {r.email: Outcome("pending", exc.code, str(exc)[:500]) for r in readers},
                            "refused as a whole")
                log.warning("%s", exc)
                with self.lock:
                    self.stats.faults += len(readers)
                    self.faults_in_row += 1
                    trip = self.faults_in_row >= BREAKER_FAULTS and self.stats.tripped is None
                    if trip:
                        self.stats.tripped = f"{self.faults_in_row} calls refused in a row, the last: {exc}"
                if trip:
                    self._abort(f"circuit breaker: {self.stats.tripped}")
                return
            except TransportError as exc:
                self._close(key, {r.email: Outcome("pending", None, str(exc)[:500]) for r in readers}, "stopped")
                self._abort(str(exc))
                return
            self._close(key, outcomes, "answered")
            self._count(outcomes)
            return

    def _count(self, outcomes: dict[str, Outcome]) -> None:
        trip = None
        with self.lock:
            if outcomes and all(o.state == "pending" for o in outcomes.values()):
                # every message of the call refused for a reason not the readers' (e.g. Postmark's
                # account or sender codes per message): a refused call, for the breaker
                self.faults_in_row += 1
                if self.faults_in_row >= BREAKER_FAULTS and self.stats.tripped is None:
                    self.stats.tripped = (f"{self.faults_in_row} calls refused in a row, the last: "
                                          f"{next(iter(outcomes.values())).error}")
                    trip = []
            for e, o in outcomes.items():
                if o.state == "sent":
                    self.stats.sent += 1
                    self.faults_in_row = 0
                    self.same = ("", [])
                    continue
                if o.state == "pending":
                    self.stats.faults += 1
                    continue
                self.stats.failed += 1
                sig = f"{o.code} {_ADDRESSY.sub('<>', o.error or '')}"[:200]
                self.same = (sig, [*self.same[1], e]) if self.same[0] == sig else (sig, [e])
                if len(self.same[1]) >= BREAKER_SAME and self.stats.tripped is None:
                    self.stats.tripped = f"the same failure for {len(self.same[1])} readers in a row: {o.error}"
                    trip = list(self.same[1])
        if trip is not None:
            self.mail.unfail(self.issue, trip)  # the sender's problem, not theirs: pending again
            with self.lock:
                self.stats.failed -= len(trip)
                self.stats.faults += len(trip)
            self._abort(f"circuit breaker: {self.stats.tripped}")

    def run(self) -> ProviderStats:
        start = time.monotonic()
        try:
            self.recover()
        except TransportError as exc:
            self.stats.aborted = str(exc)
            self.stats.remaining = self.remaining()
            return self.stats
        self.stats.total = self.subs.count("active")
        q: queue.Queue = queue.Queue(maxsize=2 * self.p.concurrency)
        threads = [threading.Thread(target=self._producer, args=(q,), name="email-producer", daemon=True)]
        threads += [threading.Thread(target=self._worker, args=(q,), name=f"email-{self.p.name}-{i}", daemon=True)
                    for i in range(self.p.concurrency)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            self._abort("interrupted")
            for t in threads:
                t.join(10)
            raise
        self.stats.elapsed = time.monotonic() - start
        self.stats.remaining = self.remaining()
        return self.stats

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

    campaign = ProviderCampaign(rendition, ctx.settings, ctx.ledger, secret=secret)
    campaign.lease = ctx.lease
    campaign.progress = progress
    stats = campaign.run()
    print(stats.summary(), file=sys.stderr)
    if stats.aborted or stats.remaining:
        table = campaign.p.table
        why = stats.aborted or (f"{stats.faults} message(s) refused by {stats.provider} for a reason that is not "
                                "the reader's" if stats.faults else
                                f"{stats.deferred} message(s) deferred after [{table}] max_retries")
        fix = (f" Fix the sender or the account at {stats.provider} ([email] from_address, [{table}]) first; "
               "nobody was marked failed for it." if stats.tripped or stats.faults else "")
        exc = TransportError(f"{stats.summary()}; stopped: {why}.{fix} Run the push again to resume "
                             "(readers already sent are skipped)")
        exc.details = stats.as_details()
        raise exc
    return PushResult(details=stats.as_details(), summary=stats.summary())


def send_test_via_provider(rendition, settings, to: str) -> str:
    """One copy to `to` through the configured provider, subject prefixed [TEST]; the campaign
    ledger is not touched. Returns the Message-ID."""
    from publisher.errors import ConfigError
    from publisher.mailmsg import build_template, check_unsubscribe_url, unsubscribe_url_for
    from publisher.subscribers import valid_email

    if not valid_email(to):
        raise ConfigError(f"--to {to!r} is not an email address")
    check_unsubscribe_url(settings)
    secret = settings.secret("email", "secret_env")
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
