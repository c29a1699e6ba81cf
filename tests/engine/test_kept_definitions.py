"""The engine keeps the definitions of the runs it made until it drives them, within a budget: a run
beyond it, or one made by another engine, is read back from the store. Each run runs its own definition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.engine import running
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.settings import Settings
from shipline.store.sql import SqlStore

DEFINITION = """
name: p{n}
tasks:
  - name: say
    steps: [{{run: 'echo "who=p{n}" >> "$SHIPLINE_OUTPUT"'}}]
    results: [who]
"""


def test_runs_beyond_the_budget_and_from_another_engine_run_their_own_definitions(
    write: Callable[..., Path], engine: Engine, settings: Settings, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(running, "KEPT_TASKS", 2)
    pipelines = [load_pipeline(write(DEFINITION.format(n=n), f"p{n}.yaml")) for n in range(4)]
    other = Engine(settings, store, engine.executor)
    ids = [engine.submit(p, {}) for p in pipelines[:3]] + [other.submit(pipelines[3], {})]
    # The scenario: two kept, the third past the budget, the fourth made by another engine.
    assert list(engine._made) == ids[:2] and list(other._made) == ids[3:]

    async def drive_all() -> list[str]:
        records = [await engine.drive(run_id) for run_id in ids]
        return [r.tasks[0].results.get("who", "") for r in records]

    assert asyncio.run(drive_all()) == ["p0", "p1", "p2", "p3"]
    assert engine._made == {}


def test_the_runs_of_one_definition_count_it_once_within_a_budget_of_runs(
    write: Callable[..., Path], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of one pipeline's runs shares its definition: kept for every run up to KEPT_RUNS,
    though KEPT_TASKS would hold it only once."""
    monkeypatch.setattr(running, "KEPT_TASKS", 1)
    monkeypatch.setattr(running, "KEPT_RUNS", 3)
    shared = load_pipeline(write(DEFINITION.format(n=0), "p0.yaml"))
    ids = [engine.submit(shared, {}) for _ in range(4)]
    assert list(engine._made) == ids[:3]

    async def drive_all() -> list[str]:
        records = [await engine.drive(run_id) for run_id in ids]
        return [r.tasks[0].results.get("who", "") for r in records]

    assert asyncio.run(drive_all()) == ["p0"] * 4
    assert engine._made == {} and engine._made_tasks == 0
    # Emptied, the budget takes a definition of its size again.
    engine.submit(shared, {})
    assert len(engine._made) == 1
