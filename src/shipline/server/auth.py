"""API tokens: who may read and who may change things.

A token is sent as `Authorization: Bearer shp_...` (or `?token=` for the
browser's EventSource, which cannot set headers).  Reading works without one
when `anonymous_read` is on; every change needs an operator token.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from shipline.store.repositories import Role, ServerStore, Token


def _token_text(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query_params.get("token") or None


def _lookup(request: Request) -> Token | None:
    state: ServerStore = request.app.state.server.state
    text = _token_text(request)
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


def reader(request: Request) -> Token | None:
    token = _lookup(request)
    if token is None and not request.app.state.server.settings.anonymous_read:
        raise HTTPException(
            401,
            "this server needs an API token to read: send `Authorization: Bearer <token>` "
            "(create one with `shipline tokens create --role read`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def operator(request: Request) -> Token:
    token = _lookup(request)
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
