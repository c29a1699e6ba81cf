"""The server's door: who may send a body, how large it may be, and the headers every answer carries.

One ASGI middleware in front of everything, because FastAPI reads and
parses a request's body before any dependency (authentication included)
runs:

- a change to the API (`POST`, `PUT`, `PATCH`, `DELETE` under `/api/`) is
  authenticated from its headers first; without an operator token it is
  refused before a byte of its body is read;
- a body is counted while it arrives (`Content-Length` or chunked) and
  refused with 413 as soon as it passes the limit (`webhook_max_bytes` for
  `/hooks/*`, `api_max_bytes` elsewhere), so memory stays bounded;
- every answer carries security headers (CSP, frame, sniffing, referrer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipline.server.auth import READ_METHODS, lookup, require_operator

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        server = scope["app"].state.server
        path: str = scope["path"]
        method: str = scope["method"]
        headers = Headers(scope=scope)
        hook = path.startswith("/hooks/")
        if path.startswith("/api/") and method not in READ_METHODS:
            query = QueryParams(scope.get("query_string", b""))
            try:
                token = await run_in_threadpool(lookup, server.state, method, headers, query)
                scope["shipline.token"] = require_operator(token)
            except HTTPException as exc:
                kind = "Forbidden" if exc.status_code == 403 else "Unauthorized"
                await _answer(send, exc.status_code, {"error": kind, "message": exc.detail}, exc.headers)
                return
        limit = server.settings.webhook_max_bytes if hook else server.settings.api_max_bytes
        declared = headers.get("content-length", "")
        try:
            if declared.isdigit() and int(declared) > limit:
                raise TooLarge
            body = await _read_body(receive, limit)
        except TooLarge:
            setting = "webhook_max_bytes" if hook else "api_max_bytes"
            message = f"request body larger than {limit} bytes ({setting}); nothing was read past that"
            if hook:
                forge = path.removeprefix("/hooks/")
                if forge in ("github", "gitea", "gitlab"):
                    server.metrics.deliveries.labels(forge, "bad_request").inc()
                await _answer(send, 413, {"result": "too_large", "message": message})
            else:
                await _answer(send, 413, {"error": "UsageError", "message": message})
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # what comes next is the client going away

    return replay


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                if name not in headers:
                    headers[name] = value
        await send(message)

    return wrapped


async def _answer(send: Send, status: int, body: dict[str, Any], extra: Mapping[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
