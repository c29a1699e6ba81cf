"""Whole pipelines from a file (`uses:` + `with:`), the run's own results, concurrency groups, secret files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.exceptions import DefinitionError
from shipline.executors.local import LocalExecutor
from shipline.server.driving import EngineThread
from shipline.settings import Settings
from shipline.store.sql import SqlStore

Write = Callable[..., Path]

ARCHETYPE = """
description: greets, then reports what it said
inputs:
  greeting: {description: what to say}
  punctuation: {default: "!"}
params:
  who: {default: world}
tasks:
  - name: greet
    steps:
      - run: |
          echo "${{ inputs.greeting }}, ${{ params.who }}${{ inputs.punctuation }}"
          echo "said=${{ inputs.greeting }} ${{ params.who }}" >> "$SHIPLINE_OUTPUT"
    results: [said]
  - name: missing
    when: ${{ params.who == 'nobody' }}
    steps: [{run: echo "never=1" >> "$SHIPLINE_OUTPUT"}]
    results: [never]
results:
  said: ${{ tasks.greet.results.said }}
  never: ${{ tasks.missing.results.never }}
  who: ${{ params.who }}
"""


def test_a_file_uses_an_archetype_with_its_inputs_and_gets_its_results(write: Write, run_pipeline: RunFn) -> None:
    write(ARCHETYPE, "archetype.yaml")
    record = run_pipeline(
        """
        name: hello
        uses: ./archetype.yaml
        with: {greeting: hi}
        params: {who: team}
        """
    )
    assert record.status == RunStatus.SUCCEEDED
    assert record.pipeline == "hello"
    assert [t.name for t in record.tasks] == ["greet", "missing"]
    # `never` comes from a skipped task: left out, not an error; `who` was given a new default by the file.
    assert record.results == {"said": "hi team", "who": "team"}


def test_run_params_of_an_archetype_come_from_the_command_line(write: Write, engine: Engine) -> None:
    write(ARCHETYPE, "archetype.yaml")
    pipeline = load_pipeline(write("name: hello\nuses: ./archetype.yaml\nwith: {greeting: yo}\n", "hello.yaml"))
    assert set(pipeline.params) == {"who"}
    run_id = engine.submit(pipeline, {"who": "$(touch pwned)"})
    record = asyncio.run(engine.drive(run_id))
    assert record.results["said"] == "yo $(touch pwned)"
    assert not (engine.workspace(run_id) / "pwned").exists()


def test_every_problem_of_a_file_that_uses_an_archetype_is_reported_with_its_place(write: Write) -> None:
    write(ARCHETYPE, "archetype.yaml")
    path = write(
        """
        name: hello
        uses: ./archetype.yaml
        with:
          greting: typo
        params: {nobody: x}
        tasks: []
        """
    )
    with pytest.raises(DefinitionError) as caught:
        load_pipeline(path)
    text = str(caught.value)
    assert f"{path}:4:3: './archetype.yaml' has no input 'greting' (inputs: greeting, punctuation)" in text
    assert "needs input 'greeting' (what to say): add it to `with:`" in text
    assert "has no param 'nobody'" in text


def test_problems_inside_an_archetype_name_the_archetype(write: Write) -> None:
    arch = write(
        """
        inputs: {greeting: {default: hi}}
        tasks:
          - name: a
            steps: [{run: "echo ${{ inputs.greting }}"}]
        results:
          x: ${{ tasks.nope.results.y }}
          s: ${{ secrets.token }}
        """,
        "archetype.yaml",
    )
    with pytest.raises(DefinitionError) as caught:
        load_pipeline(write("name: hello\nuses: ./archetype.yaml\n"))
    text = str(caught.value)
    assert f"{arch}:4:" in text and "no input 'greting' (inputs: greeting)" in text
    assert "'tasks.nope.results.y': no task 'nope'" in text
    assert "'secrets.token': only inputs.*, params.*, run.*, tasks.* may be used here" in text


def test_an_unknown_catalog_pipeline_lists_the_catalog(write: Write) -> None:
    with pytest.raises(DefinitionError, match=r"no pipeline 'shipline/nope' in the catalog \(pipelines: "):
        load_pipeline(write("name: x\nuses: shipline/nope\n"))


# --- concurrency groups ------------------------------------------------------------------

SERIAL = """
name: {name}
params:
  target: {{default: dev}}
concurrency: {concurrency}
tasks:
  - name: work
    steps:
      - run: |
          echo "start $(date +%s.%N) {name} $SHIPLINE_RUN_ID" >> "{log}"
          sleep 0.6
          echo "end $(date +%s.%N) {name} $SHIPLINE_RUN_ID" >> "{log}"
"""


def _intervals(log: Path) -> list[tuple[float, float]]:
    """(start, end) of each run's step, in order of start."""
    starts: dict[str, float] = {}
    spans = []
    for line in log.read_text().splitlines():
        kind, at, _, run = line.split()
        if kind == "start":
            starts[run] = float(at)
        else:
            spans.append((starts[run], float(at)))
    return sorted(spans)


def test_runs_of_one_group_never_overlap_even_of_different_pipelines(write: Write, engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    group = "deploy-${{ params.target }}"
    a = load_pipeline(write(SERIAL.format(name="a", concurrency=f"'{group}'", log=log), "a.yaml"))
    b = load_pipeline(write(SERIAL.format(name="b", concurrency=f"'{group}'", log=log), "b.yaml"))
    other = load_pipeline(write(SERIAL.format(name="c", concurrency=f"'{group}'", log=log), "c.yaml"))

    async def both() -> list[RunRecord]:
        first = engine.submit(a, {})
        second = engine.submit(b, {})
        third = engine.submit(other, {"target": "prod"})  # another group: runs beside them
        return await asyncio.gather(engine.drive(first), engine.drive(second), engine.drive(third))

    records = asyncio.run(both())
    assert [r.status for r in records] == [RunStatus.SUCCEEDED] * 3
    assert [r.concurrency_group for r in records] == ["deploy-dev", "deploy-dev", "deploy-prod"]
    spans = {line.split()[2] for line in log.read_text().splitlines()}
    assert spans == {"a", "b", "c"}
    by_name = {}
    for line in log.read_text().splitlines():
        kind, at, name, _ = line.split()
        by_name.setdefault(name, {})[kind] = float(at)
    assert by_name["b"]["start"] >= by_name["a"]["end"]  # queued behind a, oldest first
    assert by_name["c"]["start"] < by_name["a"]["end"]  # another group does not wait


def test_cancel_previous_cancels_the_running_run_of_the_group(write: Write, engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    text = SERIAL.format(name="a", concurrency="{group: only-one, policy: cancel-previous}", log=log)
    pipeline = load_pipeline(write(text.replace("sleep 0.6", "sleep 30")))

    async def scenario() -> tuple[RunRecord, RunRecord]:
        first = engine.submit(pipeline, {})
        driving = asyncio.ensure_future(engine.drive(first))
        while engine.store.get_run(first).status != RunStatus.RUNNING:
            await asyncio.sleep(0.05)
        quick = load_pipeline(
            write(SERIAL.format(name="b", concurrency="{group: only-one, policy: cancel-previous}", log=log), "b.yaml")
        )
        second = engine.submit(quick, {})
        return await driving, await engine.drive(second)

    old, new = asyncio.run(scenario())
    assert old.status == RunStatus.CANCELLED
    assert new.status == RunStatus.SUCCEEDED
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "start", "end"]


def test_cancel_previous_from_a_request_thread_cancels_on_the_engines_loop(
    write: Write, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the server: the engine's loop in a thread of its own, and the new run submitted from
    another (a request's).  It cancels the group's running run (through its driver, on the
    engine's loop) and its waiting one (through the store, where the server's bus hears of it).
    In asyncio's debug mode a call into a loop from a thread not its own raises, where otherwise
    it could wait unseen until the loop next woke."""
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    log = tmp_path / "spans.log"
    policy = "{group: only-one, policy: cancel-previous}"
    long = load_pipeline(write(SERIAL.format(name="a", concurrency=policy, log=log).replace("sleep 0.6", "sleep 30")))
    waiting = load_pipeline(write(SERIAL.format(name="w", concurrency="only-one", log=log), "w.yaml"))
    quick = load_pipeline(write(SERIAL.format(name="b", concurrency=policy, log=log), "b.yaml"))
    server_bus = EventBus()
    heard: list[tuple[int, str]] = []

    async def scenario() -> list[RunRecord]:
        runner = EngineThread(engine, server_bus, poll_seconds=0.05)
        runner.start(asyncio.get_running_loop())
        try:
            first = engine.submit(long, {})
            runner.poke()
            while engine.store.get_run(first).status != RunStatus.RUNNING:
                await asyncio.sleep(0.05)
            queued = engine.submit(waiting, {})
            last = await asyncio.to_thread(engine.submit, quick, {})
            runner.poke()
            ids = (first, queued, last)
            while not all(engine.store.get_run(i).status.done for i in ids) or (queued, "cancelled") not in heard:
                await asyncio.sleep(0.05)
            return [engine.store.get_run(i) for i in ids]
        finally:
            await asyncio.to_thread(runner.stop)

    with server_bus.listen(lambda e: heard.append((e.run_id, e.data["status"])), kinds=frozenset({"run"})):
        records = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [r.status for r in records] == [RunStatus.CANCELLED, RunStatus.CANCELLED, RunStatus.SUCCEEDED]
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "start", "end"]


def test_cli_runs_in_one_group_from_separate_processes_take_turns(write: Write, home: Path, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    path = write(SERIAL.format(name="a", concurrency="serial", log=log))
    procs = [
        subprocess.Popen([sys.executable, "-m", "shipline", "run", str(path), "--json"], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all(json.loads(out)["status"] == "succeeded" for out in outputs), outputs
    spans = _intervals(log)
    assert len(spans) == 3, log.read_text()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans


def test_a_run_waiting_for_its_group_can_be_cancelled(write: Write, engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    pipeline = load_pipeline(write(SERIAL.format(name="a", concurrency="g", log=log).replace("sleep 0.6", "sleep 2")))

    async def scenario() -> RunRecord:
        first = engine.submit(pipeline, {})
        second = engine.submit(pipeline, {}, claim=True)
        running = asyncio.ensure_future(engine.drive(first))
        waiting = asyncio.ensure_future(engine.drive(second))
        await asyncio.sleep(0.5)
        engine.store.request_cancel(second)
        record = await waiting
        await running
        return record

    record = asyncio.run(scenario())
    assert record.status == RunStatus.CANCELLED
    assert "waited for its concurrency group" in record.message
    assert all(t.status == TaskStatus.SKIPPED for t in record.tasks)


# --- secrets as files --------------------------------------------------------------------

KUBECONFIG = "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user: {token: s3cr3t-t0ken-value}\n"


def test_a_secret_file_is_private_to_the_task_that_uses_it_and_gone_after(write: Write, engine: Engine, tmp_path: Path) -> None:
    engine.secrets.set("dev-kubeconfig", KUBECONFIG)
    seen = tmp_path / "seen"
    record = asyncio.run(
        _run(
            engine,
            write(f"""
        name: deploy
        tasks:
          - name: apply
            env: {{KUBECONFIG: "${{{{ secret_files.dev-kubeconfig }}}}"}}
            steps:
              - run: |
                  stat -c %a "$KUBECONFIG" > "{seen}.mode"
                  cp "$KUBECONFIG" "{seen}.copy"
                  echo "$KUBECONFIG" > "{seen}.path"
                  cat "$KUBECONFIG"
          - name: build
            steps:
              - run: ls -A "$HOME/.secret-files" > "{seen}.others" 2>&1 || true
    """),
        )
    )
    assert record.status == RunStatus.SUCCEEDED
    assert Path(f"{seen}.mode").read_text().strip() == "600"
    assert Path(f"{seen}.copy").read_text() == KUBECONFIG
    assert Path(f"{seen}.others").read_text().strip() in (
        "",
        f"ls: cannot access '{engine.settings.step_homes}/{record.id}/.secret-files': No such file or directory",
    )
    assert not Path(Path(f"{seen}.path").read_text().strip()).exists()
    logs = "".join(p.read_text() for p in (engine.settings.logs / str(record.id)).rglob("*.log"))
    assert "s3cr3t-t0ken-value" not in logs and "***" in logs


def test_forge_credentials_are_a_secret_file_only_for_tasks_that_ask(store: SqlStore, settings: Settings, write: Write) -> None:
    from pydantic import SecretStr

    settings = settings.model_copy(update={"gitea_url": "http://127.0.0.1:3000", "gitea_token": SecretStr("gta-123456789")})
    engine = Engine(settings, store, LocalExecutor(1.0), EventBus())
    record = asyncio.run(
        _run(
            engine,
            write("""
        name: clone
        tasks:
          - name: clone
            env: {CREDS: "${{ secret_files.git-credentials }}"}
            steps:
              - run: |
                  test "$(cat "$CREDS")" = "http://shipline:gta-123456789@127.0.0.1:3000"
                  echo "$SHIPLINE_GITEA_URL"; cat "$CREDS"
          - name: build
            steps:
              - run: env | grep -c gta-123456789 || true
    """),
        )
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    logs = {p.name.split(".")[0]: p.read_text() for p in (settings.logs / str(record.id)).glob("*.log")}
    assert "http://127.0.0.1:3000" in logs["clone"] and "gta-123456789" not in logs["clone"]
    assert logs["build"].split()[-1] == "0"


async def _run(engine: Engine, path: Path) -> RunRecord:
    return await engine.drive(engine.submit(load_pipeline(path), {}))
