"""A job that one process of several on one store does at a time: whoever holds its lease.

Several servers on one PostgreSQL store each run the GitOps controller; each
would poll the same branches, queue the same sync and heal the same drift.  The
controller works while its process holds the lease and waits otherwise.  A lease
is a row beside the outbox's consumers (`SqlStore.lease_cursor`): taken when free
or run out, renewed when half of it has passed, given back on a clean stop.  A
holder that died on this host (a server killed and started again) is seen to be
gone and its lease taken at once; one on another host keeps it until it runs out.
"""

from __future__ import annotations

import time

from shipline.engine.processes import owner_gone
from shipline.store.sql import SqlStore


def take_lease(store: SqlStore, name: str, owner: str, seconds: float) -> int | None:
    """`store.lease_cursor`, and a holder that died on this host does not keep the lease until it runs out."""
    position = store.lease_cursor(name, owner, seconds)
    if position is None and (holder := store.lease_holder(name)) is not None and owner_gone(holder):
        position = store.lease_cursor(name, owner, seconds, take_from=holder)
    return position


class Lease:
    def __init__(self, store: SqlStore, name: str, owner: str, *, seconds: float = 30.0) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.seconds = seconds
        self._held = False
        self._renew_at = 0.0

    def held(self) -> bool:
        """Whether this process holds the lease now, taking or renewing it when due (a write then, else nothing)."""
        if self._held and time.monotonic() < self._renew_at:
            return True
        asked = time.monotonic()
        self._held = take_lease(self.store, self.name, self.owner, self.seconds) is not None
        self._renew_at = asked + self.seconds / 2
        return self._held

    def release(self) -> None:
        """Give the lease back (a clean stop): another process takes it at its next look, not when it runs out."""
        if self._held:
            self._held = False
            self.store.release_cursor(self.name, self.owner)
