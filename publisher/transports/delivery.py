"""The promises every mail campaign keeps, whatever carries it (SMTP, publisher/transports/email.py,
or a provider's API, publisher/transports/providers/campaign.py): one rule, one place.

* `require_recipients`: an empty list is an error, never a finished campaign (readers imported
  afterwards would never get the issue).
* `check_ledger`: what was sent survives the loss of the ledger — the subscribers database
  remembers, per campaign, which ledger records it and whether it finished; when the two
  disagree the campaign refuses, unless told what to do (`--after-ledger-loss skip|resend`).
* `classify` / `signature`: what a permanent failure says — the reader's address is dead
  (BOUNCE), this reader only (RECIPIENT), or the server / sender / account (CAMPAIGN) — and what
  makes two failures "the same way" (the enhanced status code and the reply's shape, ids
  normalised away).
* `Breaker`: a fault that affects everyone stops the campaign: BREAKER_FAULTS campaign faults in
  a row, or most of the run failing the same way (at least BREAKER_SAME of the last
  BREAKER_WINDOW outcomes and more than half of them; at the end of a small run, BREAKER_SMALL).
  When it trips nobody is bounced and the failures of that kind go back to `pending`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, deque

from publisher.errors import TransportError

log = logging.getLogger("publisher.email")

BREAKER_FAULTS = 3  # campaign faults in a row (no success between) that stop the campaign
BREAKER_SAME = 20  # failures of one kind that stop the campaign when they are most of the window
BREAKER_WINDOW = 200  # the breaker looks at this run's last BREAKER_WINDOW outcomes
BREAKER_SMALL = 5  # at the end of a small run: this many of one kind, and most of the run
BOUNCE, RECIPIENT, CAMPAIGN = "bounce", "recipient", "campaign"
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SERVER_WORDS = re.compile(r"(?i)relay|denied|policy|authenticat|spam|blocked|blacklist|sender|"
                           r"not permitted|too long|syntax|rate limit|quota")
_MAILBOX_WORDS = re.compile(r"(?i)unknown|no such|does not exist|not exist|not found|invalid recipient|"
                            r"user unknown|mailbox unavailable|unrouteable|disabled")
_ADDRESSY = re.compile(r"<[^>]*>|\S+@\S+")
_URL = re.compile(r"(?i)\b(?:https?|ftp)://\S+")
_DIGITY = re.compile(r"\S*\d\S*")  # ids, queue ids, hex with digits, numbers, IPs, dates, codes
_LONG = re.compile(r"\b(?:[A-Za-z0-9+/=_.-]{24,}|[0-9a-fA-F]{8,})\b")  # digitless ids: base64-ish, hex


def classify(code: int | None, message: str) -> str:
    """An SMTP permanent failure → BOUNCE (the address is dead), RECIPIENT (this reader only, keep
    the address) or CAMPAIGN (the server or the sender is the problem). `message` starts with the
    stage: "MAIL FROM: …", "RCPT TO: …", "end of DATA: …", "DATA: …"."""
    stage, _, reply = message.partition(": ")
    if code is None:
        return RECIPIENT  # refused before any command (e.g. an address that needs SMTPUTF8)
    if stage == "MAIL FROM" or 500 <= code <= 504:
        return CAMPAIGN
    m = _ENHANCED.search(reply)
    if m:
        subject, detail = int(m.group(2)), int(m.group(3))
        if subject == 1:
            return CAMPAIGN if detail in (7, 8) else BOUNCE  # 5.1.7/5.1.8: the sender's address
        if subject == 2:
            return BOUNCE if detail == 1 else (CAMPAIGN if detail == 3 else RECIPIENT)
        if subject == 4:
            return RECIPIENT
        return CAMPAIGN  # 5.0 other, 5.3 system, 5.5 protocol, 5.6 content, 5.7 policy
    if _SERVER_WORDS.search(reply) or stage != "RCPT TO":
        return CAMPAIGN
    return BOUNCE if _MAILBOX_WORDS.search(reply) else RECIPIENT


def signature(code: int | None, message: str) -> str:
    """What makes two failures "the same way": the stage, the code, the enhanced status code and
    the reply's shape — its words, with addresses, URLs and every token holding a digit or
    looking like an id normalised away (Gmail's `550 5.1.1 … 4a7f3f0f4a3si12345 - gsmtp` carries
    a different id in every reply; they are all one failure)."""
    stage, _, reply = message.partition(": ")
    m = _ENHANCED.search(reply)
    shape = _ADDRESSY.sub("<>", _URL.sub("<url>", reply))
    shape = " ".join(_LONG.sub("#", _DIGITY.sub("#", shape)).split())
    return f"{stage}|{code}|{m.group(0) if m else ''}|{shape}"[:240]


class Breaker:
    """The circuit breaker's view of one run (thread-safe): the last BREAKER_WINDOW outcomes (None:
    sent; else the failure's signature), how many failed each way, and campaign faults in a row."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults_in_row = 0
        self.window: deque[str | None] = deque()
        self.ways: Counter[str] = Counter()
        self.tripped: str | None = None  # why it stopped the campaign
        self.signature = ""  # the failures that tripped it (they go back to pending)

    def success(self, n: int = 1) -> None:
        with self.lock:
            self.faults_in_row = 0
            for _ in range(n):
                self._outcome(None)

    def failure(self, sig: str, *, campaign: bool, what: object) -> str | None:
        """One more failure (`campaign`: a fault that is not the reader's). Returns why the
        breaker trips when it trips now (once), else None."""
        with self.lock:
            if campaign:
                self.faults_in_row += 1
            self._outcome(sig)
            trip = None
            if self.faults_in_row >= BREAKER_FAULTS:
                trip = f"{self.faults_in_row} refusals in a row that are not the readers' fault, the last: {what}"
            elif self._most_the_same_way(sig, BREAKER_SAME):
                trip = self._same_way(sig, what)
            return self._trip(trip, sig)

    def refused(self, what: object) -> str | None:
        """A whole call (or connection) refused for a reason that is not the readers': one campaign
        fault, no reader outcome. Returns why the breaker trips when it trips now."""
        with self.lock:
            self.faults_in_row += 1
            if self.faults_in_row < BREAKER_FAULTS:
                return None
            return self._trip(f"{self.faults_in_row} calls refused in a row for a reason that is not the "
                              f"readers', the last: {what}", "")

    def at_end(self, example_of) -> str | None:
        """At the end of a run that did not trip: did most of this (small) run fail one way?
        `example_of(sig)`: a failure message of that kind, for the report."""
        with self.lock:
            if self.tripped or not self.ways:
                return None
            sig, _ = self.ways.most_common(1)[0]
            if not self._most_the_same_way(sig, BREAKER_SMALL):
                return None
            return self._trip(self._same_way(sig, example_of(sig)), sig)

    def _trip(self, why: str | None, sig: str) -> str | None:
        if why is None or self.tripped is not None:
            return None
        self.tripped, self.signature = why, sig
        return why

    def _outcome(self, sig: str | None) -> None:
        self.window.append(sig)
        if sig is not None:
            self.ways[sig] += 1
        if len(self.window) > BREAKER_WINDOW:
            old = self.window.popleft()
            if old is not None:
                self.ways[old] -= 1

    def _most_the_same_way(self, sig: str, at_least: int) -> bool:
        """More than half of the recent outcomes (all of them, early in a run) are failures of
        this one kind, and at least `at_least` of them: the server's problem, not the readers'."""
        n = self.ways[sig]
        return n >= at_least and 2 * n > len(self.window)

    def _same_way(self, sig: str, what: object) -> str:
        return (f"{self.ways[sig]} of the last {len(self.window)} recipients failed the same way (the "
                f"readers' addresses cannot all be wrong), the last: {what}")


def require_recipients(subs) -> int:
    """The number of active subscribers; none is an error (a push to an empty list is never done)."""
    total = subs.count("active")
    if total == 0:
        raise TransportError(
            f"no active subscribers in {subs.where}: nothing was sent, and the push is not recorded as "
            "done. Add readers (`publisher subscribers import FILE`) and push again")
    return total


def check_ledger(subs, ledger, counts, issue: str, channel: str, after_ledger_loss: str | None) -> bool:
    """What was sent must survive the loss of the ledger: the subscribers database remembers, per
    campaign, which ledger records it (its identity) and whether it finished. When the two
    disagree — the ledger was emptied, deleted, replaced or restored from an older copy — refuse,
    unless told what to do (`after_ledger_loss`). `counts()`: the ledger's recipients of `issue`
    by state. False: recorded as sent without sending ("skip"); True: go on (marked `sending`)."""
    ident = ledger.identity()
    mark = subs.campaign(issue)
    lost = mark is not None and (mark.ledger_id != ident or (mark.state == "done" and not counts()))
    if lost and after_ledger_loss is None:
        why = ("is another ledger (emptied, deleted or replaced since)" if mark.ledger_id != ident else
               "has no record of its recipients (restored from a copy older than the campaign?)")
        raise TransportError(
            f"the subscribers database {subs.where} says {issue} was "
            f"{'sent' if mark.state == 'done' else 'being sent'} by {channel} (since {mark.started_at}, "
            f"last {mark.updated_at}), but the ledger {ledger.where} {why}: sending now could mail "
            "everyone again, so nothing was sent. Restore the ledger from a backup and push again; or, "
            f"to record the issue as sent without sending: `publisher push {issue} -c {channel} "
            "--after-ledger-loss skip`; or to send it again to everyone this ledger has no record of "
            "(duplicates for those who had it): `--after-ledger-loss resend`")
    if lost:
        log.warning("ledger %s lost the record of %s; told to %s", ledger.where, issue, after_ledger_loss)
    if lost and after_ledger_loss == "skip":
        subs.mark_campaign(issue, ident, "done")
        return False
    subs.mark_campaign(issue, ident, "sending")
    return True


SKIPPED_NOTE = "not sent: recorded as sent after the loss of the ledger (--after-ledger-loss skip)"
