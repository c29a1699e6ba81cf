"""Server-Sent Events: the engine's events live, and a run's logs from the first line.

Logs are followed from the files the recorder writes (they are the truth and
hold every line from the first); the event bus only says when to look again,
so a line is never lost or sent twice, however late the reader arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from shipline.engine.events import EventBus, Subscription
from shipline.engine.logs import logs_elsewhere, parse_line
from shipline.files import open_regular
from shipline.server.auth import reader
from shipline.server.forwarding import forward_logs

router = APIRouter(prefix="/api/v1", tags=["streams"])

KEEPALIVE_SECONDS = 15.0
READ_CHUNK = 1024 * 1024
"""At most this much of one log file is read (and held) at a time."""
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    text = f"event: {event}\n"
    if event_id is not None:
        text += f"id: {event_id}\n"
    text += "".join(f"data: {line}\n" for line in json.dumps(data, default=str).splitlines()) + "\n"
    return text.encode()


async def _next(sub: Subscription, stop: asyncio.Event, timeout: float) -> Any:
    """The next event, or None on timeout or shutdown."""
    getter = asyncio.ensure_future(sub.queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (getter, stopper):
            if not fut.done():
                fut.cancel()
    if getter in done:
        return getter.result()
    return None


@router.get("/events", summary="Every run, task and step change as Server-Sent Events (add ?run=ID for one run)")
async def events(request: Request, run: int | None = None, logs: bool = False) -> StreamingResponse:
    await run_in_threadpool(reader, request)
    server = request.app.state.server
    bus: EventBus = server.bus

    async def gen() -> AsyncIterator[bytes]:
        with bus.subscribe(maxsize=5000, kinds=None if logs else frozenset({"run", "task", "step"})) as sub:
            yield sse("hello", {"run": run})
            while not server.stopping.is_set():
                event = await _next(sub, server.stopping, KEEPALIVE_SECONDS)
                if event is None:
                    yield b": keepalive\n\n"
                    continue
                if run is not None and event.run_id != run:
                    continue
                yield sse(event.kind, {"run_id": event.run_id, "at": event.at.isoformat(), **event.data})

    return StreamingResponse(gen(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/runs/{run_id}/logs/stream", summary="A run's log lines as Server-Sent Events, from the first line, until it ends")
async def stream_logs(request: Request, run_id: int, task: str | None = None) -> StreamingResponse:
    await run_in_threadpool(reader, request)
    server = request.app.state.server
    store = server.sql
    await run_in_threadpool(store.get_run, run_id)  # 404 before the stream starts
    if elsewhere := await run_in_threadpool(logs_elsewhere, store, server.settings.logs, run_id):
        return forward_logs(request, elsewhere, server.engine.owner)

    def look(offsets: dict[str, int]) -> tuple[Any, list[bytes], bool]:
        """In a worker thread: the run, and the next lines of its logs (at most READ_CHUNK per file)."""
        record = store.get_run(run_id)  # read before the files, so nothing written after the end is missed
        out: list[bytes] = []
        more = False
        for task_name, attempt, index, name, path in store.log_paths(run_id, task):
            lines, offset, full = _read_from(server.log_file(path), offsets.get(path, 0), READ_CHUNK)
            offsets[path] = offset
            more = more or full
            for at, text in lines:
                out.append(
                    sse("line", {"task": task_name, "attempt": attempt, "step": index, "name": name, "at": at, "text": text})
                )
        return record, out, more

    async def gen() -> AsyncIterator[bytes]:
        offsets: dict[str, int] = {}
        with server.bus.subscribe(maxsize=1000) as sub:
            while True:
                record, lines, more = await run_in_threadpool(look, offsets)
                for line in lines:
                    yield line
                if more:
                    continue  # a file has more than one chunk waiting: read on before anything else
                if record.status.done:
                    yield sse("end", {"status": record.status.value, "message": record.message})
                    return
                if server.stopping.is_set():
                    return
                # Wake on this run's next event, or look again after a while anyway.
                deadline = asyncio.get_running_loop().time() + 1.0
                while True:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    event = await _next(sub, server.stopping, left)
                    if event is None or event.run_id == run_id:
                        break
                with suppress(asyncio.QueueEmpty):
                    while True:  # what is queued now is on disk too: drop it and read the files
                        sub.queue.get_nowait()

    return StreamingResponse(gen(), media_type="text/event-stream", headers=SSE_HEADERS)


def _read_from(path: Path, offset: int, limit: int) -> tuple[list[tuple[str, str]], int, bool]:
    """Whole lines after `offset` within `limit` bytes, the offset after the last, and whether the limit was hit.

    A partial last line waits for its end (unless it alone fills the limit: then it is cut).
    """
    out: list[tuple[str, str]] = []
    try:
        with open_regular(path) as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return out, offset, False
    full = len(data) == limit
    pos = offset
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n") and not (full and pos == offset):
            break
        pos += len(raw)
        line = parse_line(raw.decode("utf-8", errors="replace"))
        out.append((line.at.isoformat(), line.text))
    return out, pos, full
