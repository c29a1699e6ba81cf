"""Replicas on one PostgreSQL: a run queued elsewhere, or a concurrency group freed elsewhere,
wakes the server's engine through LISTEN/NOTIFY instead of waiting for its next look.

The server looks for queued runs only every 10 s here (`queue_poll_seconds`, its
maximum), and only just after it started: a run that starts within a few seconds
was started by the notification.  "Elsewhere" is an engine of the test's own on
the same database, as another replica or the CLI is.

Two `shipline serve` processes on one database share one GitOps controller (the
holder of its lease): one queues each sync, the other takes over when it is
killed, and a webhook that reaches the other is passed on (NOTIFY).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from envkit import EnvRepo
from helpers import GROUPED, Background
from serverkit import free_port, gitea_push, signed_gitea, start_server

from shipline.domain.environments import Environment
from shipline.domain.runs import RunRecord, RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.environments import EnvironmentStore
from shipline.store.listening import ENVIRONMENTS, RUNS, StoreListener, announce
from shipline.store.sql import SqlStore

pytestmark = pytest.mark.postgres

SLOW_LOOK = 10.0
QUICKLY = 5.0
"""Well within the server's next look (10 s away at least), well beyond a notification's trip."""


@pytest.fixture
def elsewhere(settings: Settings, postgres_url: str, tmp_path: Path) -> Iterator[Engine]:
    """Another replica's engine (or the CLI's) on the same database, with a home of its own."""
    other = settings.model_copy(update={"database_url": postgres_url, "home": tmp_path / "elsewhere"})
    store = SqlStore(postgres_url)
    yield Engine(other, store, LocalExecutor.from_settings(other), EventBus())
    store.close()


@pytest.fixture
def served(settings: Settings, postgres_url: str) -> Iterator[None]:
    uv, thread, _server, _url = start_server(
        settings.model_copy(update={"database_url": postgres_url, "queue_poll_seconds": SLOW_LOOK})
    )
    time.sleep(0.5)  # past the look the engine makes as it starts
    yield
    uv.should_exit = True
    thread.join(30)


def wait_status(store: SqlStore, run_id: int, wanted: set[RunStatus], timeout: float) -> RunRecord:
    deadline = time.monotonic() + timeout
    while (record := store.get_run(run_id)).status not in wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {record.status.value} after {timeout:g}s, wanted {wanted}")
        time.sleep(0.05)
    return record


def test_a_run_queued_elsewhere_starts_at_once(
    settings: Settings, served: None, elsewhere: Engine, write: Callable[..., Path]
) -> None:
    run_id = elsewhere.submit(load_pipeline(write(GROUPED)), {})  # queued, for whichever engine takes it

    record = wait_status(elsewhere.store, run_id, {RunStatus.SUCCEEDED, RunStatus.FAILED}, QUICKLY)

    assert record.status == RunStatus.SUCCEEDED
    assert (settings.logs / str(run_id)).is_dir(), "the server ran it (its logs are in the server's home)"
    assert not (elsewhere.settings.logs / str(run_id)).exists()


def test_a_group_freed_elsewhere_lets_the_next_run_start_at_once(
    served: None, elsewhere: Engine, write: Callable[..., Path]
) -> None:
    pipeline = load_pipeline(write(GROUPED))
    first = elsewhere.submit(pipeline, {"seconds": "2"}, claim=True)  # run by the other replica, holding the group
    driving = threading.Thread(target=lambda: asyncio.run(elsewhere.drive(first)))
    driving.start()
    wait_status(elsewhere.store, first, {RunStatus.RUNNING}, QUICKLY)
    second = elsewhere.submit(pipeline, {})  # the server hears of it, and finds the group busy

    driving.join(30)
    ended = time.monotonic()
    record = wait_status(elsewhere.store, second, {RunStatus.SUCCEEDED, RunStatus.FAILED}, QUICKLY)

    assert record.status == RunStatus.SUCCEEDED and elsewhere.store.get_run(first).status == RunStatus.SUCCEEDED
    assert record.started_at is not None and record.started_at.timestamp() >= ended - 1, "it waited for the group"


def test_the_listener_listens_again_after_its_connection_is_killed(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    heard = threading.Semaphore(0)
    listener = StoreListener(store, {RUNS: lambda _: heard.release()}, on_listening=heard.release, wake_seconds=0.2)
    try:
        assert listener.start()
        assert heard.acquire(timeout=QUICKLY), "it pokes once as it starts: runs queued while no one listened"
        with store.engine.begin() as conn:
            killed = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' AND datname = current_database()"
            ).scalar()
        assert killed is True
        assert heard.acquire(timeout=QUICKLY), "connected and listening again (and it pokes again)"
        with store.engine.begin() as conn:
            conn.exec_driver_sql("NOTIFY shipline_runs")
        assert heard.acquire(timeout=QUICKLY), "a notification after the reconnect is heard"
    finally:
        listener.stop()
        store.close()


def test_a_moved_branch_heard_by_one_server_reaches_the_others(postgres_url: str) -> None:
    """A webhook reaches one replica; the GitOps controller may be another's (the lease holder's)."""
    store, elsewhere = SqlStore(postgres_url), SqlStore(postgres_url)
    heard: list[str] = []
    arrived = threading.Semaphore(0)

    def poked(name: str) -> None:
        heard.append(name)
        arrived.release()

    listener = StoreListener(store, {ENVIRONMENTS: poked, RUNS: lambda _: None}, wake_seconds=0.2)
    try:
        assert listener.start()
        announce(elsewhere, ENVIRONMENTS, ["dev", "staging"])
        assert arrived.acquire(timeout=QUICKLY) and arrived.acquire(timeout=QUICKLY)
        assert heard == ["dev", "staging"]
    finally:
        listener.stop()
        store.close()
        elsewhere.close()


def test_of_two_servers_one_is_the_gitops_controller_and_the_other_takes_over_when_it_is_killed(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two `shipline serve` processes on one database: one polls, queues syncs and watches; a
    `kill -9` of it hands that to the other at once (it sees the holder's process is gone)."""
    repo, first = environment_repo(postgres_url, tmp_path)
    with two_servers(postgres_url, tmp_path, poll_seconds=1) as (store, controller, other):
        wait_until(lambda: syncs_of(store, first), "the controller queues a sync of the branch's head")
        time.sleep(3)  # three more polls of each server
        assert len(syncs_of(store, first)) == 1

        controller.proc.kill()
        controller.proc.wait(30)
        repo.write("notes.txt", "second")
        second = repo.commit("second state")
        wait_until(lambda: syncs_of(store, second), "the other server takes over and queues the new head")
        assert "is now the GitOps controller" in other.output.read_text()
        assert len(syncs_of(store, first)) == 1


def test_a_webhook_that_reaches_the_other_server_makes_the_controller_look_at_once(postgres_url: str, tmp_path: Path) -> None:
    repo, first = environment_repo(postgres_url, tmp_path)
    with two_servers(postgres_url, tmp_path, poll_seconds=3600) as (store, _controller, other):
        wait_until(lambda: syncs_of(store, first), "the controller syncs the head it finds as it starts")
        repo.write("notes.txt", "second")
        second = repo.commit("second state")
        payload = gitea_push(str(tmp_path / "env.git"), str(tmp_path / "env"))
        body, headers = signed_gitea(HOOK_SECRET, payload)
        answer = httpx.post(f"{other.url}/hooks/gitea", content=body, headers=headers, timeout=30)
        assert answer.status_code == 202 and answer.json()["environments"] == ["dev"], answer.text
        # The controller polls once an hour here: only the other server's word makes it look.
        wait_until(lambda: syncs_of(store, second), "the controller queues the pushed head", timeout=QUICKLY)


HOOK_SECRET = "env-hook-secret"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    output: Path
    url: str


def environment_repo(postgres_url: str, tmp_path: Path) -> tuple[EnvRepo, str]:
    """Environment `dev` (`sync: auto`) of a local repository, registered in the database; its first commit."""
    remote = tmp_path / "env.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    repo = EnvRepo(tmp_path / "work", str(remote))
    repo.write("notes.txt", "first")
    first = repo.commit("first state")
    store = SqlStore(postgres_url)
    env = Environment.model_validate({"name": "dev", "repo": str(remote), "namespace": "dev", "sync": "auto"})
    EnvironmentStore(store).put(env, "environments.yaml")
    store.close()
    return repo, first


def syncs_of(store: SqlStore, commit: str) -> list[RunRecord]:
    return [r for r in store.list_runs(limit=100) if r.trigger.get("source") == "gitops" and r.trigger.get("revision") == commit]


@contextmanager
def two_servers(postgres_url: str, tmp_path: Path, *, poll_seconds: float) -> Iterator[tuple[SqlStore, Served, Served]]:
    """(the store, the server that is the GitOps controller, the other), both `shipline serve` processes."""
    common = {
        **os.environ,
        "SHIPLINE_DATABASE_URL": postgres_url,
        "SHIPLINE_SECRET_KEY": Fernet.generate_key().decode(),
        "SHIPLINE_ENV_POLL_SECONDS": str(poll_seconds),
        "SHIPLINE_LOG_FORMAT": "text",
    }
    set_secret = [sys.executable, "-m", "shipline", "secrets", "set", "env-dev-webhook", "--from-env", "HOOK_SECRET"]
    done = subprocess.run(
        set_secret, env={**common, "HOOK_SECRET": HOOK_SECRET, "SHIPLINE_HOME": str(tmp_path / "cli")}, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    store = SqlStore(postgres_url)
    servers: list[Served] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            output = tmp_path / f"{name}.out"
            started = Background(
                "serve", "--port", str(port), output=output, env={**common, "SHIPLINE_HOME": str(tmp_path / name)}
            )
            servers.append(Served(started.proc, output, f"http://127.0.0.1:{port}"))
            wait_until(partial(_answers, f"{servers[-1].url}/readyz"), f"server {name} is ready", started)
        wait_until(lambda: any(s.output.read_text().count("is now the GitOps controller") for s in servers), "a controller")
        said = {s.output.name: s.output.read_text().count("is now the GitOps controller") for s in servers}
        assert sorted(said.values()) == [0, 1], f"one controller: {said}"
        a, b = servers
        yield (store, a, b) if said["a.out"] else (store, b, a)
    finally:
        stop_all([s.proc for s in servers])
        store.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(check: Callable[[], object], what: str, server: Background | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or (server is not None and server.proc.poll() is not None):
            raise AssertionError(f"{what}: not within {timeout:g}s" + (f"\n{server.why()}" if server else ""))
        time.sleep(0.2)


def test_the_logs_of_a_run_another_server_ran_are_read_through_any_server(postgres_url: str, tmp_path: Path) -> None:
    """Servers share runs, not logs folders: server `a` passes a request for the logs of a run `b`
    ran on to `b` (pages, text, the event stream), with the reader's token; once `b` is gone it
    says so (502), naming where the logs are."""
    common = {
        **os.environ,
        "SHIPLINE_DATABASE_URL": postgres_url,
        "SHIPLINE_SECRET_KEY": Fernet.generate_key().decode(),
        "SHIPLINE_ANONYMOUS_READ": "false",
        "SHIPLINE_LOG_FORMAT": "text",
    }
    made = subprocess.run(
        [sys.executable, "-m", "shipline", "tokens", "create", "--name", "reader", "--json"],
        env={**common, "SHIPLINE_HOME": str(tmp_path / "cli")},
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    token = {"Authorization": f"Bearer {json.loads(made.stdout)['secret']}"}
    store = SqlStore(postgres_url)
    definition = tmp_path / "talk.yaml"
    definition.write_text("name: talk\ntasks: [{name: say, steps: [{run: 'echo first line; echo second line'}]}]\n")
    served: list[Background] = []

    def serve(name: str) -> str:
        port = free_port()
        served.append(
            Background(
                "serve",
                "--port",
                str(port),
                output=tmp_path / f"{name}.out",
                env={**common, "SHIPLINE_HOME": str(tmp_path / name)},
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(partial(_answers, f"{url}/readyz"), f"server {name} is ready", served[-1])
        return url

    try:
        b = serve("b")  # alone on the store: it runs the runs
        run_id = store.create_run(load_pipeline(definition), {})
        slow = tmp_path / "slow.yaml"
        slow.write_text("name: slow\ntasks: [{name: wait, steps: [{run: 'echo begun; sleep 15; echo done'}]}]\n")
        running = store.create_run(load_pipeline(slow), {})
        wait_until(lambda: store.get_run(run_id).status.done, "server b runs the run", served[0])
        assert store.get_run(run_id).status == RunStatus.SUCCEEDED
        a = serve("a")
        assert store.get_run(running).status == RunStatus.RUNNING

        # A running run followed through `a`: each line as `b` has it, then its end.
        with httpx.stream("GET", f"{a}/api/v1/runs/{running}/logs/stream", headers=token, timeout=30) as stream:
            lines = stream.iter_lines()
            assert "begun" in next(line for line in lines if line.startswith("data:") and '"text"' in line)
            assert store.get_run(running).status == RunStatus.RUNNING, "the line came while the run ran"
            rest = list(lines)
        assert any("done" in line for line in rest) and "event: end" in rest
        assert not (tmp_path / "a" / "logs" / str(run_id)).exists()

        page = httpx.get(f"{a}/api/v1/runs/{run_id}/logs", headers=token, timeout=30)
        assert page.status_code == 200, page.text
        assert [line["text"] for line in page.json()[0]["lines"]] == ["first line", "second line"]
        text = httpx.get(f"{a}/api/v1/runs/{run_id}/logs", params={"format": "text"}, headers=token, timeout=30)
        assert text.text == "[say#0] first line\n[say#0] second line\n"
        with httpx.stream("GET", f"{a}/api/v1/runs/{run_id}/logs/stream", headers=token, timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = stream.read().decode()
        assert events.count("event: line") == 2 and "second line" in events and "event: end" in events
        assert httpx.get(f"{a}/api/v1/runs/{run_id}/logs", timeout=30).status_code == 401, "a reader's token is still needed"
        again = httpx.get(f"{a}/api/v1/runs/{run_id}/logs", headers={**token, "X-Shipline-Forwarded": "x"}, timeout=30)
        assert again.status_code == 409 and f"whose server is at {b}" in again.json()["message"], "passed on once at most"
        cli = subprocess.run(
            [sys.executable, "-m", "shipline", "runs", "logs", str(run_id)],
            env={**common, "SHIPLINE_HOME": str(tmp_path / "a")},
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 1 and f"GET {b}/api/v1/runs/{run_id}/logs?format=text" in cli.stderr, cli.stderr

        served[0].proc.terminate()
        served[0].proc.wait(30)
        gone = httpx.get(f"{a}/api/v1/runs/{run_id}/logs", headers=token, timeout=30)
        assert gone.status_code == 502 and f"whose server is at {b}" in gone.json()["message"], gone.text
        assert "did not answer (ConnectError" in gone.json()["message"]
    finally:
        stop_all([s.proc for s in served])
        store.close()


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
