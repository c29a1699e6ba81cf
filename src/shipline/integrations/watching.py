"""Kubernetes watches on the objects shipline applied for one environment.

One thread per environment holds an event loop with one watch per kind
(label-selected: `app.kubernetes.io/managed-by=shipline`,
`shipline.dev/environment=NAME`), so the reconciler hears of a hand edit or a
deletion as it happens instead of listing everything on a timer.  A watch
that breaks (the API server restarted, a timeout) is started again after a
pause; `on_event` is called from the watch thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient

from shipline.domain.objects import selector
from shipline.integrations.clusterobjects import Kind
from shipline.integrations.clusters import Cluster
from shipline.integrations.clustersessions import resource_class

log = logging.getLogger("shipline.gitops.watch")

EventHandler = Callable[[str, dict[str, Any]], None]
"""(ADDED | MODIFIED | DELETED, the object) -> None"""


class ObjectWatch:
    def __init__(self, cluster: Cluster, kinds: Sequence[Kind], on_event: EventHandler, retry_seconds: float = 2.0) -> None:
        self.cluster = cluster
        self.kinds = list(dict.fromkeys(kinds))
        self.on_event = on_event
        self.retry_seconds = retry_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"watch-{self.cluster.environment}", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # stopped already: its loop has closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._watch_all())

    async def _watch_all(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        client = AsyncClient(
            self.cluster.config, namespace=self.cluster.target.namespace, trust_env=False, timeout=httpx2.Timeout(30.0, read=None)
        )
        tasks = [asyncio.create_task(self._watch(client, kind)) for kind in self.kinds]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _watch(self, client: AsyncClient, kind: Kind) -> None:
        resource = resource_class(kind)
        labels: dict[str, Any] = dict(selector(self.cluster.environment))
        namespace = "*" if self.cluster.target.cluster_wide else self.cluster.target.namespace
        while True:
            if kind.namespaced:
                stream = client.watch(resource, namespace=namespace, labels=labels)
            else:
                stream = client.watch(resource, labels=labels)
            try:
                async for event, obj in stream:
                    body = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                    try:
                        self.on_event(event, body)
                    except Exception:  # a handler's bug must not end the watch
                        log.exception("drift handler failed", extra={"environment": self.cluster.environment})
            except (ApiError, httpx2.HTTPError, OSError) as exc:
                log.info("watch restarts", extra={"environment": self.cluster.environment, "kind": kind.kind, "error": str(exc)})
            finally:
                # Close the response now, while the client is open (not whenever the generator is collected).
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            await asyncio.sleep(self.retry_seconds)
