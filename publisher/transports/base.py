"""The transport contract: a Rendition goes out to its platform; the result goes to the ledger.

A transport never re-renders. It receives the rendition, the ledger (for its own bookkeeping,
e.g. per-recipient sends or cached uploads) and options, and returns a PushResult; it raises
TransportError when the push could not complete (the ledger then records the channel as failed,
and a re-run picks up where it stopped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from publisher.channels.base import Rendition
from publisher.model import Issue
from publisher.settings import Settings
from publisher.stores.ledger import Ledger


@dataclass(frozen=True)
class PushContext:
    settings: Settings
    ledger: Ledger
    issue: Issue
    dry_run: bool = False
    force: bool = False
    # channel-specific options from the command line, e.g. {"to": "a@b.c"} for email,
    # {"publish": True, "new_draft": False} for wechat
    options: Mapping[str, Any] = field(default_factory=dict)
    # where to report progress (a callable taking done, total); None = silent
    progress: Any = None
    # the (issue, channel) lease held for this push (publisher.stores.ledger.Lease; None in a dry run or
    # a test copy): a transport that sends for long stops when `lease.lost` is set
    lease: Any = None


@dataclass(frozen=True)
class PushResult:
    remote_id: str | None = None
    url: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""  # one line for the terminal


class Transport:
    """Base of every transport; `channel` names the channel whose renditions it carries."""

    channel: ClassVar[str]

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def check_config(cls, settings: Settings) -> None:
        """Refuse (ConfigError naming the key) a push the configuration is not ready for, before
        anything is rendered or sent; nothing to check by default."""

    @classmethod
    def records_push(cls, options: Mapping[str, Any]) -> bool:
        """Whether a push with these options is the issue's push, recorded in the ledger's pushes
        row (False for a test copy to one address, which leaves the row alone)."""
        return True

    @classmethod
    def is_done(cls, record: Any, options: Mapping[str, Any]) -> bool:
        """Whether the ledger row leaves nothing to do for a push with these options."""
        return record is not None and record.state == "done"

    @classmethod
    def counts(cls, ledger: Ledger, record: Any) -> dict[str, int]:
        """What `publisher status` reports of a push beyond its state, as numbers (email:
        recipients by state); nothing by default."""
        return {}

    @classmethod
    def via(cls, record: Any) -> str | None:
        """What carried a push, for `publisher status` (email: smtp or the provider); None when
        the channel has only one way."""
        return None

    @classmethod
    def lost_pushes(cls, settings: Settings, ledger: Ledger | None, slug: str | None,
                    records: Mapping) -> list[dict]:
        """`publisher status` rows for pushes that another store remembers and the ledger does
        not (its `records`, keyed by (issue, channel)), e.g. after the ledger was emptied."""
        return []

    @classmethod
    def report(cls, settings: Settings, ledger: Ledger, issue: str, push: Mapping[str, Any]) -> dict[str, Any]:
        """The campaign report's numbers for this channel's push of `issue` (`push`: its ledger
        row — channel, state, attempts, remote_id, url, created_at, updated_at), as numbers:
        `sent` and `failed`, and `bounced`, `bounced_hard`, `bounced_soft`, `complaints`,
        `unsubscribed` where the channel knows them (0 otherwise), plus any figures of its own
        (publisher/report.py shows them; docs/report.md lists them). A channel whose links are
        counted (publisher/clicks.py) adds `links: []`, and the report fills in the links recorded
        for it with their clicks. By default a push is one delivery: sent 1 when done, failed 1
        when it failed."""
        return {"sent": 1 if push["state"] == "done" else 0, "failed": 1 if push["state"] == "failed" else 0}

    @classmethod
    def check_limits(cls, rendition: Rendition, settings: Settings) -> list[str]:
        """Warnings for `publisher check` about limits of where this transport delivers (e.g. the
        configured email provider's message size); none by default."""
        return []

    @classmethod
    def extra_files(cls, rendition: Rendition, settings: Settings) -> Mapping[str, bytes]:
        """Further files `render --out` writes beside the rendition (e.g. the complete .eml)."""
        return {}

    @classmethod
    def pasteable(cls, rendition: Rendition, settings: Settings) -> tuple[str, list[str]]:
        """The body as it is pasted into the platform's own editor (`render --copy`, the preview's
        copy button): images this transport already uploaded in place of their refs, and warnings
        for what it could not replace. Reads the ledger, never changes it."""
        return rendition.body, []
