"""PostgreSQL's word that something changed, for servers that would otherwise wait for their next look.

Two channels:

- `shipline_runs`: the store's triggers (migration 0012) NOTIFY it when runs are
  inserted and when one ends.  The server pokes its engine, so a run queued by
  another replica or by the CLI (or a concurrency group freed on another replica)
  starts at once.
- `shipline_environments`: a server that was told an environment's branch moved
  (a verified webhook, a promotion's merge) says so here, with the environment's
  name, so that the replica whose GitOps controller holds the lease looks at once.

`StoreListener` holds a connection of its own that LISTENs, in a thread, and hands
each notification's payload to the channel's handler.  A lost connection is made
again after a pause; while it is away, the periodic looks still find everything
(nothing depends on a notification arriving).  SQLite serves one host, whose
processes poke their own engine: nothing to listen to there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import text

from shipline.store.sql import SqlStore

log = logging.getLogger("shipline.store")

RUNS = "shipline_runs"
ENVIRONMENTS = "shipline_environments"
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Pauses before connecting again, the last one repeated."""


def announce(store: SqlStore, channel: str, payloads: Iterable[str]) -> None:
    """NOTIFY `channel` once per payload (PostgreSQL; nothing on SQLite, where no other host listens)."""
    if store.is_sqlite:
        return
    with store.engine.begin() as conn:
        for payload in payloads:
            conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


class StoreListener:
    def __init__(
        self,
        store: SqlStore,
        handlers: Mapping[str, Callable[[str], None]],
        *,
        on_listening: Callable[[], None] | None = None,
        wake_seconds: float = 1.0,
    ) -> None:
        """`handlers`: channel -> what to do with a notification's payload.  `on_listening` runs each time
        listening starts (or starts again): what happened while no one listened was not heard."""
        if store.is_sqlite:
            raise ValueError("only PostgreSQL notifies: an SQLite store has nothing to listen to")
        self.store = store
        self.handlers = dict(handlers)
        self.on_listening = on_listening
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
        from psycopg import sql

        engine = self.store.engine
        args, params = engine.dialect.create_connect_args(engine.url)
        params = {**self.store.network, **params}  # a silent database is found by keepalives, as the pool's are
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(*args, **params, autocommit=True) as conn:
                    for channel in self.handlers:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    failures = 0
                    if self.on_listening is not None:
                        self.on_listening()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=self.wake_seconds):
                            self._hand(notice.channel, notice.payload)
            except Exception as exc:  # the database restarts, the network drops: listen again
                self._listening.clear()
                pause = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("not listening for changes elsewhere (%s); again in %gs", exc, pause)
                self._stop.wait(pause)

    def _hand(self, channel: str, payload: str) -> None:
        handler = self.handlers.get(channel)
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:  # one handler's failure must not end the listening
            log.exception("handling a notification on %s failed", channel)
