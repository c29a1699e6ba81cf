"""`GET /api/v1/promotions`: each version of a service proposed to an environment, and where it got to.

Read-only: the promotion notifier (`gitops/promoting.py`) is the one writer.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from shipline.server.api import Reader
from shipline.store.promotions import Promotion, PromotionState, PromotionStore

router = APIRouter(prefix="/api/v1", tags=["environments"])


@router.get(
    "/promotions", response_model=list[Promotion], summary="Promotions, newest first (filter by environment, service, state)"
)
async def list_promotions(
    request: Request,
    _: Reader,
    environment: str | None = None,
    service: str | None = None,
    state: PromotionState | None = None,
    limit: int = 100,
) -> list[Promotion]:
    store = PromotionStore(request.app.state.server.sql)
    states = [state] if state is not None else None
    return await asyncio.to_thread(
        lambda: store.list(environment=environment, service=service, states=states, limit=max(1, min(limit, 1000)))
    )
