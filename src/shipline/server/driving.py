"""The engine's worker loop in a thread of its own.

The server's event loop answers webhooks and API calls; the engine's loop
starts processes and records their progress.  Apart, a burst of webhooks
does not hold back the steps of running runs, and a burst of starting runs
does not hold back webhook answers.  They share the database (SQLite in WAL
mode, or PostgreSQL) and nothing else: engine events are handed to the
server's bus through `call_soon_threadsafe`, and calls into the engine (cancel)
run on the engine's own loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from shipline.engine.events import Event, EventBus
from shipline.engine.running import Engine
from shipline.exceptions import ShiplineError

log = logging.getLogger("shipline.server.engine")
T = TypeVar("T")


class EngineThread:
    def __init__(self, engine: Engine, server_bus: EventBus, poll_seconds: float, drain_seconds: float = 0.0) -> None:
        self.engine = engine
        self.server_bus = server_bus
        self.poll_seconds = poll_seconds
        self.drain_seconds = drain_seconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.failure: BaseException | None = None

    def start(self, server_loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._run, args=(server_loop,), name="shipline-engine", daemon=True)
        self._thread.start()
        self._started.wait(30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, server_loop: asyncio.AbstractEventLoop) -> None:
        try:
            asyncio.run(self._main(server_loop))
        except BaseException as exc:  # reported by /readyz and the log
            self.failure = exc
            log.exception("the engine's worker loop stopped")

    async def _main(self, server_loop: asyncio.AbstractEventLoop) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handing = _Handover(self.loop, server_loop, self.server_bus, self._publish)
        with self.engine.bus.listen(handing.take):
            self._started.set()
            try:
                await self.engine.serve(self._stop, poll_seconds=self.poll_seconds, drain_seconds=self.drain_seconds)
            finally:
                handing.send()  # the last runs' ends, before the loop closes

    def _halt(self) -> None:
        assert self._stop is not None
        self._stop.set()
        self.engine.wake()

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self.server_bus.publish(event)

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run `fn` on the engine's loop (what touches its running drivers must) and return its result."""
        if self.loop is None or not self.alive:
            raise ShiplineError("the engine is not running; see the server log")

        async def wrapped() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def poke(self) -> None:
        """A run was queued: let the engine look now rather than at its next poll."""
        if self.loop is not None and self.alive:
            with suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(self.engine.wake)

    def hurry(self) -> None:
        """Told again to stop: the runs it waits for (drain_seconds) are cancelled now."""
        if self.loop is not None and self.alive:
            with suppress(RuntimeError):  # the loop has closed already
                self.loop.call_soon_threadsafe(self.engine.hurry)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the engine: its runs get `drain_seconds` to end, then are cancelled (a minute for that at most)."""
        timeout = self.drain_seconds + 60 if timeout is None else timeout
        if self.loop is not None and self.alive:
            # One call: after `_stop` is set the loop may finish and close at once.
            with suppress(RuntimeError):  # the loop has closed already
                self.loop.call_soon_threadsafe(self._halt)
        if self._thread is not None:
            self._thread.join(timeout)


HANDOVER_SECONDS = 0.01
"""How long the engine's events wait to cross to the server's loop together (`_Handover`)."""


class _Handover:
    """The engine's events on their way to the server's loop, in order, as many at a time as come
    within HANDOVER_SECONDS: one wake-up of the server's loop per batch, not one per event.
    Crossing costs the engine's loop a write to the server loop's wake-up socket, and a wait for
    the GIL after it: under a burst of runs, one batch per turn of the engine's loop took 9% of
    its time.  A browser that follows a run sees its events 10 ms later at most.  An event of a
    kind no one on the server's bus takes (steps' and logs' while no one streams them) does not
    cross at all: in a burst of runs those were half the events, and each woke the server's
    loop for nothing."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server_loop: asyncio.AbstractEventLoop,
        server_bus: EventBus,
        publish: Callable[[list[Event]], None],
    ) -> None:
        self.loop, self.server_loop, self.server_bus, self.publish = loop, server_loop, server_bus, publish
        self.batch: list[Event] = []
        self.thread = threading.get_ident()  # made on the engine's loop

    def take(self, event: Event) -> None:
        if not self.server_bus.wants(event.kind):
            return
        if threading.get_ident() != self.thread:
            # Published off the engine's loop (a request thread cancelling a run that waits): alone.
            with suppress(RuntimeError):
                self.server_loop.call_soon_threadsafe(self.publish, [event])
            return
        self.batch.append(event)
        if len(self.batch) == 1:
            self.loop.call_later(HANDOVER_SECONDS, self.send)

    def send(self) -> None:
        """What waits, to the server's loop now."""
        batch, self.batch = self.batch, []
        if batch:
            with suppress(RuntimeError):  # the server's loop is closing
                self.server_loop.call_soon_threadsafe(self.publish, batch)
