"""The worker loop: engines take queued runs from a shared store, each run exactly once."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import GROUPED, Background
from relay import Relay
from sqlalchemy import make_url, select, text

from shipline.domain.runs import RunRecord, RunStatus
from shipline.engine import processes, running
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore
from shipline.store.tables import runs


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


def test_a_run_whose_engine_is_killed_is_ended_by_a_serving_engine_and_frees_its_group(
    settings: Settings, store: SqlStore, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A `shipline run` killed mid-run while a server runs: the server ends that run and
    starts the one queued behind it in its concurrency group (not only at its next start)."""
    path = write(GROUPED)
    cli = Background("run", str(path), "-p", "seconds=60", output=tmp_path / "cli.out")
    engine = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))

    async def scenario() -> tuple[RunRecord, RunRecord]:
        while not (runs := store.list_runs()) or runs[0].status != RunStatus.RUNNING:
            assert cli.proc.poll() is None, cli.why()
            await asyncio.sleep(0.05)
        killed = runs[0].id
        stop = asyncio.Event()
        worker = asyncio.create_task(engine.serve(stop, poll_seconds=0.05, recover_seconds=0.2))
        waiting = engine.submit(load_pipeline(path), {"seconds": "0"})
        await asyncio.sleep(0.5)
        assert store.get_run(waiting).status == RunStatus.QUEUED, "behind the CLI's run, in its group"
        cli.proc.kill()
        cli.proc.wait()
        done = await ended(store, waiting)
        stop.set()
        await worker
        return store.get_run(killed), done

    try:
        killed, waiting = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
        engine.store.close()
    assert killed.status == RunStatus.FAILED and "stopped during the run" in killed.message, killed.message
    assert waiting.status == RunStatus.SUCCEEDED, waiting.message


def test_stopping_what_a_dead_engine_left_running_does_not_hold_up_the_runs_being_driven(
    settings: Settings, store: SqlStore, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping a dead engine's leftovers can take seconds (processes given `KILL_SECONDS` to die,
    a cluster's API slow to answer; here 3 s of waiting added to the real stop): the serving
    engine's own run ends meanwhile, not after."""
    server = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))
    stop_orphans = server.executor.stop_orphans

    def slowly(run_id: int, owner: str, pids: list[int]) -> None:
        time.sleep(3)
        stop_orphans(run_id, owner, pids)

    monkeypatch.setattr(server.executor, "stop_orphans", slowly)
    own = load_pipeline(write("name: own\ntasks: [{name: a, steps: [{run: 'sleep 1'}]}]\n"))
    left = load_pipeline(write("name: left\ntasks: [{name: a, steps: [{run: 'sleep 60'}]}]\n"))

    async def scenario() -> tuple[RunRecord, RunRecord]:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve(stop, poll_seconds=0.05, recover_seconds=0.2))
        run_id = server.submit(own, {})
        server.wake()
        while store.get_run(run_id).status != RunStatus.RUNNING:
            await asyncio.sleep(0.05)
        # A run of an engine of this host whose process is gone (no such pid).
        dead = store.create_run(left, {}, owner=f"{socket.gethostname()}:{2**22 + 11}:1")
        store.update_run(dead, status=RunStatus.RUNNING.value)
        await ended(store, dead)
        await ended(store, run_id)
        stop.set()
        await serving
        return store.get_run(run_id), store.get_run(dead)

    try:
        ran, recovered = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        server.store.close()
    assert ran.status == RunStatus.SUCCEEDED and recovered.status == RunStatus.FAILED, (ran.message, recovered.message)
    assert ran.finished_at is not None and recovered.finished_at is not None
    assert ran.finished_at < recovered.finished_at, "the run was held up until the dead engine's leftovers were stopped"


def test_a_run_waiting_for_its_group_in_an_engine_on_another_host_is_left_alone(
    settings: Settings, store: SqlStore, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine on another host is judged by its heartbeats; one whose run waits for its
    concurrency group longer than a heartbeat may be stale keeps beating, and the serving
    engine's periodic look does not end that run."""
    monkeypatch.setattr(running, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(processes, "HEARTBEAT_STALE", timedelta(seconds=1))
    pipeline = load_pipeline(write(GROUPED))
    holder = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))
    remote = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))
    remote.owner = "elsewhere.example:4242:1"  # its liveness can only be read from its heartbeats
    server = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))

    async def scenario() -> RunRecord:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve(stop, poll_seconds=0.05, recover_seconds=0.2))
        first = asyncio.create_task(holder.drive(holder.submit(pipeline, {"seconds": "3"}, claim=True)))
        while store.group_holder("one-at-a-time") is None:
            await asyncio.sleep(0.05)
        waiting = await remote.drive(remote.submit(pipeline, {"seconds": "0"}, claim=True))  # ~3 s behind the first
        await first
        stop.set()
        await serving
        return waiting

    try:
        waiting = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        for engine in (holder, remote, server):
            engine.store.close()
    assert waiting.status == RunStatus.SUCCEEDED, waiting.message


def test_a_stopping_engine_lets_its_runs_end_within_drain_seconds_and_starts_no_new_one(
    settings: Settings, store: SqlStore, write: Callable[..., Path]
) -> None:
    """A server restarted for an upgrade need not cancel a deploy half done: the runs it drives get
    `drain_seconds` to end; one still going then is cancelled, and one queued meanwhile waits for the next engine."""
    pipeline = load_pipeline(
        write("name: sleeper\nparams: {seconds: {}}\ntasks: [{name: a, steps: [{run: 'sleep ${{ params.seconds }}'}]}]\n")
    )
    engine = Engine(settings, SqlStore(settings.database), LocalExecutor(1.0))

    async def scenario() -> tuple[RunRecord, RunRecord, RunRecord]:
        stop = asyncio.Event()
        worker = asyncio.create_task(engine.serve(stop, poll_seconds=0.05, drain_seconds=3))
        short, long = store.create_run(pipeline, {"seconds": "1"}), store.create_run(pipeline, {"seconds": "60"})
        while any(store.get_run(i).status != RunStatus.RUNNING for i in (short, long)):
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.sleep(0.2)
        later = store.create_run(pipeline, {"seconds": "0"})
        engine.wake()
        await worker
        return store.get_run(short), store.get_run(long), store.get_run(later)

    try:
        short, long, later = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        engine.store.close()
    assert short.status == RunStatus.SUCCEEDED, short.message
    assert long.status == RunStatus.CANCELLED and "did not end within drain_seconds (3s)" in long.message, long.message
    assert later.status == RunStatus.QUEUED


@pytest.mark.postgres
def test_an_engine_cut_off_from_a_shared_store_stops_its_runs_before_others_take_them_over(
    settings: Settings, postgres_url: str, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host's server ends the runs of an engine whose heartbeat is stale and starts the next of
    their concurrency groups: the cut-off engine's steps must be stopped by then (not two deploys at once)."""
    monkeypatch.setattr(running, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(processes, "HEARTBEAT_STALE", timedelta(seconds=2))
    relay = Relay(int(make_url(postgres_url).port or 5432))
    relayed = make_url(postgres_url).set(port=relay.port).render_as_string(hide_password=False)
    engine = Engine(settings, SqlStore(relayed), LocalExecutor(1.0))
    direct = SqlStore(postgres_url)
    pipeline = load_pipeline(write("name: quiet\ntasks: [{name: a, steps: [{run: 'sleep 60'}]}]\n"))

    async def scenario() -> tuple[RunRecord, RunStatus]:
        run_id = engine.submit(pipeline, {}, claim=True)
        driving = asyncio.create_task(engine.drive(run_id))
        while not (steps := direct.running_steps(run_id)) or steps[0][3] is None:
            await asyncio.sleep(0.05)
        pid = steps[0][3]
        relay.cut(open_too=True)
        while _alive(pid):  # a quiet step writes nothing: only the engine's own look can stop it
            await asyncio.sleep(0.05)
        while_cut = direct.get_run(run_id).status
        relay.mend()
        return await driving, while_cut

    try:
        record, while_cut = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        relay.close()
        engine.store.close()
        direct.close()
    assert while_cut == RunStatus.RUNNING, "the step was stopped while the store could not be told"
    assert record.status == RunStatus.FAILED, record
    assert "this engine has not reached the store for" in record.message and "it stopped them first" in record.message


@pytest.mark.postgres
def test_an_engine_cut_off_writes_no_second_end_for_a_run_another_server_ended(
    settings: Settings, postgres_url: str, write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the engine is cut off, another server takes its stale run for dead and ends it: once back,
    the engine leaves that record as it is (one end in the outbox: one commit status, one CDEvent)."""
    monkeypatch.setattr(running, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(processes, "HEARTBEAT_STALE", timedelta(seconds=2))
    relay = Relay(int(make_url(postgres_url).port or 5432))
    relayed = make_url(postgres_url).set(port=relay.port).render_as_string(hide_password=False)
    engine = Engine(settings, SqlStore(relayed), LocalExecutor(1.0))
    other = Engine(settings, SqlStore(postgres_url), LocalExecutor(1.0))
    other.owner += "-elsewhere"
    pipeline = load_pipeline(write("name: quiet\ntasks: [{name: a, steps: [{run: 'sleep 60'}]}]\n"))
    start = other.store.transitions_after(0, limit=1_000_000)
    position = start[-1].id if start else 0

    async def scenario() -> RunRecord:
        run_id = engine.submit(pipeline, {}, claim=True)
        driving = asyncio.create_task(engine.drive(run_id))
        while not (steps := other.store.running_steps(run_id)) or steps[0][3] is None:
            await asyncio.sleep(0.05)
        relay.cut(open_too=True)
        while _alive(steps[0][3]):
            await asyncio.sleep(0.05)
        # The other server's periodic recovery, its host unable to see this engine's process.
        monkeypatch.setattr(running, "owner_alive", lambda *_: False)
        assert other.recover() == [run_id]
        relay.mend()
        await driving
        return other.store.get_run(run_id)

    try:
        record = asyncio.run(asyncio.wait_for(scenario(), 60))
        ends = [
            t
            for t in other.store.transitions_after(position, limit=1000, kind="run")
            if t.status in ("succeeded", "failed", "cancelled")
        ]
    finally:
        relay.close()
        engine.store.close()
        other.store.close()
    assert record.status == RunStatus.FAILED and record.message.startswith("interrupted: "), record.message
    assert [(t.run_id, t.status) for t in ends] == [(record.id, "failed")], ends


@pytest.mark.postgres
def test_two_servers_ending_one_dead_engines_run_write_one_end(
    settings: Settings, postgres_url: str, write: Callable[..., Path]
) -> None:
    """Two servers' recoveries find the same dead engine's run at the same moment, each reading it
    unended: they take turns on its row, and the second leaves it as the first ended it (one end
    in the outbox: one commit status, one CDEvent)."""
    watcher, holder = SqlStore(postgres_url), SqlStore(postgres_url)
    servers = [Engine(settings, SqlStore(postgres_url), LocalExecutor(1.0)) for _ in range(2)]
    for i, server in enumerate(servers):
        server.owner += f"-{i}"
    pipeline = load_pipeline(write("name: left\ntasks: [{name: a, steps: [{run: 'sleep 60'}]}]\n"))
    dead = watcher.create_run(pipeline, {}, owner=f"{socket.gethostname()}:{2**22 + 11}:1")
    watcher.update_run(dead, status=RunStatus.RUNNING.value)
    start = watcher.transitions_after(0, limit=1_000_000)
    position = start[-1].id if start else 0

    def waiting_for_a_lock() -> int:
        with watcher.reading() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            return int(conn.execute(text(query)).scalar_one())

    try:
        with ThreadPoolExecutor(2) as pool:
            # A third connection holds the run's row until both servers have come to it.
            with holder.transaction() as conn:
                conn.execute(select(runs.c.id).where(runs.c.id == dead).with_for_update())
                recovering = [pool.submit(server.recover) for server in servers]
                deadline = time.monotonic() + 30
                while waiting_for_a_lock() < 2:
                    assert time.monotonic() < deadline, "the servers did not both come to the run's row"
                    time.sleep(0.05)
            recovered = sorted(future.result(timeout=30) for future in recovering)
        ends = [t for t in watcher.transitions_after(position, limit=1000, kind="run") if t.status == "failed"]
        record = watcher.get_run(dead)
    finally:
        for store in (watcher, holder, *(server.store for server in servers)):
            store.close()
    assert recovered == [[], [dead]], recovered
    assert [t.run_id for t in ends] == [dead], ends
    assert record.status == RunStatus.FAILED and record.message.startswith("interrupted: "), record.message


async def ended(store: SqlStore, run_id: int) -> RunRecord:
    while not (record := store.get_run(run_id)).status.done:
        await asyncio.sleep(0.05)
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
