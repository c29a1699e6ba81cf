"""`/api/v1/environments`: each environment's state and history, and sync or rollback for operators.

Sync and rollback queue a run of the environment's pipeline (the same one
`shipline env sync` runs); the reconciler writes its outcome into the history
when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from shipline.domain.environments import EnvironmentStatus, HistoryEntry
from shipline.gitops import syncing
from shipline.server.api import Operator, Reader

router = APIRouter(prefix="/api/v1", tags=["environments"])


class EnvironmentOut(BaseModel):
    environment: dict[str, Any]
    """The declaration, as `shipline env apply` stored it."""
    status: EnvironmentStatus
    drift: str
    history: list[HistoryEntry] = []


class Started(BaseModel):
    run: int
    revision: str
    last_verified: str


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(default="", description="The commit to go back to; empty: the verified commit before the applied one.")


def _server(request: Request) -> Any:
    return request.app.state.server


def _kubeconfig(server: Any, secret: str) -> str | None:
    secrets = server.engine.secrets
    return None if secrets.missing([secret]) else str(secrets.reveal([secret])[secret])


def _one(server: Any, name: str, *, live: bool, history: int) -> EnvironmentOut:
    store = server.environments
    stored = store.get(name)
    kubeconfig = _kubeconfig(server, stored.environment.kubeconfig_secret) if live else None
    status = syncing.status(server.sql, store, stored, kubeconfig)
    entries = store.history(name, limit=history) if history else []
    return EnvironmentOut(environment=stored.environment.declared(), status=status, drift=stored.drift, history=entries)


@router.get("/environments", response_model=list[EnvironmentOut], summary="Every environment with its status")
async def list_environments(request: Request, _: Reader) -> list[EnvironmentOut]:
    server = _server(request)
    stored = await asyncio.to_thread(server.environments.all)
    # Status from the branch head and the history (the cluster is asked on the detail page).
    return list(await asyncio.gather(*(asyncio.to_thread(_one, server, s.name, live=False, history=0) for s in stored)))


@router.get(
    "/environments/{name}", response_model=EnvironmentOut, summary="One environment: status (health from the cluster) and history"
)
async def get_environment(request: Request, name: str, _: Reader, limit: int = 30) -> EnvironmentOut:
    return await asyncio.to_thread(_one, _server(request), name, live=True, history=max(1, min(limit, 200)))


@router.get("/environments/{name}/history", response_model=list[HistoryEntry], summary="Syncs and rollbacks, newest first")
async def environment_history(request: Request, name: str, _: Reader, limit: int = 50) -> list[HistoryEntry]:
    store = _server(request).environments
    await asyncio.to_thread(store.get, name)
    return list(await asyncio.to_thread(store.history, name, max(1, min(limit, 500))))


@router.post("/environments/{name}/sync", response_model=Started, status_code=202, summary="Queue a sync of the branch head")
async def sync_environment(request: Request, name: str, _: Operator) -> Started:
    server = _server(request)
    stored = await asyncio.to_thread(server.environments.get, name)
    back = await asyncio.to_thread(syncing.last_verified, server.environments, name)
    run_id = await asyncio.to_thread(server.submit_environment, stored.environment, syncing.Action.SYNC, "", back)
    return Started(run=run_id, revision="", last_verified=back)


@router.post(
    "/environments/{name}/rollback", response_model=Started, status_code=202, summary="Queue a rollback to an earlier commit"
)
async def rollback_environment(request: Request, name: str, body: RollbackIn, _: Operator) -> Started:
    server = _server(request)
    stored = await asyncio.to_thread(server.environments.get, name)
    to, back = await asyncio.to_thread(syncing.rollback_plan, server.environments, name, body.to.strip())
    run_id = await asyncio.to_thread(server.submit_environment, stored.environment, syncing.Action.ROLLBACK, to, back)
    return Started(run=run_id, revision=to, last_verified=back)
