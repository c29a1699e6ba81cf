"""`POST /hooks/{github,gitea,gitlab}`: a forge tells us something happened.

The repository is found from the URLs in the payload; the signature is then
checked against that repository's secret before anything else is believed.
Answers: 202 with the runs started, 200 for a ping, a redelivery or an event
no rule wants, 401 for a bad or missing signature, 404 for a repository
nobody registered, 400 for a body that is not the forge's JSON, 413 for a
body too large.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shipline.exceptions import ShiplineError, UsageError
from shipline.triggers.events import EventKind, Forge, ForgeEvent
from shipline.triggers.parsing import PARSERS, decode
from shipline.triggers.verifying import read_headers, verify

log = logging.getLogger("shipline.server.hooks")
router = APIRouter(tags=["webhooks"])


def _answer(status: int, forge: Forge, result: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"result": result, "message": message, **extra}, status_code=status)


async def _receive(forge: Forge, request: Request) -> JSONResponse:
    server = request.app.state.server
    metrics = server.metrics

    def count(result: str) -> None:
        metrics.deliveries.labels(forge.value, result).inc()

    limit = server.settings.webhook_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        count("bad_request")
        return _answer(413, forge, "too_large", f"webhook body larger than {limit} bytes (webhook_max_bytes)")
    body = await request.body()
    if len(body) > limit:
        count("bad_request")
        return _answer(413, forge, "too_large", f"webhook body larger than {limit} bytes (webhook_max_bytes)")
    delivery = read_headers(forge, request.headers, body)
    try:
        payload = decode(body)
        event = PARSERS[forge](delivery.event, payload)
    except UsageError as exc:
        count("bad_request")
        return _answer(400, forge, "bad_request", str(exc))
    poked, refused = _poke_environments(server, forge, event, body, delivery.signature)
    candidates = [r for r in server.state.find_repositories(event.repo_urls) if r.forge == forge.value]
    if not candidates and (poked or refused):
        if not poked:
            count("unauthorized")
            return _answer(401, forge, "unauthorized", f"signature does not match the webhook secret of environment {refused[0]}; nothing started")
        count("started")
        return _answer(
            202, forge, "started", f"environment{'s' if len(poked) > 1 else ''} {', '.join(poked)}: branch head checked now",
            environments=poked, delivery=delivery.delivery_id,
        )
    if not candidates:
        if event.kind is EventKind.PING and not event.repo_urls:
            count("ping")
            return _answer(200, forge, "ping", "pong (this hook names no repository)")
        count("unknown_repository")
        urls = ", ".join(event.repo_urls) or "none"
        return _answer(
            404, forge, "unknown_repository",
            f"no {forge.value} repository registered for {urls}; register it with `shipline repos add`",
        )
    # Several registrations may share a URL (one pipeline each): each has its own secret.
    verified = [r for r in candidates if verify(forge, server.state.webhook_secret(r), body, delivery.signature)]
    if not verified:
        count("unauthorized")
        header = {"github": "X-Hub-Signature-256", "gitea": "X-Gitea-Signature", "gitlab": "X-Gitlab-Token"}[forge.value]
        what = "missing" if delivery.signature is None else "does not match the repository's webhook secret"
        log.warning("webhook refused", extra={"forge": forge.value, "delivery": delivery.delivery_id, "reason": what})
        return _answer(401, forge, "unauthorized", f"{header} {what}; nothing started")
    outcomes = []
    for repo in verified:
        source = forge.value if len(verified) == 1 else f"{forge.value}:{repo.id}"
        try:
            outcome = server.dispatcher.dispatch(repo, event, source, delivery.delivery_id)
        except ShiplineError as exc:
            count("error")
            return _answer(exc.http_status, forge, "error", f"repository {repo.name!r}: {exc}")
        outcomes.append((repo, outcome))
    results = {o.result for _, o in outcomes}
    result = "started" if "started" in results else sorted(results)[0]
    count(result)
    run_ids = [i for _, o in outcomes for i in o.run_ids]
    message = "; ".join(o.message for _, o in outcomes)
    return _answer(
        202 if result == "started" else 200, forge, result, message,
        runs=run_ids, delivery=delivery.delivery_id, repositories=[r.name for r, _ in outcomes],
    )


def _poke_environments(server: Any, forge: Forge, event: ForgeEvent, body: bytes, signature: str | None) -> tuple[list[str], list[str]]:
    """Environments whose repository and branch this push is about: (verified and poked, refused).

    Each environment checks the signature against its own secret `env-NAME-webhook`
    (`shipline secrets set env-NAME-webhook`); one without that secret takes no webhooks
    and follows its branch by polling.  A poke only makes the reconciler read the branch
    head now: nothing from the payload is used.
    """
    reconciler = server.reconciler
    if reconciler is None or event.kind is not EventKind.PUSH:
        return [], []
    poked: list[str] = []
    refused: list[str] = []
    for env in reconciler.environments_for(event.repo_urls, event.branch):
        name = f"env-{env.name}-webhook"
        secrets = server.engine.secrets
        if secrets.missing([name]):
            continue
        if verify(forge, secrets.reveal([name])[name], body, signature):
            poked.append(env.name)
        else:
            refused.append(env.name)
    if poked:
        reconciler.poke(poked)
    return poked, refused


@router.post("/hooks/github", summary="GitHub webhook (push, pull_request, ping)")
async def github(request: Request) -> JSONResponse:
    return await _receive(Forge.GITHUB, request)


@router.post("/hooks/gitea", summary="Gitea webhook (push, create, pull_request)")
async def gitea(request: Request) -> JSONResponse:
    return await _receive(Forge.GITEA, request)


@router.post("/hooks/gitlab", summary="GitLab webhook (Push Hook, Tag Push Hook, Merge Request Hook)")
async def gitlab(request: Request) -> JSONResponse:
    return await _receive(Forge.GITLAB, request)
