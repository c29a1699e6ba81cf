"""In-process events: every change the recorder saves is also published here.

The CLI's live view and the server's streams subscribe; a slow subscriber
loses its oldest events rather than slowing the engine down.  What only
counts or nudges (a metric, "a run ended: read the outbox") listens instead:
a function called as each event is published, with no queue and no task to
wake for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

EventKind = Literal["run", "task", "step", "log"]
log = logging.getLogger("shipline.engine.events")


@dataclass(frozen=True)
class Event:
    run_id: int
    kind: EventKind
    data: dict[str, Any]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class _OnBus:
    """What the bus hands events to, with the kinds it takes (None: every kind), until closed."""

    _bus: EventBus
    kinds: frozenset[EventKind] | None

    def put(self, event: Event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


class Subscription(_OnBus):
    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[EventKind] | None = None) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.kinds = kinds
        """Only events of these kinds are put in the queue (None: every event)."""

    def put(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.queue.get()


class Listener(_OnBus):
    """A function the bus calls with each event of its kinds, on the publisher's thread, as it is
    published: it must be quick, and not block.  What it raises is logged, not the publisher's."""

    def __init__(self, bus: EventBus, fn: Callable[[Event], object], kinds: frozenset[EventKind] | None) -> None:
        self._bus = bus
        self.fn = fn
        self.kinds = kinds

    def put(self, event: Event) -> None:
        try:
            self.fn(event)
        except Exception:  # a listener's bug must not fail the recorder that published
            log.exception("an event listener failed")


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[_OnBus] = set()

    def subscribe(self, maxsize: int = 10_000, kinds: frozenset[EventKind] | None = None) -> Subscription:
        """A queue of the events published from now on; with `kinds`, of those kinds alone.

        A subscriber that acts on runs' ends says so: under a stream of runs most events
        are tasks' and steps', and each one put in its queue woke it for nothing.
        """
        sub = Subscription(self, maxsize, kinds)
        self._subscriptions.add(sub)
        return sub

    def listen(self, fn: Callable[[Event], object], kinds: frozenset[EventKind] | None = None) -> Listener:
        """Call `fn` with each event (of `kinds`) published from now on, until the listener is closed."""
        listener = Listener(self, fn, kinds)
        self._subscriptions.add(listener)
        return listener

    def publish(self, event: Event) -> None:
        for sub in list(self._subscriptions):
            if sub.kinds is None or event.kind in sub.kinds:
                sub.put(event)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscriptions)

    def wants(self, kind: EventKind) -> bool:
        """Whether an event of this kind would reach anyone: safe to ask from another thread."""
        return any(sub.kinds is None or kind in sub.kinds for sub in tuple(self._subscriptions))
