"""`POST /hooks/{github,gitea,gitlab}`: a forge tells us something happened.

The signature is checked first, on the raw bytes, against the webhook
secrets of the forge's registered repositories; only a body signed with one
of them is parsed at all.  So an anonymous caller gets the same 401 whether
or not the repository it names is registered (no probing which exist), and
a hostile body (huge, deeply nested) costs one HMAC, not a parse.  The body
was already bounded while it arrived (see `guarding`), and everything that
blocks (SQL, decryption, YAML) runs in a worker thread, off the event loop.

A push to an environment's repository and branch (see `shipline env`), signed
with that environment's secret `env-NAME-webhook`, makes the GitOps controller
read the branch head at once; a pull request opened or pushed to on it gets a
dry run of the environment at its head (`gitops/promoting.py`).

Answers: 202 with the runs started, 200 for a ping, a redelivery or an event
no rule wants, 401 for a bad or missing signature, 404 for a signed payload
that names a repository not registered with that secret, 400 for a body that
is not the forge's JSON, 413 for a body too large.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from shipline.domain.environments import Environment
from shipline.domain.urls import url_key
from shipline.exceptions import ShiplineError, UsageError
from shipline.store.repositories import Repository
from shipline.triggers.events import EventKind, Forge, ForgeEvent, PullRequestAction
from shipline.triggers.parsing import PARSERS, decode
from shipline.triggers.verifying import read_headers, verify

log = logging.getLogger("shipline.server.hooks")
router = APIRouter(tags=["webhooks"])

SIGNATURE_HEADER = {"github": "X-Hub-Signature-256", "gitea": "X-Gitea-Signature", "gitlab": "X-Gitlab-Token"}


def _answer(status: int, result: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"result": result, "message": message, **extra}, status_code=status)


async def _receive(forge: Forge, request: Request) -> JSONResponse:
    body = await request.body()  # already bounded by webhook_max_bytes
    headers = dict(request.headers)
    return await run_in_threadpool(_handle, request.app.state.server, forge, headers, body)


def _handle(server: Any, forge: Forge, headers: Mapping[str, str], body: bytes) -> JSONResponse:
    def count(result: str) -> None:
        server.metrics.deliveries.labels(forge.value, result).inc()

    delivery = read_headers(forge, headers, body)
    # Several registrations may share a URL (one pipeline each), each with its own secret:
    # keep every repository whose secret signed this body.  One HMAC per distinct secret.
    verdicts: dict[str, bool] = {}
    verified: list[Repository] = []
    if delivery.signature is not None:
        for repo in server.state.list_repositories():
            if repo.forge != forge.value or not repo.secret:
                continue
            secret = server.state.webhook_secret(repo)
            if secret not in verdicts:
                verdicts[secret] = verify(forge, secret, body, delivery.signature)
            if verdicts[secret]:
                verified.append(repo)
    environments = _signed_environments(server, forge, body, delivery.signature)
    if not verified and not environments:
        count("unauthorized")
        what = "missing" if delivery.signature is None else "does not match the webhook secret of a registered repository"
        log.warning("webhook refused", extra={"forge": forge.value, "delivery": delivery.delivery_id, "reason": what})
        return _answer(
            401,
            "unauthorized",
            f"{SIGNATURE_HEADER[forge.value]} {what}; nothing started "
            "(set the hook's secret to the one given to `shipline repos add --secret`)",
        )
    try:
        payload = decode(body)
        event = PARSERS[forge](delivery.event, payload)
    except UsageError as exc:
        count("bad_request")
        return _answer(400, "bad_request", str(exc))
    keys = {url_key(u) for u in event.repo_urls if u}
    poked = [
        e.name for e in environments if event.kind is EventKind.PUSH and url_key(e.repo) in keys and event.branch == e.branch
    ]
    if poked:
        server.poke_environments(poked)
    checked = _check_pull_request(server, environments, event, keys)
    poked += [name for name in checked if name not in poked]
    named = [r for r in verified if url_key(r.url) in keys]
    if not named and poked:
        count("started")
        what = "pull request dry run started" if checked else "branch head checked now"
        return _answer(
            202,
            "started",
            f"environment{'s' if len(poked) > 1 else ''} {', '.join(poked)}: {what}",
            environments=poked,
            delivery=delivery.delivery_id,
        )
    if not named:
        if event.kind is EventKind.PING and not event.repo_urls:
            count("ping")
            return _answer(200, "ping", "pong (this hook names no repository)")
        count("unknown_repository")
        urls = ", ".join(event.repo_urls) or "none"
        return _answer(
            404,
            "unknown_repository",
            f"no {forge.value} repository with this webhook secret is registered for {urls}; "
            "register it with `shipline repos add`",
        )
    if event.kind is EventKind.PULL_REQUEST:
        for repo in named:  # closed or merged: its preview goes; reopened: it comes back (server/previews.py)
            try:
                server.previews.pull_request_event(repo, event)
            except ShiplineError:  # the runs this event starts matter more than the preview's bookkeeping
                log.exception("preview not updated for a pull request event", extra={"repository": repo.name})
    outcomes = []
    for repo in named:
        source = forge.value if len(named) == 1 else f"{forge.value}:{repo.id}"
        try:
            outcome = server.dispatcher.dispatch(repo, event, source, delivery.delivery_id)
        except ShiplineError as exc:
            count("error")
            return _answer(exc.http_status, "error", f"repository {repo.name!r}: {exc}")
        outcomes.append((repo, outcome))
    results = {o.result for _, o in outcomes}
    result = "started" if "started" in results else sorted(results)[0]
    count(result)
    run_ids = [i for _, o in outcomes for i in o.run_ids]
    message = "; ".join(o.message for _, o in outcomes)
    return _answer(
        202 if result == "started" else 200,
        result,
        message,
        runs=run_ids,
        delivery=delivery.delivery_id,
        repositories=[r.name for r, _ in outcomes],
        environments=poked,
    )


def _check_pull_request(server: Any, environments: list[Environment], event: ForgeEvent, keys: set[str]) -> list[str]:
    """A pull request opened or pushed to on an environment's repository and branch gets a dry run of that
    environment at its head (commit status `shipline/env-NAME`, the diff as a comment).  Not from a fork: the
    dry run holds the environment's kubeconfig.  A redelivery starts nothing new (one dry run per head)."""
    if event.kind is not EventKind.PULL_REQUEST or server.promoter is None or event.pr_from_fork:
        return []
    if event.pr_action not in (PullRequestAction.OPENED, PullRequestAction.SYNCHRONIZED, PullRequestAction.REOPENED):
        return []
    if event.pr_number is None or not event.sha:
        return []
    checked = []
    for env in environments:
        if url_key(env.repo) in keys and event.base_branch == env.branch:
            try:
                server.promoter.check(env, event.pr_number, event.sha, event.branch)
            except ShiplineError as exc:
                log.warning("pull request dry run not started", extra={"environment": env.name, "error": str(exc)})
                continue
            checked.append(env.name)
    return checked


def _signed_environments(server: Any, forge: Forge, body: bytes, signature: str | None) -> list[Environment]:
    """Environments whose webhook secret (`env-NAME-webhook`) signed this body.

    An environment without that secret takes no webhooks: it follows its branch by polling.
    """
    if signature is None or server.reconciler is None:
        return []
    secrets = server.engine.secrets
    signed = []
    for stored in server.environments.all():
        name = f"env-{stored.name}-webhook"
        if not secrets.missing([name]) and verify(forge, secrets.reveal([name])[name], body, signature):
            signed.append(stored.environment)
    return signed


@router.post("/hooks/github", summary="GitHub webhook (push, pull_request, ping)")
async def github(request: Request) -> JSONResponse:
    return await _receive(Forge.GITHUB, request)


@router.post("/hooks/gitea", summary="Gitea webhook (push, create, pull_request)")
async def gitea(request: Request) -> JSONResponse:
    return await _receive(Forge.GITEA, request)


@router.post("/hooks/gitlab", summary="GitLab webhook (Push Hook, Tag Push Hook, Merge Request Hook)")
async def gitlab(request: Request) -> JSONResponse:
    return await _receive(Forge.GITLAB, request)
