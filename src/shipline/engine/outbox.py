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

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress

from shipline.domain.runs import RunTransition
from shipline.engine.events import EventBus
from shipline.engine.leases import take_lease
from shipline.store.sql import SqlStore

log = logging.getLogger("shipline.outbox")


class OutboxReader:
    def __init__(
        self,
        store: SqlStore,
        consumer: str,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        batch: int = 100,
        kind: str | None = None,
    ) -> None:
        self.store = store
        self.consumer = consumer
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.kind = kind
        """Only transitions of this kind ("run": a run's, not its tasks'), or all when None.

        A notifier that acts on runs alone skips the tasks' rows in the query: under a
        stream of runs they are most of the outbox, and each was read, decoded and
        dropped by every such notifier."""
        self._position: int | None = None
        """Where the cursor is, while this process surely holds the lease (until `_renew_at`)."""
        self._renew_at = 0.0

    def _lease(self) -> int | None:
        """The cursor's position, taking or renewing the lease when half of it has passed.

        Between renewals nobody else can take the lease, so the position this
        process last wrote is the cursor's: a poll that finds nothing new costs
        one read, not a write.
        """
        if self._position is not None and time.monotonic() < self._renew_at:
            return self._position
        taken = time.monotonic()
        self._position = take_lease(self.store, self.consumer, self.owner, self.lease_seconds)
        self._renew_at = taken + self.lease_seconds / 2
        return self._position

    def poll(self, handle: Callable[[RunTransition], None]) -> int:
        """Hand each new transition to `handle`, in order; how many were handled.

        0 when another process holds this consumer's lease.  If `handle` raises,
        the cursor stays before that transition and the error goes to the caller,
        which polls again later.  The cursor moves once per batch (one write, not
        one per transition); a process killed mid-batch hands that batch again
        after restart (delivery is at least once).
        """
        position = self._lease()
        if position is None:
            return 0
        handled = 0
        last = position
        try:
            for transition in self.store.transitions_after(position, self.batch, self.kind):
                handle(transition)
                last = transition.id
                handled += 1
                if time.monotonic() >= self._renew_at:
                    break  # a long batch (slow handlers): move the cursor and renew the lease before going on
        finally:
            if last != position:
                if self.store.advance_cursor(self.consumer, self.owner, last):
                    self._position = last
                else:
                    self._position = None  # the lease ran out and another process took over: it goes on from there
        return handled

    @property
    def holds_lease(self) -> bool:
        """This process held the consumer's lease at its last poll (the others' polls hand nothing)."""
        return self._position is not None

    def close(self) -> None:
        self._position = None
        self.store.release_cursor(self.consumer, self.owner)


async def follow(
    reader: OutboxReader,
    handle: Callable[[RunTransition], None],
    bus: EventBus,
    stop: asyncio.Event,
    *,
    name: str,
    poll_seconds: float = 1.0,
    retry_seconds: float = 5.0,
    transient: tuple[type[Exception], ...] = (),
    between: Callable[[], object] | None = None,
    nudged: asyncio.Event | None = None,
    min_gap: float = 0.25,
) -> None:
    """A notifier's loop: hand new transitions to `handle` until `stop`, then let go of the cursor.

    It reads at once when a run event is published in this process (or `nudged` is set), else every
    `poll_seconds`.  An error keeps the cursor before the transition that raised it and pauses
    `retry_seconds` (new runs do not hurry the retry: the forge gets its pause); errors in
    `transient` (the forge is away) are a warning, anything else is logged with its trace, and
    the loop outlives both.  `between` (sweeps, reconciling) runs in a thread after each read,
    in the process that holds the lease: with several servers on one store, one of them sweeps
    (deploys a preview, merges a pull request), as one of them reads.
    Rounds start `min_gap` apart at the least: under a stream of runs, events come faster
    than rounds are worth, and each round reads what came meanwhile in one batch.
    """
    nudged = nudged or asyncio.Event()
    listener = bus.listen(lambda _: nudged.set(), kinds=frozenset({"run"}))
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            began = loop.time()
            nudged.clear()
            retry = False
            try:
                # A batch that was not full read up to the outbox's end: what came since waits for
                # the next round (an empty read per round cost as much as one that found rows).
                while await asyncio.to_thread(reader.poll, handle) >= reader.batch:
                    pass
            except transient as exc:
                log.warning("%s: will try again", name, extra={"error": str(exc)})
                retry = True
            except Exception:  # a notifier must outlive any one bad transition or store hiccup
                log.exception("%s: reading the outbox failed", name)
                retry = True
            if between is not None and reader.holds_lease:
                try:
                    await asyncio.to_thread(between)
                except Exception:  # the next round tries again
                    log.exception("%s: the work between reads failed", name)
            with suppress(TimeoutError):
                waiting = stop.wait() if retry else _first(nudged, stop)
                await asyncio.wait_for(waiting, retry_seconds if retry else poll_seconds)
            if (rest := began + min_gap - loop.time()) > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
    finally:
        listener.close()
        with suppress(Exception):
            await asyncio.to_thread(reader.close)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
