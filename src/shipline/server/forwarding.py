"""Step logs of a run another server ran: the request is passed on to that server.

Servers on one store share runs, not their logs folders (`engine.logs.logs_elsewhere`).
Each registers where the others reach it as it starts (`SqlStore.register_server`);
asked for the logs of a run another one ran, a server asks that one and passes its
answer on as it comes: status, the headers a reader needs, the body (pages of JSON, text,
an event stream that follows a running run).  The reader's token and query go along:
the servers share the tokens too.  A request passed on once is never passed on again
(`FORWARDED`), so two servers that each think the other has the logs answer 409.
"""

from __future__ import annotations

import httpx
from fastapi import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from shipline.engine.logs import Elsewhere
from shipline.exceptions import Conflict

FORWARDED = "x-shipline-forwarded"
"""Set on a request one server passes on to another: that one answers it itself."""

_ASKED = ("authorization", "accept", "last-event-id")
_ANSWERED = frozenset({"content-type", "content-encoding", "cache-control", "x-accel-buffering", "x-next-cursor", "link"})
CONNECT_SECONDS = 5.0
PAGE_SECONDS = 60.0
"""How long the other server may take between two pieces of a page of logs (not of an event stream)."""


def forward_logs(request: Request, elsewhere: Elsewhere, owner: str) -> StreamingResponse:
    """The answer of the server that has the logs; `Conflict` (409) when none can be asked.

    `owner` is this server's engine, named as the one that passed the request on."""
    # This server's own run whose logs are gone (pruned, a home moved) has nowhere else to be.
    if elsewhere.url is None or elsewhere.owner == owner or request.headers.get(FORWARDED):
        raise Conflict(elsewhere.why)
    url = f"{elsewhere.url}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
    headers = {name: value for name in _ASKED if (value := request.headers.get(name)) is not None}
    # Passed through as they come, so the encoding the reader accepts is the one asked for.
    headers["accept-encoding"] = request.headers.get("accept-encoding", "identity")
    headers[FORWARDED] = owner
    return _Forwarded(url, headers, elsewhere)


class _Forwarded(StreamingResponse):
    """Asks when it is sent (on the server's loop, not a request thread), then streams the answer."""

    def __init__(self, url: str, headers: dict[str, str], elsewhere: Elsewhere) -> None:
        super().__init__(iter(()))
        self.url = url
        self.asked = headers
        self.elsewhere = elsewhere

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An event stream may be quiet as long as a step is (it ends with the run); a page comes at once.
        timeout = httpx.Timeout(CONNECT_SECONDS, read=None if self.url.partition("?")[0].endswith("/stream") else PAGE_SECONDS)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            try:
                answer = await client.send(client.build_request("GET", self.url, headers=self.asked), stream=True)
            except httpx.HTTPError as exc:
                detail = f"{self.elsewhere.why}; that server did not answer ({type(exc).__name__}: {exc})"
                await JSONResponse({"error": "BadGateway", "message": detail}, status_code=502)(scope, receive, send)
                return
            try:
                self.status_code = answer.status_code
                self.init_headers({k: v for k, v in answer.headers.items() if k.lower() in _ANSWERED})
                self.body_iterator = answer.aiter_raw()
                await super().__call__(scope, receive, send)
            finally:
                await answer.aclose()
