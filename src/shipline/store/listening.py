"""PostgreSQL's word that a run was queued or ended, for an engine that would otherwise wait for its next look.

The store's triggers (migration 0012) NOTIFY `shipline_runs` when runs are
inserted and when one ends.  `RunsListener` holds a connection of its own that
LISTENs on that channel, in a thread, and calls `on_change` for each
notification: the server pokes its engine, so a run queued by another replica
or by the CLI (or a concurrency group freed on another replica) starts at once.
A lost connection is made again after a pause; while it is away, the engine's
periodic look still finds everything (nothing depends on a notification
arriving).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shipline.store.sql import SqlStore

log = logging.getLogger("shipline.store")

CHANNEL = "shipline_runs"
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Pauses before connecting again, the last one repeated."""


class RunsListener:
    def __init__(self, store: SqlStore, on_change: Callable[[], None], *, wake_seconds: float = 1.0) -> None:
        if store.is_sqlite:
            raise ValueError("only PostgreSQL notifies: an SQLite store has nothing to listen to")
        self.store = store
        self.on_change = on_change
        self.wake_seconds = wake_seconds
        """How long a wait for notifications lasts before the thread looks whether it must stop."""
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> bool:
        """Start listening; True once the first LISTEN is in place (False: not yet, it goes on trying)."""
        self._thread = threading.Thread(target=self._run, name="shipline-listen", daemon=True)
        self._thread.start()
        return self._listening.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.wake_seconds + 5)

    def _run(self) -> None:
        import psycopg

        engine = self.store.engine
        args, params = engine.dialect.create_connect_args(engine.url)
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(*args, **params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    failures = 0
                    self.on_change()  # what was queued while no one listened
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.wake_seconds):
                            self.on_change()
            except Exception as exc:  # the database restarts, the network drops: listen again
                self._listening.clear()
                pause = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("not listening for queued runs (%s); again in %gs", exc, pause)
                self._stop.wait(pause)
