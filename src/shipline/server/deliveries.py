"""`/api/v1/metrics/dora`: DORA's four keys from the store, the same report as `shipline metrics dora --json`."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request

from shipline.domain.dora import WINDOWS, Report
from shipline.gitops.measuring import dora
from shipline.server.api import Reader

router = APIRouter(prefix="/api/v1", tags=["metrics"])


@router.get(
    "/metrics/dora",
    response_model=Report,
    summary="Deployment frequency, lead time, change failure rate and time to restore, with DORA's bands",
)
async def dora_metrics(
    request: Request,
    _: Reader,
    window: Literal["7d", "30d", "90d"] = "30d",
    environment: str = "",
    service: str = "",
) -> Report:
    sql = request.app.state.server.sql
    return await asyncio.to_thread(dora, sql, WINDOWS[window], environment=environment.strip(), service=service.strip())
