"""The outbox: every run and task transition is durable before anyone is told, and read exactly where it was left."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Background

from shipline.domain.runs import RunTransition, TaskStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.outbox import OutboxReader, follow
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore

Write = Callable[..., Path]

PIPELINE = """
name: notified
tasks:
  - name: build
    steps: [{run: 'echo "version=1.2.3" >> "$SHIPLINE_OUTPUT"'}]
    results: [version]
  - name: push
    when: ${{ 'a' == 'b' }}
    steps: [{run: 'true'}]
results:
  version: ${{ tasks.build.results.version }}
"""


def _read_all(reader: OutboxReader) -> list[RunTransition]:
    seen: list[RunTransition] = []
    while reader.poll(seen.append):
        pass
    return seen


def test_a_run_leaves_its_transitions_in_order_for_a_reader_that_comes_later(engine: Engine, write: Write) -> None:
    reader = OutboxReader(engine.store, "status-notifier", "server-1")
    assert _read_all(reader) == []  # a new consumer starts at the end
    run_id = engine.submit(load_pipeline(write(PIPELINE)), {})
    asyncio.run(engine.drive(run_id))
    seen = _read_all(reader)
    assert [(t.kind, t.task, t.status) for t in seen] == [
        ("run", None, "queued"),
        ("run", None, "running"),
        ("task", "build", "running"),
        ("task", "build", "succeeded"),
        ("task", "push", "skipped"),
        ("run", None, "succeeded"),
    ]
    assert {t.run_id for t in seen} == {run_id} and {t.pipeline for t in seen} == {"notified"}
    assert seen[-1].data["results"] == {"version": "1.2.3"}
    assert _read_all(reader) == []  # read once


def test_a_reader_of_runs_alone_skips_the_tasks_and_moves_past_them(engine: Engine, write: Write) -> None:
    runs_only = OutboxReader(engine.store, "runs-only", "server-1", kind="run", batch=2)
    everything = OutboxReader(engine.store, "everything", "server-1")
    assert _read_all(runs_only) == [] and _read_all(everything) == []
    run_id = engine.submit(load_pipeline(write(PIPELINE)), {})
    asyncio.run(engine.drive(run_id))
    assert [(t.kind, t.status) for t in _read_all(runs_only)] == [("run", "queued"), ("run", "running"), ("run", "succeeded")]
    assert len(_read_all(everything)) == 6  # the tasks' transitions are there, for those who read them
    assert _read_all(runs_only) == []  # its cursor is past the run's end, tasks' rows included
    second = engine.submit(load_pipeline(write(PIPELINE)), {})
    asyncio.run(engine.drive(second))
    assert [(t.run_id, t.status) for t in _read_all(runs_only)] == [
        (second, "queued"),
        (second, "running"),
        (second, "succeeded"),
    ]


def test_a_handler_that_fails_sees_the_same_transition_again(engine: Engine, write: Write) -> None:
    reader = OutboxReader(engine.store, "flaky", "server-1")
    _read_all(reader)
    asyncio.run(engine.drive(engine.submit(load_pipeline(write(PIPELINE)), {})))
    calls: list[int] = []

    def flaky(t: RunTransition) -> None:
        calls.append(t.id)
        if len(calls) == 2:
            raise ConnectionError("the forge is down")

    with pytest.raises(ConnectionError):
        reader.poll(flaky)
    reader.poll(flaky)
    assert calls[1] == calls[2]  # retried, not skipped
    assert len(set(calls)) == 6


def test_cancel_and_recovery_are_transitions_too(engine: Engine, write: Write, home: Path) -> None:
    reader = OutboxReader(engine.store, "n", "server-1")
    _read_all(reader)
    queued = engine.submit(load_pipeline(write(PIPELINE)), {})
    engine.cancel(queued)
    # A CLI run killed mid-step: the next engine finds it and says it failed.
    path = write("name: slow\ntasks:\n  - name: sleep\n    steps: [{run: 'sleep 60'}]\n", "slow.yaml")
    cli = Background("run", str(path), output=home / "run.out")
    deadline = time.monotonic() + 60
    while not any(t.task == "sleep" and t.status == "running" for t in engine.store.transitions_after(0, 1000)):
        assert cli.proc.poll() is None and time.monotonic() < deadline, f"the step never ran: {cli.why()}"
        time.sleep(0.1)
    cli.proc.send_signal(signal.SIGKILL)
    cli.proc.wait()
    assert engine.recover()
    seen = [(t.run_id, t.kind, t.task, t.status) for t in _read_all(reader)]
    assert (queued, "run", None, "cancelled") in seen
    slow = max(run_id for run_id, *_ in seen)
    assert seen[-2:] == [(slow, "task", "sleep", "failed"), (slow, "run", None, "failed")]


@pytest.mark.postgres
def test_two_servers_share_a_consumer_without_handling_anything_twice(
    postgres_url: str, settings: Settings, write: Write
) -> None:
    stores = [SqlStore(postgres_url) for _ in range(3)]
    try:
        _share_a_consumer(stores, settings, write)
    finally:
        for store in stores:
            store.close()


def _share_a_consumer(stores: list[SqlStore], settings: Settings, write: Write) -> None:
    engine = Engine(settings, stores[0], LocalExecutor(1.0), EventBus())
    readers = [OutboxReader(store, "promotions", f"server-{i}", lease_seconds=5) for i, store in enumerate(stores[1:])]
    _read_all(readers[0])
    readers[0].close()
    handled: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def serve(reader: OutboxReader) -> None:
        def handle(t: RunTransition) -> None:
            with lock:
                handled.append((reader.owner, t.id))

        while not stop.is_set():
            reader.poll(handle)
            reader.close()  # hand the lease over, so both get turns
            time.sleep(0.01)

    threads = [threading.Thread(target=serve, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    pipeline = load_pipeline(write(PIPELINE))

    async def many() -> None:
        await asyncio.gather(*(engine.drive(engine.submit(pipeline, {})) for _ in range(10)))

    asyncio.run(many())
    expected = {t.id for t in stores[0].transitions_after(0, 1000)}
    deadline = time.monotonic() + 30
    while {i for _, i in handled} != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    ids = [i for _, i in handled]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids)) == 60


def test_the_work_between_reads_is_done_by_the_lease_holder_alone(store: SqlStore) -> None:
    """Two servers on one store: one deploys previews and sweeps pull requests (the one that reads
    the outbox), not both; when it stops, the other takes over."""
    swept: list[str] = []

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not done():
                await asyncio.sleep(0.02)

    async def scenario() -> tuple[str, str, list[str]]:
        bus, stops = EventBus(), {name: asyncio.Event() for name in ("a", "b")}
        loops = {
            name: asyncio.create_task(
                follow(
                    OutboxReader(store, "previews", f"server-{name}"),
                    lambda t: None,
                    bus,
                    stops[name],
                    name=name,
                    poll_seconds=0.02,
                    min_gap=0.01,
                    between=lambda name=name: swept.append(name),
                )
            )
            for name in stops
        }
        await until(lambda: len(swept) >= 10)
        holder = swept[0]
        other = "b" if holder == "a" else "a"
        alone = list(swept)
        stops[holder].set()
        await loops[holder]  # lets go of the lease as it ends
        after = len(swept)
        await until(lambda: len(swept) >= after + 5)
        stops[other].set()
        await loops[other]
        return holder, other, alone + ["|"] + swept[after:]

    holder, other, seen = asyncio.run(scenario())
    alone, _, then = "".join(seen).partition("|")
    assert set(alone) == {holder}, f"only the lease holder sweeps: {alone}"
    assert set(then) == {other}, f"the other takes over once the holder stops: {then}"


ORDER = {"pending": 0, "queued": 0, "running": 1}  # anything else is an end


def test_each_transition_is_saved_before_it_is_told_and_a_running_step_is_saved_while_it_runs(
    engine: Engine, write: Write, tmp_path: Path
) -> None:
    """Transitions that come close together are saved together; none is told before the store has it,
    a step's log lines come after its start, and a step that runs on is in the store (with its pid) meanwhile."""
    gate = tmp_path / "gate"
    pipeline = load_pipeline(
        write(
            f"""
            name: held
            tasks:
              - name: first
                steps: [{{run: 'echo started; while [ ! -e {gate} ]; do sleep 0.02; done'}}]
              - name: second
                needs: [first]
                steps: [{{run: 'echo a'}}, {{run: 'echo b'}}]
            """
        )
    )
    told: list[tuple[str, dict[str, object], str | None]] = []  # (kind, data, the status the store had then)

    def stored(run_id: int, kind: str, data: dict[str, object]) -> str | None:
        record = engine.store.get_run(run_id)
        if kind == "run":
            return record.status.value
        task = next(t for t in record.tasks if t.name == data["task"])
        if kind == "task":
            return task.status.value
        steps = [s for s in task.steps if s.index == data["step"] and s.attempt == data["attempt"]]
        return steps[0].status.value if steps else None

    async def scenario() -> tuple[str, str, str, int | None]:
        with engine.bus.subscribe() as sub:
            run_id = engine.submit(pipeline, {})
            driving = asyncio.create_task(engine.drive(run_id))

            async def listen() -> None:
                while True:
                    event = await sub.queue.get()
                    told.append((event.kind, event.data, None if event.kind == "log" else stored(run_id, event.kind, event.data)))

            listening = asyncio.create_task(listen())
            while not (running := engine.store.running_steps(run_id)):
                assert not driving.done()
                await asyncio.sleep(0.02)
            record = engine.store.get_run(run_id)
            gate.touch()
            await driving
            await asyncio.sleep(0.05)
            listening.cancel()
        return record.status.value, record.tasks[0].status.value, record.tasks[0].steps[0].status.value, running[0][3]

    run_status, task_status, step_status, pid = asyncio.run(scenario())
    # Found while the first step waited for the gate: the run, its task and the step running, with the step's pid.
    assert (run_status, task_status, step_status) == ("running", "running", "running")
    assert pid is not None and pid > 0
    for kind, data, status in told:
        if kind != "log":
            assert status is not None and ORDER.get(status, 2) >= ORDER.get(str(data["status"]), 2), (kind, data, status)
    order = [(k, d.get("task"), d.get("step"), d.get("status") or d.get("line")) for k, d, _ in told if k in ("step", "log")]
    assert order == [
        ("step", "first", 0, "running"),
        ("log", "first", 0, "started"),
        ("step", "first", 0, "succeeded"),
        ("step", "second", 0, "running"),
        ("log", "second", 0, "a"),
        ("step", "second", 0, "succeeded"),
        ("step", "second", 1, "running"),
        ("log", "second", 1, "b"),
        ("step", "second", 1, "succeeded"),
    ]
    assert [d["status"] for k, d, _ in told if k == "run"] == ["running", "succeeded"]


def test_a_stream_of_runs_is_read_in_batches_and_nothing_is_missed(engine: Engine, write: Write) -> None:
    """Each run's events wake the notifiers; under a stream of them a notifier reads what came
    meanwhile in one round, `min_gap` apart, instead of a round per event."""
    reader = OutboxReader(engine.store, "batched", "server-1")
    _read_all(reader)
    pipeline = load_pipeline(write("name: quick\ntasks: [{name: a, steps: [{run: 'true'}]}]\n"))
    polls: list[int] = []
    seen: list[RunTransition] = []

    def counted(handle: Callable[[RunTransition], None]) -> int:
        handled = OutboxReader.poll(reader, handle)
        polls.append(handled)
        return handled

    reader.poll = counted  # type: ignore[method-assign]

    async def scenario() -> float:
        stop = asyncio.Event()
        follower = asyncio.create_task(follow(reader, seen.append, engine.bus, stop, name="test", poll_seconds=60, min_gap=0.1))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        ids = [engine.submit(pipeline, {}) for _ in range(40)]
        await asyncio.gather(*(engine.drive(i) for i in ids))
        deadline = time.monotonic() + 10
        while len([t for t in seen if t.kind == "run" and t.status == "succeeded"]) < 40:
            assert time.monotonic() < deadline, "a run's end was never read"
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start  # from the first run to the last transition read
        stop.set()
        await follower
        return elapsed

    elapsed = asyncio.run(scenario())
    assert len([t for t in seen if t.kind == "run" and t.status == "succeeded"]) == 40
    assert len({t.id for t in seen}) == len(seen), "each transition once"
    # A round reads again only after a full batch: its last poll is the first that was not full.
    rounds = sum(handled < reader.batch for handled in polls)
    assert rounds <= elapsed / 0.1 + 2, f"{rounds} rounds with something to read in {elapsed:.2f}s"
    assert rounds < 40, "not one round per run"


def test_a_quick_task_saved_in_one_write_keeps_every_field_and_transition(engine: Engine, write: Write, tmp_path: Path) -> None:
    """A task whose start and end are saved together is one row write (so is a step's), with
    nothing of either lost: the record and the outbox read as if each had been saved alone."""
    reader = OutboxReader(engine.store, "whole", "server-1")
    _read_all(reader)
    marker = tmp_path / "tried"
    text = f"name: twice\ntasks: [{{name: flaky, retries: 1, steps: [{{run: 'test -e {marker} || {{ touch {marker}; exit 4; }}'}}]}}]\n"
    record = asyncio.run(engine.drive(engine.submit(load_pipeline(write(text)), {})))
    task = record.task("flaky")
    assert (task.status.value, task.attempts) == ("succeeded", 2), task.message
    assert task.started_at is not None and task.finished_at is not None and task.started_at <= task.finished_at
    steps = [(s.attempt, s.status.value, s.exit_code) for s in task.steps]
    assert steps == [(1, "failed", 4), (2, "succeeded", 0)]
    assert all(s.started_at and s.finished_at and s.started_at <= s.finished_at for s in task.steps)
    told = [(t.task, t.status) for t in _read_all(reader) if t.kind == "task"]
    assert told == [("flaky", "running"), ("flaky", "succeeded")]


def _one_run_read(settings: Settings, write: Write, consumer: str) -> tuple[SqlStore, int, OutboxReader, dict[str, bool]]:
    """A store with a one-task run, a reader of its outbox that has read what is there, and the
    switch that makes the store refuse writes (`_denying`)."""
    store = SqlStore(settings.database)
    run_id = store.create_run(load_pipeline(write("name: one\ntasks: [{name: a, steps: [{run: 'true'}]}]\n")), {})
    reader = OutboxReader(store, consumer, "server-1")
    _read_all(reader)
    return store, run_id, reader, _denying(store)


def _denying(store: SqlStore) -> dict[str, bool]:
    """A switch: while `on`, SQLite refuses the store's writes (as a full or read-only disk would)."""
    import sqlite3

    from sqlalchemy import event

    denied = {"on": False}

    def deny(action: int, *_: object) -> int:
        writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
        return sqlite3.SQLITE_DENY if denied["on"] and action in writes else sqlite3.SQLITE_OK

    event.listen(store.engine, "checkout", lambda dbapi, *_: dbapi.set_authorizer(deny))
    store.engine.dispose()  # connections made from now on ask `deny`
    return denied


def test_a_held_task_end_is_saved_whole_after_failed_tries(settings: Settings, write: Write) -> None:
    """A task's end waits to go with the next write (one commit), its start joined to it; when the
    store refuses them, both are tried again, whole, as often as it takes: the start's time and
    outbox row too (the last task's end once lost its status on the first try, and the run's
    driver stopped with a KeyError on the second)."""
    from shipline.engine.recording import RunRecorder
    from shipline.exceptions import StoreError

    store, run_id, reader, denied = _one_run_read(settings, write, "last")

    async def scenario() -> None:
        recorder = RunRecorder(store, EventBus(), settings.logs, run_id)
        recorder.task_started("a", 1)
        recorder.task_finished("a", TaskStatus.SUCCEEDED, {"version": "1.2.0"})  # held
        denied["on"] = True
        for _ in range(2):
            with pytest.raises(StoreError):
                recorder.flush()
        denied["on"] = False
        recorder.flush()

    asyncio.run(scenario())
    task = store.get_run(run_id).task("a")
    assert (task.status.value, task.results) == ("succeeded", {"version": "1.2.0"})
    assert task.started_at is not None and task.finished_at is not None
    assert [(t.task, t.status) for t in _read_all(reader) if t.kind == "task"] == [("a", "running"), ("a", "succeeded")]


def test_an_end_written_for_a_run_that_fails_midway_keeps_what_was_held(settings: Settings, write: Write) -> None:
    """Ending a run its engine could not end (an engine back from a store outage, `RunRecorder.unended`)
    is one transaction; when it fails after the held saves went into it, they are rolled back with it
    and held again: the next try writes them (the task's success is not lost to `skipped`)."""
    from shipline.domain.runs import RunStatus
    from shipline.engine.recording import RunRecorder
    from shipline.exceptions import StoreError

    store, run_id, reader, _ = _one_run_read(settings, write, "midway")

    async def scenario() -> None:
        recorder = RunRecorder(store, EventBus(), settings.logs, run_id)
        recorder.task_started("a", 1)
        recorder.task_finished("a", TaskStatus.SUCCEEDED, {"version": "1.2.0"})  # held
        with pytest.raises(StoreError), recorder.unended() as record:
            assert record is not None
            recorder.flush()  # into the block's transaction
            raise StoreError("the store went away before the run's end was written")
        with recorder.unended() as record:
            assert record is not None, "the first try was rolled back: the run is not ended"
            recorder.flush()
            recorder.interrupted(store.get_run(run_id), [], "interrupted: the store could not be written")

    asyncio.run(scenario())
    record = store.get_run(run_id)
    assert (record.status, record.task("a").status.value, record.task("a").results) == (
        RunStatus.FAILED,
        "succeeded",
        {"version": "1.2.0"},
    )
    assert [(t.task, t.status) for t in _read_all(reader)] == [("a", "running"), ("a", "succeeded"), (None, "failed")]


def test_a_task_does_not_start_until_the_end_of_the_task_it_needs_is_saved(engine: Engine, write: Write, tmp_path: Path) -> None:
    """Task ends are held to be saved together; the driver saves them before it starts a task on
    them.  When the store refuses that save, the run stops there: the task that needed the
    unsaved end never runs (it once could, for the 50 ms the end was held), and the end is
    written as it was once the store takes writes again."""
    gate, ran = tmp_path / "gate", tmp_path / "second-ran"
    pipeline = load_pipeline(
        write(
            f"""
            name: gated
            tasks:
              - name: first
                steps: [{{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}]
              - name: second
                needs: [first]
                steps: [{{run: 'touch {ran}'}}]
            """
        )
    )
    denied = _denying(engine.store)

    async def scenario() -> int:
        run_id = engine.submit(pipeline, {})
        driving = asyncio.create_task(engine.drive(run_id))
        while not engine.store.running_steps(run_id):  # first's step is saved: nothing is held now
            await asyncio.sleep(0.02)
        denied["on"] = True
        gate.touch()
        # First ends; a start of second would have touched the file by now.  The run's end is tried
        # (0.5 s after, then 1 s after that) and refused meanwhile.
        await asyncio.sleep(1.2)
        assert not ran.exists(), "second ran though first's end was not in the store"
        denied["on"] = False
        await driving
        return run_id

    run_id = asyncio.run(scenario())
    record = engine.store.get_run(run_id)
    assert record.status.value == "failed" and "could not be written" in record.message, record.message
    assert [(t.name, t.status.value) for t in record.tasks] == [("first", "succeeded"), ("second", "skipped")]
    # Each refused try wrote nothing; the one that was taken wrote each transition once.
    told = [(t.kind, t.task, t.status) for t in engine.store.transitions_after(0, 100) if t.run_id == run_id]
    assert told == [
        ("run", None, "queued"),
        ("run", None, "running"),
        ("task", "first", "running"),
        ("task", "first", "succeeded"),
        ("task", "second", "skipped"),
        ("run", None, "failed"),
    ]
