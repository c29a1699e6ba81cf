"""A long history: listing runs pages through every run once, and each list query is served by an index."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from shipline.domain.runs import RunStatus
from shipline.engine.loading import load_pipeline
from shipline.store.sql import SqlStore

PIPELINE = """
name: {name}
tasks:
  - name: a
    steps: [{{run: 'true'}}]
  - name: b
    steps: [{{run: 'true'}}]
"""


@pytest.fixture
def history(store: SqlStore, write: Callable[..., Path]) -> dict[int, tuple[str, str]]:
    """130 runs of two pipelines, some failed, some succeeded, some still queued: id -> (pipeline, status)."""
    pipelines = {n: load_pipeline(write(PIPELINE.format(name=n), f"{n}.yaml")) for n in ("alpha", "beta")}
    made = {}
    for i in range(130):
        name = "alpha" if i % 3 else "beta"
        run_id = store.create_run(pipelines[name], {})
        status = (RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.QUEUED)[i % 7 % 3]
        if status != RunStatus.QUEUED:
            store.update_run(run_id, status=status.value)
        made[run_id] = (name, status.value)
    return made


def _all_pages(store: SqlStore, **filters: Any) -> list[int]:
    seen: list[int] = []
    before = None
    while True:
        page = store.list_runs(limit=17, before=before, **filters)
        seen += [r.id for r in page]
        if len(page) < 17:
            return seen
        before = page[-1].id


@pytest.mark.parametrize("filters", [{}, {"status": "failed"}, {"pipeline": "beta"}, {"pipeline": "alpha", "status": "queued"}])
def test_paging_back_visits_every_matching_run_once_newest_first(
    store: SqlStore, history: dict[int, tuple[str, str]], filters: dict[str, str]
) -> None:
    expected = sorted(
        (i for i, (p, s) in history.items() if filters.get("pipeline", p) == p and filters.get("status", s) == s),
        reverse=True,
    )
    assert expected  # the filter matches something
    assert _all_pages(store, **filters) == expected


def test_a_page_of_runs_carries_its_tasks(store: SqlStore, history: dict[int, tuple[str, str]]) -> None:
    page = store.list_runs(limit=5)
    assert [r.id for r in page] == sorted(history, reverse=True)[:5]
    for record in page:
        assert [t.name for t in record.tasks] == ["a", "b"]
        assert (record.pipeline, record.status.value) == history[record.id]
        assert record == store.get_run(record.id)


@pytest.fixture
def statements(store: SqlStore) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement SQLite runs for the store while the test runs, its values written in
    (sqlite3's trace: the store sends some statements to the driver itself, past SQLAlchemy)."""
    seen: list[tuple[str, Any]] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(lambda sql: seen.append((sql, ())))

    store.engine.dispose()  # every connection from now on is a new one, traced
    event.listen(store.engine, "connect", trace)
    yield seen
    event.remove(store.engine, "connect", trace)
    store.engine.dispose()


@pytest.mark.parametrize(
    "filters", [{}, {"status": "failed"}, {"pipeline": "beta"}, {"before": 60}, {"status": "succeeded", "before": 40}]
)
def test_listing_runs_reads_through_indexes_and_never_sorts_the_table(
    store: SqlStore, history: dict[int, tuple[str, str]], statements: list[tuple[str, Any]], filters: dict[str, Any]
) -> None:
    """SQLite's own query plans: a page of runs is found through an index (or the ids in order)
    and never by sorting every run, so its cost does not grow with the history."""
    store.list_runs(limit=20, **filters)
    queries = [(sql, params) for sql, params in statements if sql.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 4  # the page's ids, then its runs, tasks and steps
    with store.engine.connect() as conn:
        for sql, params in queries:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            for step in plan:
                if "runs" not in step:
                    continue
                if "TEMP B-TREE" in step:
                    assert "task_runs" in sql or "step_runs" in sql, (sql, plan)  # sorting one page's tasks is fine
                    continue
                # A scan only for the unfiltered newest page: the ids in order, stopped at the page's end.
                unfiltered = "WHERE" not in sql and "ORDER BY runs.id DESC" in sql and "LIMIT" in sql
                assert step.startswith("SEARCH") or (step == "SCAN runs" and unfiltered), (sql, plan)
