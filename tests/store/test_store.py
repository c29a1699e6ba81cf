"""The store against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from psycopg import pq
from sqlalchemy import Integer, bindparam, create_engine, event, inspect, literal_column, select, text

from shipline.domain.runs import RunStatus, TaskStatus, Transition
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.exceptions import NotFound, StoreError, ToolError
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.listening import RUNS, StoreListener
from shipline.store.repositories import Claim, ServerStore
from shipline.store.secrets import Keyring, SecretStore
from shipline.store.sql import _RUN_ROWS, MIGRATIONS, PING_AFTER_IDLE, SqlStore, _Compiled, _send
from shipline.testbed.postgres import ThrowawayPostgres

PIPELINE = """
name: stored
params: {who: {default: world}, token: {default: hunter2}}
tasks:
  - name: greet
    steps: [{run: 'echo "hello ${{ params.who }}"; echo "who=${{ params.who }}" >> $SHIPLINE_OUTPUT'}]
    results: [who]
  - name: fail
    steps: [{run: exit 4}]
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[SqlStore]:
    url = settings.database if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = SqlStore(url)
    yield store
    store.close()


def test_migrations_create_the_schema(any_store: SqlStore) -> None:
    tables = set(inspect(any_store.engine).get_table_names())
    assert {"runs", "task_runs", "step_runs", "alembic_version"} <= tables
    SqlStore(any_store.url).close()  # a second open finds the schema current


def test_a_run_round_trips(any_store: SqlStore, settings: Settings, write: Callable[..., Path]) -> None:
    engine = Engine(settings, any_store, LocalExecutor(1.0))
    pipeline = load_pipeline(write(PIPELINE))
    run_id = engine.submit(pipeline, {"who": "db"})
    queued = any_store.get_run(run_id)
    assert queued.status == RunStatus.QUEUED
    assert [t.status for t in queued.tasks] == [TaskStatus.PENDING, TaskStatus.PENDING]
    record = asyncio.run(engine.drive(run_id))
    again = any_store.get_run(run_id)
    assert again == record
    assert record.status == RunStatus.FAILED
    assert record.params == {"who": "db", "token": "hunter2"}
    assert record.task("greet").results == {"who": "db"}
    assert record.task("fail").steps[0].exit_code == 4
    assert record.started_at and record.finished_at and record.started_at.tzinfo is not None
    spec, params = any_store.load_spec(run_id)
    assert spec == pipeline and params["token"] == "hunter2"


def test_a_new_run_reads_back_whole(any_store: SqlStore, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(
        write(
            """
            name: shaped
            tasks:
              - {name: zeta, steps: [{run: 'true'}]}
              - {name: alpha, needs: [zeta], steps: [{run: 'true'}]}
              - {name: mid, needs: [zeta, alpha], steps: [{run: 'true'}]}
            finally:
              - {name: last, steps: [{run: 'true'}]}
            """
        )
    )
    trigger = {"event": "push", "branch": 'feature/é "quoted"', "sha": "abc"}
    run_id = any_store.create_run(
        pipeline, {"who": "it's ${{ x }}"}, trigger=trigger, owner="a:1:1", concurrency_group="deploy-dev"
    )
    record = any_store.get_run(run_id)
    assert (record.status, record.pipeline, record.params, record.trigger) == (
        RunStatus.QUEUED,
        "shaped",
        {"who": "it's ${{ x }}"},
        trigger,
    )
    assert record.concurrency_group == "deploy-dev" and record.created_at.tzinfo is not None
    assert [(t.name, t.needs, t.is_finally, t.status, t.attempts, t.results) for t in record.tasks] == [
        ("zeta", [], False, TaskStatus.PENDING, 0, {}),
        ("alpha", ["zeta"], False, TaskStatus.PENDING, 0, {}),
        ("mid", ["zeta", "alpha"], False, TaskStatus.PENDING, 0, {}),
        ("last", [], True, TaskStatus.PENDING, 0, {}),
    ]
    assert any_store.load_spec(run_id) == (pipeline, {"who": "it's ${{ x }}"})
    assert [(t.run_id, t.kind, t.status) for t in any_store.transitions_after(0)][-1] == (run_id, "run", "queued")
    assert not any_store.claim(run_id, "b:2:2")  # taken by its owner at creation


def test_list_filters_and_pages(any_store: SqlStore, settings: Settings, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(write(PIPELINE))
    other = load_pipeline(write(PIPELINE.replace("name: stored", "name: other"), "other.yaml"))
    ids = [any_store.create_run(pipeline if i % 2 else other, {}) for i in range(7)]
    newest = any_store.list_runs(limit=3)
    assert [r.id for r in newest] == ids[::-1][:3]
    page2 = any_store.list_runs(limit=3, before=newest[-1].id)
    assert [r.id for r in page2] == ids[::-1][3:6]
    assert {r.pipeline for r in any_store.list_runs(pipeline="other")} == {"other"}
    any_store.request_cancel(ids[0])
    assert [r.id for r in any_store.list_runs(status="cancelled")] == [ids[0]]


def test_claim_is_exclusive(any_store: SqlStore, write: Callable[..., Path]) -> None:
    run_id = any_store.create_run(load_pipeline(write(PIPELINE)), {})
    assert any_store.claim(run_id, "a:1:1")
    assert not any_store.claim(run_id, "b:2:2")
    assert not any_store.claim(run_id, "b:2:2", ungrouped=True)  # the quick claim of a run made without a group
    assert any_store.claim(run_id, "a:1:1", ungrouped=True)  # its owner keeps it
    other = any_store.create_run(load_pipeline(write(PIPELINE)), {})
    assert any_store.claim(other, "b:2:2", ungrouped=True)
    assert not any_store.claim(other, "a:1:1")


def test_missing_run(any_store: SqlStore) -> None:
    with pytest.raises(NotFound, match="no run 999"):
        any_store.get_run(999)


def test_writes_together_that_change_one_row_twice_keep_both_changes(any_store: SqlStore, write: Callable[..., Path]) -> None:
    run_id = any_store.create_run(load_pipeline(write(PIPELINE)), {})
    at = datetime.now(UTC)
    with any_store.together():
        any_store.update_task(run_id, "greet", status="running", started_at=at)
        any_store.update_task(run_id, "fail", status="skipped", message="not today")  # another row of the table
        any_store.start_step(run_id, "greet", 1, 0, name="hi", log_path="x.log", started_at=at, pid=None)
        any_store.update_step(run_id, "greet", 1, 0, status="succeeded", exit_code=0, finished_at=at)
        any_store.update_task(run_id, "greet", results={"who": "db"})
    greet, fail = any_store.get_run(run_id).tasks
    assert (greet.status, greet.results, greet.started_at) == (TaskStatus.RUNNING, {"who": "db"}, at)
    assert [(s.status, s.exit_code) for s in greet.steps] == [("succeeded", 0)]
    assert (fail.status, fail.message) == (TaskStatus.SKIPPED, "not today")


def test_a_large_block_of_writes_together_is_saved_whole_and_in_order(any_store: SqlStore, write: Callable[..., Path]) -> None:
    """A failed fan-out skips its pending tasks at once: a block larger than one statement takes."""
    tasks = "\n".join(f"  - {{name: t{i}, needs: [], steps: [{{run: 'true'}}]}}" for i in range(40))
    run_id = any_store.create_run(load_pipeline(write(f"name: wide\ntasks:\n{tasks}\n")), {})
    with any_store.together():
        for i in range(40):
            skipped = Transition(run_id, "task", TaskStatus.SKIPPED.value, f"t{i}", {"message": f"reason {i}"})
            any_store.update_task(run_id, f"t{i}", skipped, status=TaskStatus.SKIPPED.value, message=f"reason {i}")
    record = any_store.get_run(run_id)
    assert [(t.status, t.message) for t in record.tasks] == [(TaskStatus.SKIPPED, f"reason {i}") for i in range(40)]
    outbox = [(t.task, t.data["message"]) for t in any_store.transitions_after(0, 1000) if t.kind == "task"]
    assert outbox == [(f"t{i}", f"reason {i}") for i in range(40)]


def test_a_failed_write_together_leaves_none_of_the_block(any_store: SqlStore, write: Callable[..., Path]) -> None:
    run_id = any_store.create_run(load_pipeline(write(PIPELINE)), {})
    at = datetime.now(UTC)
    with pytest.raises(StoreError, match="uq_step_runs_place|UNIQUE constraint failed"), any_store.together():
        any_store.update_task(run_id, "greet", status="running", started_at=at)
        any_store.start_step(run_id, "greet", 1, 0, name="hi", log_path="x.log", started_at=at, pid=None)
        any_store.start_step(run_id, "greet", 1, 0, name="hi again", log_path="x.log", started_at=at, pid=None)
    greet = any_store.get_run(run_id).task("greet")
    assert (greet.status, greet.steps) == (TaskStatus.PENDING, [])


def test_a_large_block_of_writes_that_fails_leaves_none_of_it(any_store: SqlStore, write: Callable[..., Path]) -> None:
    """A block too large for one statement (a fan-out's task ends) is one transaction too: when its
    last write is refused (a step's place taken meanwhile), its first writes and its outbox rows
    are not saved either."""
    tasks = "\n".join(f"  - {{name: t{i}, needs: [], steps: [{{run: 'true'}}]}}" for i in range(30))
    run_id = any_store.create_run(load_pipeline(write(f"name: wide\ntasks:\n{tasks}\n")), {})
    at = datetime.now(UTC)
    any_store.start_step(run_id, "t29", 1, 0, name="s", log_path="x.log", started_at=at, pid=None)
    before = len(any_store.transitions_after(0, 1000))
    with pytest.raises(StoreError, match="uq_step_runs_place|UNIQUE constraint failed"), any_store.together(read_back=run_id):
        for i in range(30):
            ended = Transition(run_id, "task", TaskStatus.SUCCEEDED.value, f"t{i}", {"message": ""})
            any_store.update_task(run_id, f"t{i}", ended, status=TaskStatus.SUCCEEDED.value, finished_at=at)
        for i in range(30):  # the last of these is the step saved above
            any_store.start_step(run_id, f"t{i}", 1, 0, name="s", log_path="x.log", started_at=at, pid=None)
    record = any_store.get_run(run_id)
    assert {t.status for t in record.tasks} == {TaskStatus.PENDING}
    assert [len(t.steps) for t in record.tasks] == [0] * 29 + [1]
    assert len(any_store.transitions_after(0, 1000)) == before


EVERY_KIND_OF_WRITE = """
name: kinds
tasks:
  - name: two-steps
    steps:
      - run: echo "first=1" >> "$SHIPLINE_OUTPUT"
      - run: sleep 0.3; echo "second=2" >> "$SHIPLINE_OUTPUT"
    results: [first, second]
  - name: flaky
    retries: 1
    steps: [{run: 'if [ -e flaked ]; then echo again; else touch flaked; exit 3; fi'}]
  - name: skipped
    when: ${{ 'a' == 'b' }}
    steps: [{run: 'true'}]
  - name: fails
    steps: [{run: 'echo "it broke"; exit 5'}]
  - name: never
    steps: [{run: 'true'}]
finally:
  - name: report
    steps: [{run: 'echo "ended ${{ run.status }}"'}]
"""


@pytest.mark.postgres
def test_postgresql_and_sqlite_keep_the_same_record_and_outbox_of_a_run(
    postgres_url: str, settings: Settings, tmp_path: Path, write: Callable[..., Path]
) -> None:
    """On PostgreSQL the recorder's writes of a moment go as one statement; on SQLite as a transaction.

    Steps of two steps, a retry, skipped tasks, a failure and a finally task: each kind of
    write, alone and together, leaves what SQLite's plain transactions leave."""
    pipeline = load_pipeline(write(EVERY_KIND_OF_WRITE))
    seen = {}
    for label, url in (("sqlite", settings.database), ("postgres", postgres_url)):
        store = SqlStore(url)
        engine = Engine(settings.model_copy(update={"home": tmp_path / label}), store, LocalExecutor(1.0))
        record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
        outbox = [(t.kind, t.task, t.status) for t in store.transitions_after(0, 1000)]
        tasks = [
            (t.name, t.status, t.attempts, t.results, t.message, [(s.status, s.exit_code) for s in t.steps]) for t in record.tasks
        ]
        seen[label] = (record.status, record.message, tasks, outbox)
        store.close()
    assert seen["postgres"] == seen["sqlite"]
    status, _, tasks, outbox = seen["postgres"]
    assert status == RunStatus.FAILED
    assert tasks[0][3] == {"first": "1", "second": "2"} and tasks[0][5] == [("succeeded", 0), ("succeeded", 0)]
    assert tasks[1][2] == 2 and tasks[1][1] == TaskStatus.SUCCEEDED
    assert outbox[0] == ("run", None, "queued") and outbox[-1] == ("run", None, "failed")
    assert outbox.index(("task", "fails", "failed")) < outbox.index(("task", "report", "running"))


@contextlib.contextmanager
def _sent_to(store: SqlStore, tmp_path: Path) -> Iterator[list[str]]:
    """The types of the messages libpq sends in the block (its protocol trace), in the list once it ends."""
    sent: list[str] = []
    store.engine.dispose()  # the pool's connections are made anew, traced
    with (tmp_path / "libpq.trace").open("w+") as trace:

        def traced(dbapi_connection: Any, _record: object) -> None:
            dbapi_connection.pgconn.trace(trace.fileno())
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

        event.listen(store.engine, "connect", traced)
        try:
            yield sent
        finally:
            event.remove(store.engine, "connect", traced)
            store.engine.dispose()
        trace.seek(0)
        sent += [line.split("\t")[2].strip() for line in trace if line.startswith("F\t")]


@pytest.mark.postgres
def test_a_large_block_of_writes_is_a_few_round_trips_to_postgresql(
    postgres_url: str, write: Callable[..., Path], tmp_path: Path
) -> None:
    """The ends of a fan-out's tasks are saved together: 40 tasks' rows and 40 steps' rows, with
    their outbox rows and the run's record read back, go in one pipeline: one round trip, where a
    transaction of its own was a BEGIN, one per shape and a COMMIT (and 69 when only 16 writes
    waited for the block's end)."""
    store = SqlStore(postgres_url)
    tasks = "\n".join(f"  - {{name: t{i}, needs: [], steps: [{{run: 'true'}}]}}" for i in range(40))
    run_id = store.create_run(load_pipeline(write(f"name: wide\ntasks:\n{tasks}\n")), {})
    at = datetime.now(UTC)
    with _sent_to(store, tmp_path) as sent, store.together(read_back=run_id) as block:
        for i in range(40):
            store.start_step(run_id, f"t{i}", 1, 0, name="s", log_path="x.log", started_at=at, pid=None, status="succeeded")
            ended = Transition(run_id, "task", TaskStatus.SUCCEEDED.value, f"t{i}", {"message": ""})
            store.update_task(run_id, f"t{i}", ended, status=TaskStatus.SUCCEEDED.value, finished_at=at)
    assert sent.count("Sync") == 1, sent  # and the record read back in the block's transaction
    assert "Query" not in sent, "a BEGIN or COMMIT was sent"
    record = store.get_run(run_id)
    assert block.record == record
    assert [(t.status, [s.status for s in t.steps]) for t in record.tasks] == [(TaskStatus.SUCCEEDED, ["succeeded"])] * 40
    assert [t.task for t in store.transitions_after(0, 1000) if t.kind == "task"] == [f"t{i}" for i in range(40)]
    store.close()


@pytest.mark.postgres
def test_a_quick_run_made_as_the_cli_makes_it_is_a_few_round_trips_to_postgresql(
    postgres_url: str, settings: Settings, write: Callable[..., Path], tmp_path: Path
) -> None:
    """Made (the run, its task and its outbox row: one statement), run (its start and end, the
    task's, the step's row made and ended: one, or two when the step outlasts the recorder's
    50 ms hold) and read back (in the round trip of the run's end: one Sync after both), none in
    a transaction of its own: BEGIN and COMMIT are round trips too.  The same run was eight
    statements and a transaction.  Counted in what libpq sends (its protocol trace): the
    recorder's writes go to the driver directly."""
    store = SqlStore(postgres_url)
    engine = Engine(settings, store, LocalExecutor(1.0))
    pipeline = load_pipeline(write("name: quick\ntasks:\n  - name: only\n    steps: [{run: 'echo hi'}]\n"))
    asyncio.run(engine.drive(engine.submit(pipeline, {}, claim=True)))  # the statements' compiled forms
    with _sent_to(store, tmp_path) as sent:
        run = asyncio.run(engine.drive(engine.submit(pipeline, {}, claim=True)))
    step = run.task("only").steps[0]
    assert (run.status, step.exit_code) == (RunStatus.SUCCEEDED, 0)
    assert run.started_at and run.finished_at and step.started_at and step.finished_at and step.finished_at.tzinfo
    assert run == store.get_run(run.id)
    assert 2 <= sent.count("Sync") <= 3, sent  # a Sync ends what is sent before the answers are awaited: a round trip
    assert "Query" not in sent, "a BEGIN or COMMIT was sent"
    outbox = [(t.kind, t.task, t.status) for t in store.transitions_after(0, 1000) if t.run_id == run.id]
    assert outbox == [
        ("run", None, "queued"),
        ("run", None, "running"),
        ("task", "only", "running"),
        ("task", "only", "succeeded"),
        ("run", None, "succeeded"),
    ]
    store.close()


@pytest.mark.postgres
def test_a_postgresql_on_the_same_machine_is_reached_through_its_socket(
    postgres_server: ThrowawayPostgres, settings: Settings, write: Callable[..., Path]
) -> None:
    """`postgresql+psycopg://USER@/DB?host=/SOCKET/FOLDER&port=PORT`, as `psql` reaches a local
    server: runs are made, driven and read back through the socket, and the listener that tells
    a server of runs made elsewhere hears them (with the pool's TCP keepalives, which a socket has not)."""
    url = postgres_server.create_database(socket=True)
    store = SqlStore(url)
    heard = threading.Semaphore(0)
    listener = StoreListener(store, {RUNS: lambda _: heard.release()}, on_listening=heard.release, wake_seconds=0.2)
    try:
        assert listener.start(), "listening through the socket"
        assert heard.acquire(timeout=10)  # the poke as it starts
        engine = Engine(settings, store, LocalExecutor(1.0))
        pipeline = load_pipeline(write("name: local\ntasks:\n  - name: only\n    steps: [{run: 'echo hi'}]\n"))
        run = asyncio.run(engine.drive(engine.submit(pipeline, {}, claim=True)))
        assert run.status == RunStatus.SUCCEEDED and store.get_run(run.id) == run
        assert heard.acquire(timeout=10), "the new run was announced to listeners"
        with store._driver() as driver:
            assert driver.execute("SELECT inet_server_addr()").fetchone() == (None,), "a socket has no server address"
    finally:
        listener.stop()
        store.close()


@pytest.mark.postgres
def test_postgresql_plans_the_read_of_one_runs_record_once_not_on_every_read(
    postgres_url: str, write: Callable[..., Path]
) -> None:
    """A run's record is read after every API call that changes it and at the end of every run:
    PostgreSQL keeps one plan for that read (prepared after the fifth, generic after five more)
    instead of planning it again each time, as it did for `r.id = ANY($1)` (0.05-0.09 ms a read)."""
    store = SqlStore(postgres_url)
    run_ids = [store.create_run(load_pipeline(write(PIPELINE)), {}) for _ in range(3)]
    for i in range(20):
        assert store.get_run(run_ids[i % 3]).id == run_ids[i % 3]
    assert [r.id for r in store.list_runs(limit=10)] == run_ids[::-1]  # many records: still read at once
    with store._driver() as driver:
        plans = driver.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'SELECT r.id, %'"
        ).fetchall()
    assert plans and sum(generic for generic, _ in plans) >= 5, plans
    assert sum(custom for _, custom in plans) <= 6 * len(plans), plans
    store.close()


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_block_whose_record_cannot_be_read_back_writes_nothing(
    database: str, settings: Settings, request: pytest.FixtureRequest, write: Callable[..., Path]
) -> None:
    """A block's writes and the read of the record they make are one transaction (on PostgreSQL one
    round trip): a read that fails leaves the run as it was, and its transition out of the outbox,
    so the recorder's retry of the block does not write it twice."""
    store = SqlStore(request.getfixturevalue("postgres_url") if database == "postgres" else settings.database)
    run_id = store.create_run(load_pipeline(write(PIPELINE)), {})
    # The read's statement, as the store keeps it built, made one the database refuses to run.
    key: Any = "record" if database == "postgres" else ("sqlite-read", id(_RUN_ROWS), 1)
    store._statements[key] = _Compiled("SELECT 1 / 0 FROM no_such_table WHERE $1 IS NOT NULL", ("id",), {"id": None}, {})
    if database == "sqlite":
        store._statements[key] = ("SELECT 1 FROM no_such_table WHERE ? IS NOT NULL", [None], tuple)
    started = Transition(run_id, "run", RunStatus.RUNNING.value)
    with pytest.raises(StoreError, match="no_such_table"), store.together(read_back=run_id):
        store.update_run(run_id, started, status=RunStatus.RUNNING.value, message="started")
    del store._statements[key]
    assert (store.get_run(run_id).status, store.get_run(run_id).message) == (RunStatus.QUEUED, "")
    assert [t.status for t in store.transitions_after(0, 100) if t.run_id == run_id] == ["queued"]
    with store.together(read_back=run_id) as block:
        store.update_run(run_id, started, status=RunStatus.RUNNING.value, message="started")
    assert block.record == store.get_run(run_id) and block.record is not None and block.record.message == "started"
    store.close()


@pytest.mark.postgres
def test_a_throwaway_postgresql_that_does_not_start_leaves_no_folder() -> None:
    server = ThrowawayPostgres()
    server.max_connections = -5  # PostgreSQL refuses to start with it
    with pytest.raises(ToolError, match="pg_ctl -D failed"):
        server.start()
    assert not server.root.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("large", [False, True], ids=["one-write", "large-block"])
def test_a_write_on_a_connection_postgresql_dropped_fails_clearly_and_the_next_one_is_saved(
    postgres_url: str, write: Callable[..., Path], large: bool
) -> None:
    """The recorder's writes go to the driver directly (a large block in a pipeline): a connection
    found dead there is not handed out again, and nothing of the failed block is saved."""
    store = SqlStore(postgres_url)
    tasks = "\n".join(f"  - {{name: t{i}, needs: [], steps: [{{run: 'true'}}]}}" for i in range(20))
    run_id = store.create_run(load_pipeline(write(f"name: wide\ntasks:\n{tasks}\n")), {})

    def save(message: str) -> None:
        with store.together():
            store.update_run(run_id, message=message)
            for i in range(20 if large else 0):
                store.update_task(run_id, f"t{i}", message=message)

    try:
        save("before")
        admin = create_engine(postgres_url)
        with admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        admin.dispose()
        assert ended
        # Through a pipeline libpq finds the connection closed before it reads the server's reason.
        lost = "AdminShutdown: terminating connection|OperationalError: .*server closed the connection"
        with pytest.raises(StoreError, match=f"the store at postgresql.* failed: ({lost})"):
            save("lost with its connection")
        record = store.get_run(run_id)
        assert record.message == "before" and {t.message for t in record.tasks} == {"before" if large else ""}
        save("after")
        record = store.get_run(run_id)
        assert record.message == "after" and {t.message for t in record.tasks} == {"after" if large else ""}
    finally:
        store.close()


@pytest.mark.postgres
def test_the_store_works_on_after_postgresql_restarts(write: Callable[..., Path]) -> None:
    # Its own server: the session's is not restarted under other tests.
    with ThrowawayPostgres() as server:
        store = SqlStore(server.create_database())
        try:
            run_id = store.create_run(load_pipeline(write(PIPELINE)), {})
            server.restart()
            time.sleep(PING_AFTER_IDLE)  # the pooled connection rested: it is pinged, found dead, replaced
            assert store.get_run(run_id).status == RunStatus.QUEUED
            assert store.claim(run_id, "a:1:1")
        finally:
            store.close()


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open the store at postgresql://x:\\*\\*\\*@127.0.0.1:1/db"):
        SqlStore("postgresql://x:secret@127.0.0.1:1/db")


def test_a_database_host_that_does_not_answer_is_a_clear_error_not_a_hang() -> None:
    """A PostgreSQL host that drops the packets (down, firewalled): the kernel would retry the
    connect for two minutes; the store gives up after `connect_timeout` (10 s) and says so."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)  # never accepts: once its queue is full, the kernel drops further SYNs
    port = silent.getsockname()[1]
    queued = [socket.socket() for _ in range(3)]
    for filler in queued:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            SqlStore(f"postgresql://x:secret@127.0.0.1:{port}/db")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    trying = threading.Thread(target=connect, daemon=True)
    trying.start()
    trying.join(60)
    for s in (*queued, silent):
        s.close()
    assert outcome, "still connecting after a minute"
    (error,) = outcome
    assert isinstance(error, StoreError) and "cannot open the store at postgresql://x:***@127.0.0.1" in str(error)
    assert "timeout" in str(error).lower(), error


def test_secrets_round_trip_encrypted(any_store: SqlStore, settings: Settings) -> None:
    secrets = SecretStore(any_store, Keyring.from_settings(settings))
    first = secrets.set("token", "one")
    second = secrets.set("token", "two")  # replaces, keeps when it was made
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert secrets.reveal(["token"]) == {"token": "two"}
    assert secrets.missing(["token", "other"]) == ["other"]
    with pytest.raises(NotFound, match="secret other is not set"):
        secrets.reveal(["token", "other"])
    assert [s.name for s in secrets.all()] == ["token"]
    secrets.delete("token")
    assert secrets.all() == []


def test_an_orphaned_delivery_finds_its_runs(any_store: SqlStore, settings: Settings, write: Callable[..., Path]) -> None:
    state = ServerStore(any_store, Keyring.from_settings(settings))
    dead = {"server-a"}

    def claim(owner: str) -> Claim:
        return state.claim_delivery("github", "d-1", None, "push", owner, lambda claimant, _at: claimant in dead)

    assert claim("server-b") is Claim.NEW
    assert claim("server-a") is Claim.SEEN  # server-b handles it
    engine = Engine(settings, any_store, LocalExecutor(1.0))
    run_id = engine.submit(load_pipeline(write(PIPELINE)), {}, trigger={"source": "github", "delivery": "d-1"})
    engine.submit(load_pipeline(write(PIPELINE)), {}, trigger={"source": "gitea", "delivery": "d-1"})
    dead.add("server-b")
    assert claim("server-c") is Claim.ORPHANED
    assert claim("server-d") is Claim.SEEN  # taken over once only: server-c is alive
    assert state.runs_of_delivery("github", "d-1") == [run_id]
    state.finish_delivery("github", "d-1", "started", [run_id])
    dead.add("server-c")
    assert claim("server-d") is Claim.SEEN  # finished: never taken over


def test_only_one_run_of_a_concurrency_group_is_claimed_at_a_time(any_store: SqlStore, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(write(PIPELINE))
    first = any_store.create_run(pipeline, {}, concurrency_group="deploy-prod")
    second = any_store.create_run(pipeline, {}, concurrency_group="deploy-prod")
    other = any_store.create_run(pipeline, {}, concurrency_group="deploy-dev")
    # The queue offers the oldest of each group; the younger waits behind it.
    assert any_store.next_queued(10) == [first, other]
    # A second engine cannot jump the queue, nor start a run while the group is held.
    assert not any_store.claim(second, "engine-b")
    assert any_store.claim(first, "engine-a")
    assert not any_store.claim(second, "engine-b")
    assert any_store.next_queued(10) == [other]
    assert any_store.group_holder("deploy-prod") == first
    any_store.update_run(first, status=RunStatus.SUCCEEDED.value)
    assert any_store.next_queued(10) == [second, other]
    assert any_store.claim(second, "engine-b")
    assert any_store.get_run(second).concurrency_group == "deploy-prod"


def test_upgrading_drops_credentials_an_older_version_kept_in_repository_urls(settings: Settings) -> None:
    token = "ghp_Zq4cJ8x2LbN7vR1tY6wE3uK9pA0sD5fG"
    settings.home.mkdir(parents=True)
    old = create_engine(settings.database)
    with old.begin() as conn:  # the schema as revision 0004 left it, with what it let in
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        for i, url in enumerate([f"https://{token}@forge.example/o/a.git", "git@forge.example:o/b.git"]):
            conn.execute(
                text(
                    "INSERT INTO repositories (name, url, url_key, forge, secret, pipeline, default_branch, created_at) "
                    "VALUES (:n, :u, 'k', 'git', '', '/p.yaml', 'main', CURRENT_TIMESTAMP)"
                ),
                {"n": f"r{i}", "u": url},
            )
    old.dispose()
    store = SqlStore(settings.database)
    with store.engine.connect() as conn:
        urls = list(conn.execute(text("SELECT url FROM repositories ORDER BY name")).scalars())
    store.close()
    assert urls == ["https://forge.example/o/a.git", "git@forge.example:o/b.git"]
    assert token.encode() not in (settings.home / "shipline.db").read_bytes()


@pytest.mark.postgres
def test_a_statement_sent_straight_to_postgresql_keeps_its_percent_signs_and_repeated_values(postgres_url: str) -> None:
    """What goes to psycopg past SQLAlchemy (a run's creation, a block's one statement, records) is
    compiled once with PostgreSQL's own `$n` placeholders: a literal `%` stays one, and a value
    the statement uses twice is sent once."""
    store = SqlStore(postgres_url)
    statement = select(literal_column("'50% off'"), bindparam("x", type_=Integer), bindparam("x", type_=Integer) + 1)
    compiled = store._compiled("test-percent", lambda: statement)
    with store._autocommit.connect() as conn:
        row = _send(conn.connection.dbapi_connection, compiled, {"x": 41}).fetchone()
    assert tuple(row) == ("50% off", 41, 42)
    assert compiled.names == ("x", "param_1")  # the 1 is a value the statement holds
    store.close()
