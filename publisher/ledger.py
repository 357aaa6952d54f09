"""The ledger's old import path: the ledger store is publisher/stores/ledger.py (pushes, leases)
over the connection helper in publisher/stores/base.py."""

from publisher.stores.base import SQLiteStore, now_iso  # noqa: F401
from publisher.stores.ledger import (  # noqa: F401
    LEASE_BEAT,
    LEASE_STALE,
    Lease,
    LeaseHeld,
    Ledger,
    PushRecord,
    checkpoint,
)
