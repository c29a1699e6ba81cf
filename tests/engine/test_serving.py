"""The worker loop: engines take queued runs from a shared store, each run exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.domain.runs import RunStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore


@pytest.mark.postgres
def test_two_engines_share_a_queue_without_doubling(
    settings: Settings, postgres_url: str, write: Callable[..., Path], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    pipeline = load_pipeline(write(f"name: once\ntasks: [{{name: a, steps: [{{run: 'echo $SHIPLINE_RUN_ID >> {ledger}'}}]}}]\n"))
    submitter = SqlStore(postgres_url)
    ids = [submitter.create_run(pipeline, {}) for _ in range(30)]
    engines = [Engine(settings, SqlStore(postgres_url), LocalExecutor(1.0)) for _ in range(2)]
    # Two engines in one process stand in for two replicas: they share only the database.
    engines[1].owner = engines[1].owner + "-replica"

    async def serve_until_done() -> None:
        stop = asyncio.Event()
        workers = [asyncio.create_task(e.serve(stop, poll_seconds=0.05)) for e in engines]
        while any(not r.status.done for r in submitter.list_runs(limit=100)):
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*workers)

    try:
        asyncio.run(asyncio.wait_for(serve_until_done(), 120))
        records = submitter.list_runs(limit=100)
    finally:
        for store in [submitter, *(e.store for e in engines)]:
            store.close()
    runs = ledger.read_text().split()
    assert sorted(map(int, runs)) == sorted(ids), "every run ran exactly once"
    assert {r.status for r in records} == {RunStatus.SUCCEEDED}


def test_serve_picks_up_runs_queued_by_another_process(settings: Settings, store: SqlStore, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(write("name: q\ntasks: [{name: a, steps: [{run: 'true'}]}]\n"))
    engine = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))

    async def scenario() -> list[RunStatus]:
        stop = asyncio.Event()
        worker = asyncio.create_task(engine.serve(stop, poll_seconds=0.05))
        ids = [store.create_run(pipeline, {}) for _ in range(5)]
        while not all(store.get_run(i).status.done for i in ids):
            await asyncio.sleep(0.05)
        stop.set()
        await worker
        return [store.get_run(i).status for i in ids]

    try:
        assert asyncio.run(asyncio.wait_for(scenario(), 60)) == [RunStatus.SUCCEEDED] * 5
    finally:
        engine.store.close()
