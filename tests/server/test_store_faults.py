"""When the store fails under a running server (issue 12, item 11).

SQLite's own authorizer denies writes for a while: the store answers reads and
refuses every write with a real SQLite error, as a read-only or full disk would
(as root, file modes do not stop writes, so the test cannot chmod the files).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import Live
from sqlalchemy import event

from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.logs import read_log
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore

URL = "https://github.example/acme/app.git"

SLOW = """
name: slow
tasks:
  - name: first
    steps:
      - run: echo one; sleep 2; echo two
  - name: second
    needs: [first]
    steps:
      - run: echo three
"""


ONE = """
name: one
tasks:
  - name: only
    steps:
      - run: sleep 2
"""


class WriteDenial:
    """Deny every write on the store's SQLite connections while `on`."""

    def __init__(self, store: SqlStore) -> None:
        self.on = False
        event.listen(store.engine, "checkout", self._checkout)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if self.on:
            dbapi_connection.set_authorizer(_deny_writes)
        else:
            dbapi_connection.set_authorizer(None)


def _deny_writes(action: int, *_: object) -> int:
    writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
    return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK


def _running(live: Live, definition: Path, pipeline: str) -> int:
    """A run of `pipeline` (registered from `definition`) started through the API, once it runs."""
    with live.client(live.operator_token) as c:
        r = c.post("/api/v1/repositories", json={"name": pipeline, "url": URL, "forge": "git", "pipeline": str(definition)})
        assert r.status_code == 201, r.text
        run: int = c.post("/api/v1/runs", json={"pipeline": pipeline}).json()["id"]
    live.wait_run(run, {"running"})
    return run


@pytest.fixture
def never_retrieved(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    lost = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "never retrieved" in r.getMessage()]
    assert not lost, lost


def test_a_run_whose_state_cannot_be_written_ends_failed_once_the_store_is_back(
    live: Live, pipeline_file: Callable[..., Path], never_retrieved: None
) -> None:
    denial = WriteDenial(live.server.sql)
    run = _running(live, pipeline_file(SLOW), "slow")
    with live.client(live.operator_token) as c:
        assert c.get("/readyz").status_code == 200
        denial.on = True
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "cannot be written" in " ".join(ready.json()["problems"]), ready.text
        assert c.post("/api/v1/runs", json={"pipeline": "slow"}).status_code == 503
        time.sleep(3)  # the first task ends meanwhile: its end cannot be written
        assert c.get(f"/api/v1/runs/{run}").json()["status"] == "running"
        denial.on = False
        record = live.wait_run(run, {"succeeded", "failed", "cancelled"}, timeout=30)
        assert c.get("/readyz").status_code == 200
    assert record["status"] == "failed"
    assert "could not be written" in record["message"], record["message"]
    tasks = {t["name"]: t["status"] for t in record["tasks"]}
    assert tasks["second"] == "skipped" and tasks["first"] in ("failed", "succeeded"), tasks
    assert all(s["status"] != "running" for t in record["tasks"] for s in t["steps"])
    # The engine goes on: the next run runs.
    with live.client(live.operator_token) as c:
        again = c.post("/api/v1/runs", json={"pipeline": "slow"}).json()["id"]
    assert live.wait_run(again, {"succeeded", "failed"}, timeout=30)["status"] == "succeeded"


def test_a_run_whose_last_task_ends_while_the_store_refuses_writes_is_recorded_once_it_is_back(
    live: Live, pipeline_file: Callable[..., Path], never_retrieved: None
) -> None:
    """The last task's end is held to go with the run's (one commit); when neither can be written,
    the task's end is written as it was once the store is back, and the run says why it failed."""
    denial = WriteDenial(live.server.sql)
    run = _running(live, pipeline_file(ONE), "one")
    denial.on = True
    time.sleep(3)  # the task ends meanwhile, and the run with it: neither can be written
    denial.on = False
    record = live.wait_run(run, {"succeeded", "failed", "cancelled"}, timeout=30)
    assert record["status"] == "failed" and "could not be written" in record["message"], record["message"]
    assert [(t["name"], t["status"]) for t in record["tasks"]] == [("only", "succeeded")]


def test_readyz_says_so_when_the_store_file_is_deleted(live: Live) -> None:
    assert httpx.get(live.url + "/readyz").status_code == 200
    database = live.server.settings.home / "shipline.db"
    for path in database.parent.glob("shipline.db*"):
        path.unlink()
    r = httpx.get(live.url + "/readyz")
    assert r.status_code == 503 and "was deleted" in " ".join(r.json()["problems"]), r.text


ECHO = """
name: echo
params:
  word: {}
tasks:
  - name: say
    steps:
      - run: echo "$WORD"
    env:
      WORD: ${{ params.word }}
"""


def test_a_new_store_never_appends_to_an_earlier_stores_logs(settings: Settings, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(write(ECHO))

    def run(word: str) -> list[str]:
        store = SqlStore(settings.database)
        try:
            engine = Engine(settings, store, LocalExecutor.from_settings(settings), EventBus())
            record = asyncio.run(engine.drive(engine.submit(pipeline, {"word": word})))
            assert record.id == 1 and record.status.value == "succeeded"
            return [line.text for _, _, _, _, path in store.log_paths(record.id) for line in read_log(Path(path))]
        finally:
            store.close()

    assert run("old") == ["old"]
    for path in settings.home.glob("shipline.db*"):
        path.unlink()
    assert run("new") == ["new"]
    kept = list((settings.home / "leftovers").glob("run-1-*/logs/say.*.log"))
    assert len(kept) == 1 and "old" in kept[0].read_text()


def test_an_earlier_stores_files_are_set_aside_when_the_run_starts_not_when_it_is_made(
    settings: Settings, store: SqlStore, write: Callable[..., Path]
) -> None:
    """A server's engine may claim a run the moment another thread has stored it: the files set
    aside are what is under the run's id when its driver starts.  Set aside where the run was
    made, the thread that made it could find the run's own first folders and move them away
    (its step then failed: "clone.1.0.out: No such file or directory")."""
    engine = Engine(settings, store, LocalExecutor.from_settings(settings), EventBus())
    run_id = engine.submit(load_pipeline(write(ECHO)), {"word": "new"})  # stored, not started
    earlier = settings.logs / str(run_id)
    earlier.mkdir(parents=True)
    (earlier / "say.1.0.log").write_text("2026-01-01T00:00:00+00:00 old\n")
    record = asyncio.run(engine.drive(run_id))
    assert record.status.value == "succeeded", record.task("say").message
    assert [line.text for *_, path in store.log_paths(run_id) for line in read_log(Path(path))] == ["new"]
    kept = list((settings.home / "leftovers").glob(f"run-{run_id}-*/logs/say.1.0.log"))
    assert len(kept) == 1 and "old" in kept[0].read_text()
