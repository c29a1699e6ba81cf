"""Reading the outbox: for notifiers that must not miss a run's end.

Every run and task transition is appended to `run_events` in the transaction
that makes it (`RunRecorder`), so a crash between "the run finished" and "the
commit status was set" loses nothing: the notifier reads on from its cursor
when it comes back.  Each notifier (a *consumer*) has one cursor and one
lease; with several servers on one PostgreSQL store, the process holding the
lease reads and the others wait, so no transition is handled twice at once.

Delivery is at least once: a process killed after handling a transition but
before moving its cursor handles it again after restart.  Handlers are
therefore idempotent (set a status, open-or-update a pull request).
"""

from __future__ import annotations

from collections.abc import Callable

from shipline.domain.runs import RunTransition
from shipline.store.sql import SqlStore


class OutboxReader:
    def __init__(self, store: SqlStore, consumer: str, owner: str, *, lease_seconds: float = 30.0, batch: int = 100) -> None:
        self.store = store
        self.consumer = consumer
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.batch = batch

    def poll(self, handle: Callable[[RunTransition], None]) -> int:
        """Hand each new transition to `handle`, in order; how many were handled.

        0 when another process holds this consumer's lease.  If `handle` raises,
        the cursor stays before that transition and the error goes to the caller,
        which polls again later.
        """
        position = self.store.lease_cursor(self.consumer, self.owner, self.lease_seconds)
        if position is None:
            return 0
        handled = 0
        for transition in self.store.transitions_after(position, self.batch):
            handle(transition)
            if not self.store.advance_cursor(self.consumer, self.owner, transition.id):
                break  # the lease ran out and another process took over: it goes on from our last position
            handled += 1
        return handled

    def close(self) -> None:
        self.store.release_cursor(self.consumer, self.owner)
