"""A campaign any number of senders share (team mode, issue 22).

`publisher push ISSUE --channel email` with [database] url set starts the campaign — the
recipients are written once as rows with the message every worker sends — or joins it when it is
already running; `publisher worker` processes on any host join every running campaign. Each
sender claims batches of recipients (publisher/stores/campaigns.py), sends them with the same
machinery as a single sender (publisher.transports.email.Campaign: the same commit points, the
same ambiguous-window rules, the same circuit breaker) and commits every recipient's outcome.

A sender that dies leaves its claims to be freed when it is found dead (its heartbeat stopped,
or at once on the same host); its in-flight messages (at most one per SMTP connection) follow the
[email] ambiguous policy. A reader who unsubscribes is dropped from the campaign when the batch
holding them is claimed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict

from publisher.registry import mail_channel, mail_table
from publisher.stores.base import DatabaseError, db_errors, error_name
from publisher.stores.campaigns import CampaignStore, Worker, decode_template, encode_template
from publisher.stores.schema import SchemaError

log = logging.getLogger("publisher.campaign")

BATCH_PER_CONNECTION = 4  # a claim takes this many recipients per SMTP connection: enough to keep
# every connection busy between claims, few enough that workers finish together and a dead
# worker strands few
DB_PATIENCE = 120.0  # seconds a worker waits for an unreachable database before it gives up


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _db_fault(reason: str | None) -> bool:
    """Whether a run stopped because the database went away (retried) rather than SMTP."""
    return bool(reason) and any(w in reason for w in ("OperationalError", "InterfaceError", "DatabaseError"))


class Shared:
    """The recipient source of one sender on one shared campaign (Campaign.source)."""

    def __init__(self, store: CampaignStore, worker: Worker, issue: str, subs, batch: int):
        self.store, self.worker, self.issue, self.subs, self.batch = store, worker, issue, subs, batch

    def reap(self, policy: str) -> list[str]:
        return self.store.reap(self.issue, policy)

    def pages(self, stop) -> Iterator[list]:
        """Claimed batches of active subscribers, until nothing is left to claim (or the database
        is unreachable: the run ends, and `send` tries again)."""
        while not stop.is_set() and not self.worker.lost.is_set():
            try:
                emails = self.worker.claim(self.issue, self.batch)
            except db_errors() as exc:
                log.warning("cannot claim recipients: %s", _first_line(exc))
                return
            if not emails:
                return
            active = self.subs.active_among(emails)
            gone = sorted(set(emails) - {s.email for s in active})
            if gone:
                self.worker.drop(self.issue, gone)
            if active:
                yield active


def start(ledger, subs, template, issue: str) -> bool:
    """Write the campaign of `issue` with every active subscriber once; False: it existed."""
    store = CampaignStore(ledger)
    if store.get(issue) is not None:
        return False
    pages = ([(s.email, template.message_id(s.email)) for s in page] for page in subs.iter_pages("active", 1000))
    return store.start(issue, encode_template(asdict(template)), pages)


def template_of(ledger, issue: str):
    from publisher.mailmsg import MessageTemplate

    row = CampaignStore(ledger).get(issue)
    return MessageTemplate(**decode_template(row["template"])) if row else None


def send(settings, ledger, issue: str, *, sender, secret: str, lease=None, progress=None,
         command: str | None = None):
    """Send the running campaign of `issue` as one of its workers until no recipient is left to
    claim and none is in flight elsewhere (or this sender stops: breaker, abort, deferrals).
    `sender`: the single-sender class this worker runs (publisher.transports.email.Campaign,
    passed in: the transport imports this module). Returns (the last run's stats, whether the
    campaign is done)."""
    store = CampaignStore(ledger)
    template = template_of(ledger, issue)
    worker = store.join(command)
    down_since = None
    policy = mail_table(settings).get("ambiguous", "resend")
    try:
        while True:
            try:
                campaign = sender(template, settings, ledger, secret=secret, progress=progress)
                campaign.lease = lease
                campaign.source = Shared(store, worker, issue, campaign.subs,
                                         BATCH_PER_CONNECTION * campaign.cfg.connections)
                stats = campaign.run()
                interrupted = worker.settle(issue, campaign.policy)
                if interrupted:
                    log.warning("%d message(s) were in flight when the database went away: %s",
                                len(interrupted), campaign.policy)
                worker.release(issue)  # deferred rows: free for anyone
                if store.finish_if_done(issue):
                    # nothing pending or in flight anywhere now: the count taken as this run ended
                    # may still hold the last messages of other workers, committed since
                    stats.remaining = 0
                    return stats, True
                down_since = None
            except (*db_errors(), DatabaseError) as exc:
                if isinstance(exc, SchemaError):
                    raise
                stats = None
                reason = f"{error_name(exc)}: {_first_line(exc)}"
            else:
                reason = stats.aborted
            if _db_fault(reason):  # the database went away (restart, failover): reconnect and resume
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > DB_PATIENCE:
                    raise DatabaseError(f"the database {ledger.where} has been unreachable for "
                                        f"{DB_PATIENCE:.0f} s ({reason}); start the worker again when it is "
                                        "back: the campaign resumes where it stopped")
                log.warning("database unreachable (%s); reconnecting", reason)
                time.sleep(1.0)
                continue
            if stats.aborted or stats.deferred or stats.tripped or worker.lost.is_set():
                return stats, False
            time.sleep(0.5)  # others are still sending: wait for them, take over if they die
    finally:
        with contextlib.suppress(*db_errors()):
            worker.leave(policy)


def work(settings, *, sender, once: bool, poll: float = 5.0, echo=print) -> int:
    """`publisher worker`: join every running campaign until none is left (`once`) or forever.
    Returns the number of campaigns this worker stopped on (breaker, abort, deferrals)."""
    from publisher.errors import ConfigError
    from publisher.mailmsg import check_unsubscribe_url
    from publisher.stores import open_ledger
    from publisher.transports.providers import provider_name

    provider = provider_name(settings)
    if provider != "smtp":  # a worker that waited on nothing would look like a sender that helps
        table = mail_channel()
        raise ConfigError(f"[{table}] transport is {provider!r}: `publisher worker` sends SMTP campaigns only. A "
                          f"{provider} campaign is sent by the one `publisher push ISSUE --channel {table}` that "
                          "holds its lease (calls of hundreds of readers each: one sender is enough); stop "
                          f"this worker, or set [{table}] transport = \"smtp\" in " + settings.where())
    check_unsubscribe_url(settings)
    secret = settings.secret(mail_channel(), "secret_env")
    ledger = open_ledger(settings)
    store = CampaignStore(ledger)
    stopped: set[str] = set()
    while True:
        running = [i for i in store.running() if i not in stopped]
        for issue in running:
            stats, done = send(settings, ledger, issue, sender=sender, secret=secret)
            echo(f"{issue}: {stats.summary()}" + ("; campaign complete" if done else ""))
            if done:
                ledger.finish(issue, mail_channel(), details=stats.as_details())
            elif stats.aborted or stats.tripped or stats.deferred:
                echo(f"{issue}: this worker stopped: {stats.aborted or stats.tripped or 'deferred messages'}; "
                     "fix the cause and start a worker again (the campaign resumes where it is)")
                stopped.add(issue)
        if once and not [i for i in store.running() if i not in stopped]:
            return len(stopped)
        if not running:
            time.sleep(poll)
