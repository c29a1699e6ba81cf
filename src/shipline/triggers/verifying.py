"""Is this delivery from the forge, and which delivery is it?  Headers and HMACs, no I/O.

GitHub signs the body with HMAC-SHA256 in `X-Hub-Signature-256: sha256=<hex>`,
Gitea in `X-Gitea-Signature: <hex>`; GitLab sends the shared secret itself in
`X-Gitlab-Token`.  Comparisons are constant-time.  Each delivery carries an
id that stays the same when the forge redelivers it, which is what makes a
redelivery start nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from shipline.triggers.events import Forge


@dataclass(frozen=True)
class Delivery:
    """What the headers of one webhook request say."""

    forge: Forge
    event: str
    """The forge's event name (`push`, `pull_request`, `Push Hook`, ...)."""
    delivery_id: str
    """Stable across redeliveries; falls back to a hash of the body when the forge sent none."""
    signature: str | None
    """The signature (GitHub, Gitea) or token (GitLab) as sent; None when missing."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette's headers are case-insensitive, a plain dict is not.
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value.strip() if value is not None else None


def read_headers(forge: Forge, headers: Mapping[str, str], body: bytes) -> Delivery:
    body_id = "sha256:" + hashlib.sha256(body).hexdigest()
    if forge is Forge.GITHUB:
        event = _header(headers, "X-GitHub-Event") or ""
        delivery = _header(headers, "X-GitHub-Delivery")
        signature = _header(headers, "X-Hub-Signature-256")
    elif forge is Forge.GITEA:
        event = _header(headers, "X-Gitea-Event") or _header(headers, "X-Gogs-Event") or ""
        delivery = _header(headers, "X-Gitea-Delivery") or _header(headers, "X-Gogs-Delivery")
        signature = _header(headers, "X-Gitea-Signature")
    else:
        event = _header(headers, "X-Gitlab-Event") or ""
        # `Idempotency-Key` is the same on every retry; older GitLab only sends the event UUID.
        delivery = _header(headers, "Idempotency-Key") or _header(headers, "X-Gitlab-Event-UUID")
        signature = _header(headers, "X-Gitlab-Token")
    return Delivery(forge, event, (delivery or body_id)[:200], signature or None)


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of the body: what GitHub and Gitea compute."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(forge: Forge, secret: str, body: bytes, signature: str | None) -> bool:
    """True when the delivery was made by someone who knows the repository's webhook secret."""
    if not signature or not secret:
        return False
    if forge is Forge.GITLAB:
        return hmac.compare_digest(signature.encode(), secret.encode())
    expected = sign(secret, body)
    if forge is Forge.GITHUB:
        if not signature.startswith("sha256="):
            return False
        signature = signature[len("sha256=") :]
    return hmac.compare_digest(signature.lower().encode(), expected.encode())
