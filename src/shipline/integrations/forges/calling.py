"""HTTP to a forge's API: timeouts, bounded retries, and errors that say what to check.

A forge that is restarting answers 502/503 or not at all for a few seconds;
a call that is safe to repeat is tried again a few times with a growing
pause.  A POST that creates something (a pull request, a comment, a hook) is
repeated only when it cannot have reached the forge (the connection was
refused) or the forge said it did nothing (503), so a retry never makes two.

The token goes in a header and nowhere else: not in URLs, messages or logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from shipline.exceptions import ForgeError

log = logging.getLogger("shipline.integrations.forges")

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


def _hint(forge: str, status: int | None, token_setting: str, scopes: str) -> str:
    if status is None:
        return f"is the {forge} URL right and the forge running?"
    if status == 401:
        return f"the token was refused: check {token_setting} (set, not expired, not revoked)"
    if status == 403:
        return f"the token lacks a permission: give {token_setting} {scopes}"
    if status == 404:
        return f"does the repository exist, and can the owner of {token_setting} see it?"
    if status in (409, 422):
        return "the forge refused the change as it stands; see its message"
    if status >= 500:
        return f"{forge} failed on its side; try again, and see its logs if it persists"
    return "see the forge's message"


class ForgeHttp:
    """One forge's API: a base URL, a token header, and `call()`."""

    def __init__(
        self,
        forge: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        token_setting: str,
        scopes: str,
        timeout: float = 15.0,
        attempts: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.forge = forge
        self.token_setting = token_setting
        self.scopes = scopes
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request and return its answer; a 2xx, or a status listed in `ok`, is returned,
        anything else raises ForgeError naming `what` was being done."""
        call = f"{method} {path}"
        response: httpx.Response | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.request(method, path, json=body, params=params)
            except httpx.TransportError as exc:
                safe = method in IDEMPOTENT or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if safe and attempt < self.attempts:
                    self._pause(attempt, call, type(exc).__name__)
                    continue
                raise ForgeError(
                    f"{self.forge}: {what} ({call}) failed: {type(exc).__name__}: {exc}; "
                    f"{_hint(self.forge, None, self.token_setting, self.scopes)} (tried {attempt} time{'s' * (attempt > 1)})",
                    forge=self.forge,
                    call=call,
                    status=None,
                ) from exc
            status = response.status_code
            if 200 <= status < 300 or status in ok:
                return response
            retry = status >= 500 and (method in IDEMPOTENT or status == 503)
            if retry and attempt < self.attempts:
                self._pause(attempt, call, f"HTTP {status}")
                continue
            break
        assert response is not None
        status = response.status_code
        raise ForgeError(
            f"{self.forge}: {what} ({call}) failed: HTTP {status}: {message_of(response)}; "
            f"{_hint(self.forge, status, self.token_setting, self.scopes)}",
            forge=self.forge,
            call=call,
            status=status,
        )

    def _pause(self, attempt: int, call: str, why: str) -> None:
        delay = self.backoff * (2 ** (attempt - 1))
        log.warning("forge call failed; retrying", extra={"forge": self.forge, "call": call, "why": why, "retry_in": delay})
        self.sleep(delay)

    def json(self, method: str, path: str, what: str, **kw: Any) -> Any:
        response = self.call(method, path, what, **kw)
        if not response.content:
            return None
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ForgeError(
                f"{self.forge}: {what} ({method} {path}) answered HTTP {response.status_code} with a body that is not JSON; "
                f"is {self.client.base_url} the forge's API?",
                forge=self.forge,
                call=f"{method} {path}",
                status=response.status_code,
            ) from exc


def message_of(response: httpx.Response) -> str:
    """The forge's own words for a refusal, short: its `message` (and GitHub's `errors`), else the body's start."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:300].strip() or "(no body)"
    if isinstance(data, dict):
        text = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = [str(e.get("message") or e.get("code") or e) if isinstance(e, dict) else str(e) for e in errors[:3]]
            text = f"{text} ({'; '.join(details)})" if text else "; ".join(details)
        return text[:500] or json.dumps(data)[:300]
    return json.dumps(data)[:300]


def field(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def text(data: Any, *path: str) -> str:
    value = field(data, *path)
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
