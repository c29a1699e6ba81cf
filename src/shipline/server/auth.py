"""API tokens: who may read and who may change things.

A token is sent as `Authorization: Bearer shp_...`.  Only reads (GET) also
take `?token=`, for the browser's EventSource, which cannot set headers; a
change never does (a URL ends up in logs and browser history).  Reading
works without a token when `anonymous_read` is on; every change needs an
operator token, checked before the request's body is read (see `guarding`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from shipline.store.repositories import Role, ServerStore, Token

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_text(method: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    if "token" in query and method.upper() not in READ_METHODS:
        raise HTTPException(
            401,
            "?token= is accepted only for reading (the browser's EventSource); send the token as "
            "`Authorization: Bearer <token>` to change anything",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return query.get("token") or None


def lookup(state: ServerStore, method: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Token | None:
    """The token the request carries; None without one; 401 for one that is not valid."""
    text = token_text(method, headers, query)
    if text is None:
        return None
    token = state.check_token(text)
    if token is None:
        raise HTTPException(
            401,
            "the API token is not valid (revoked, or mistyped); create one with `shipline tokens create`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def require_operator(token: Token | None) -> Token:
    if token is None:
        raise HTTPException(
            401,
            "changing anything needs an operator token: send `Authorization: Bearer <token>` "
            "(create one with `shipline tokens create --role operator`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if token.role is not Role.OPERATOR:
        raise HTTPException(403, f"token {token.name!r} has role {token.role.value!r}; this needs an operator token")
    return token


def require_reader(token: Token | None, anonymous_read: bool) -> Token | None:
    if token is None and not anonymous_read:
        raise HTTPException(
            401,
            "this server needs an API token to read: send `Authorization: Bearer <token>` "
            "(create one with `shipline tokens create --role read`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def _lookup(request: Request) -> Token | None:
    checked = request.scope.get("shipline.token", False)
    if checked is not False:  # the guard already looked it up, before the body was read
        return checked  # type: ignore[no-any-return]
    return lookup(request.app.state.server.state, request.method, request.headers, request.query_params)


def reader(request: Request) -> Token | None:
    return require_reader(_lookup(request), request.app.state.server.settings.anonymous_read)


async def operator(request: Request) -> Token:
    """Async: the guard has looked the token up for every change under /api/, and a plain
    function would be one more trip to a worker thread per request (FastAPI runs those there)."""
    checked = request.scope.get("shipline.token", False)
    if checked is False:  # not under the guard's paths: the store is read in a thread, as always
        checked = await run_in_threadpool(_lookup, request)
    return require_operator(checked)
