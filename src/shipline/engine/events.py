"""In-process events: every change the recorder saves is also published here.

The CLI's live view and the server's streams subscribe; a slow subscriber
loses its oldest events rather than slowing the engine down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

EventKind = Literal["run", "task", "step", "log"]


@dataclass(frozen=True)
class Event:
    run_id: int
    kind: EventKind
    data: dict[str, Any]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Subscription:
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

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.queue.get()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, maxsize: int = 10_000, kinds: frozenset[EventKind] | None = None) -> Subscription:
        """A queue of the events published from now on; with `kinds`, of those kinds alone.

        A subscriber that acts on runs' ends says so: under a stream of runs most events
        are tasks' and steps', and each one put in its queue woke it for nothing.
        """
        sub = Subscription(self, maxsize, kinds)
        self._subscriptions.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        for sub in list(self._subscriptions):
            if sub.kinds is None or event.kind in sub.kinds:
                sub.put(event)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscriptions)
