"""Run semantics with real processes: order, DAG, failure, finally, results, retries, timeouts."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings, load_settings
from shipline.store.sql import SqlStore


def statuses(record: RunRecord) -> dict[str, str]:
    return {t.name: t.status.value for t in record.tasks}


def log_text(settings: Settings, record: RunRecord, task: str) -> str:
    return "".join(p.read_text() for p in sorted((settings.logs / str(record.id)).glob(f"{task}.*.log")))


def test_results_flow_and_conditions(run_pipeline: RunFn, settings: Settings) -> None:
    record = run_pipeline(
        """
        name: hello
        params:
          greeting: {default: hello}
        tasks:
          - name: produce
            steps:
              - run: echo "answer=42" >> "$SHIPLINE_OUTPUT"
            results: [answer]
          - name: consume
            when: ${{ tasks.produce.results.answer == '42' }}
            env:
              ANSWER: ${{ tasks.produce.results.answer }}
              GREETING: ${{ params.greeting }}
            steps:
              - run: echo "$GREETING $ANSWER"
          - name: never
            when: ${{ tasks.produce.results.answer != '42' }}
            steps: [{run: echo should not run}]
        finally:
          - name: report
            steps: [{run: 'echo "done: ${{ run.status }}"'}]
        """,
        {"greeting": "hi"},
    )
    assert record.status == RunStatus.SUCCEEDED
    assert statuses(record) == {"produce": "succeeded", "consume": "succeeded", "never": "skipped", "report": "succeeded"}
    assert record.task("produce").results == {"answer": "42"}
    assert "hi 42" in log_text(settings, record, "consume")
    assert "done: succeeded" in log_text(settings, record, "report")
    assert "is false" in record.task("never").message
    assert record.params == {"greeting": "hi"}


def test_a_runs_logs_are_files_of_its_folder_made_by_the_first_line(
    run_pipeline: RunFn, settings: Settings, store: SqlStore
) -> None:
    """One folder per run, TASK.ATTEMPT.STEP.log in it; a step that prints nothing leaves no file, and its log reads empty."""
    record = run_pipeline(
        """
        name: logs
        tasks:
          - name: talk
            steps: [{run: echo hello}, {run: "true"}]
        """
    )
    assert record.status == RunStatus.SUCCEEDED
    folder = settings.logs / str(record.id)
    assert sorted(p.name for p in folder.iterdir()) == ["talk.1.0.log"]
    assert "hello" in (folder / "talk.1.0.log").read_text()
    assert [path for *_, path in store.log_paths(record.id)] == [str(folder / "talk.1.0.log"), str(folder / "talk.1.1.log")]
    shown = subprocess.run(
        [sys.executable, "-m", "shipline", "runs", "logs", str(record.id)],
        env={**os.environ, "SHIPLINE_HOME": str(settings.home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "hello" in shown.stdout


def test_tasks_run_in_the_order_listed(run_pipeline: RunFn, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    steps = "\n".join(f"  - name: t{i}\n    steps: [{{run: 'sleep 0.0{9 - i}; echo t{i} >> {trace}'}}]" for i in range(6))
    record = run_pipeline(f"name: seq\ntasks:\n{steps}\n")
    assert record.status == RunStatus.SUCCEEDED
    assert trace.read_text().split() == [f"t{i}" for i in range(6)]
    ends = [t.finished_at for t in record.tasks]
    starts = [t.started_at for t in record.tasks]
    assert all(e and s and e <= s for e, s in zip(ends, starts[1:], strict=False)), "each task starts after the one before ended"


def test_independent_tasks_run_in_parallel(run_pipeline: RunFn, tmp_path: Path) -> None:
    # Each waits for the other's marker: only a parallel start lets both finish.
    a, b = tmp_path / "a", tmp_path / "b"
    record = run_pipeline(
        f"""
        name: dag
        tasks:
          - name: left
            needs: []
            timeout: 20s
            steps: [{{run: 'touch {a}; while [ ! -e {b} ]; do sleep 0.02; done'}}]
          - name: right
            needs: []
            timeout: 20s
            steps: [{{run: 'touch {b}; while [ ! -e {a} ]; do sleep 0.02; done'}}]
          - name: join
            needs: [left, right]
            steps: [{{run: 'true'}}]
        """
    )
    assert statuses(record) == {"left": "succeeded", "right": "succeeded", "join": "succeeded"}
    join, left, right = record.task("join"), record.task("left"), record.task("right")
    assert join.started_at and left.finished_at and right.finished_at
    assert join.started_at >= max(left.finished_at, right.finished_at)


def test_a_failing_finally_task_fails_the_run(run_pipeline: RunFn) -> None:
    record = run_pipeline("name: f\ntasks: [{name: a, steps: [{run: 'true'}]}]\nfinally: [{name: z, steps: [{run: 'false'}]}]\n")
    assert record.status == RunStatus.FAILED
    assert statuses(record) == {"a": "succeeded", "z": "failed"}


def test_pipefail_and_errexit(run_pipeline: RunFn) -> None:
    record = run_pipeline('name: p\ntasks:\n  - name: a\n    steps: [{run: "false | cat\\necho still"}]\n')
    assert record.task("a").status == TaskStatus.FAILED


def test_declared_result_not_written_fails_the_task(run_pipeline: RunFn) -> None:
    record = run_pipeline(
        """
        name: outputs
        tasks:
          - name: build
            steps: [{run: echo "version=1.2.3" >> "$SHIPLINE_OUTPUT"}]
            results: [version, digest]
        """
    )
    assert record.status == RunStatus.FAILED
    assert "declared result 'digest' not produced" in record.task("build").message


def test_multiline_results(run_pipeline: RunFn) -> None:
    record = run_pipeline(
        """
        name: multi
        tasks:
          - name: notes
            steps:
              - run: |
                  { echo "notes<<END"; printf 'line 1\\nline 2\\n'; echo END; } >> "$SHIPLINE_OUTPUT"
            results: [notes]
        """
    )
    assert record.task("notes").results == {"notes": "line 1\nline 2"}


def test_retries_until_success(run_pipeline: RunFn, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    record = run_pipeline(
        f"""
        name: flaky
        tasks:
          - name: flaky
            retries: 3
            steps:
              - run: |
                  n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}
                  [ $n -ge 3 ]
        """
    )
    assert record.status == RunStatus.SUCCEEDED
    task = record.task("flaky")
    assert task.attempts == 3
    assert [s.attempt for s in task.steps] == [1, 2, 3]


def test_retries_exhausted(run_pipeline: RunFn) -> None:
    record = run_pipeline("name: r\ntasks: [{name: a, retries: 2, steps: [{run: exit 1}]}]\n")
    assert record.task("a").attempts == 3
    assert record.task("a").message == "step 'exit 1' exited with code 1 (after 3 attempts)"


def test_task_timeout_kills_the_step_and_its_children(run_pipeline: RunFn, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    record = run_pipeline(
        f"""
        name: slow
        tasks:
          - name: slow
            timeout: 1s
            steps: [{{run: 'sleep 300 & echo $! > {pidfile}; wait'}}]
        """
    )
    assert record.status == RunStatus.FAILED
    assert record.task("slow").message == "timed out after 1s"
    child = int(pidfile.read_text())
    assert not _alive(child), "the step's child process was killed with it"


def test_pipeline_timeout_stops_the_run_but_finally_runs(run_pipeline: RunFn) -> None:
    record = run_pipeline(
        """
        name: slow
        timeout: 1s
        tasks:
          - name: slow
            steps: [{run: sleep 300}]
          - name: next
            steps: [{run: 'true'}]
        finally:
          - name: always
            steps: [{run: 'true'}]
        """
    )
    assert record.status == RunStatus.FAILED
    assert "timed out after 1s" in record.message
    assert statuses(record) == {"slow": "failed", "next": "skipped", "always": "succeeded"}


def test_step_timeout(run_pipeline: RunFn) -> None:
    record = run_pipeline("name: s\ntasks: [{name: a, steps: [{run: sleep 30, timeout: 0.5s}]}]\n")
    assert record.task("a").message == "step 'sleep 30' timed out after 0.5s"


def test_step_leftovers_are_killed_when_the_step_ends(run_pipeline: RunFn, tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    record = run_pipeline(f"name: bg\ntasks: [{{name: a, steps: [{{run: 'sleep 300 & echo $! > {pidfile}'}}]}}]\n")
    assert record.status == RunStatus.SUCCEEDED
    assert not _alive(int(pidfile.read_text()))


HOSTILE = [
    "$(touch {marker})",
    "`touch {marker}`",
    '"; touch {marker} #',
    "'; touch {marker} #",
    "x\ntouch {marker}",
    "${{{{ params.other }}}}",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_values_are_data_never_code(run_pipeline: RunFn, settings: Settings, tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    value = template.format(marker=marker)
    record = run_pipeline(
        """
        name: inject
        params:
          value: {}
          other: {default: nope}
        tasks:
          - name: echo
            env: {FROM_ENV: "${{ params.value }}"}
            steps:
              - run: |
                  echo ${{ params.value }}
                  echo "${{ params.value }}"
                  echo "$FROM_ENV"
                  printf 'out<<EOF\\n%s\\nEOF\\n' "${{ params.value }}" >> "$SHIPLINE_OUTPUT"
            results: [out]
          - name: again
            when: ${{ tasks.echo.results.out == params.value }}
            steps:
              - run: echo "${{ tasks.echo.results.out }}"
        """,
        {"value": value},
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert not marker.exists(), "a param value was executed"
    assert record.task("echo").results["out"] == value
    assert record.task("again").status == TaskStatus.SUCCEEDED
    assert value.splitlines()[0] in log_text(settings, record, "echo")


def test_skipped_task_results_skip_dependents(run_pipeline: RunFn) -> None:
    record = run_pipeline(
        """
        name: skipchain
        tasks:
          - name: maybe
            when: "false"
            steps: [{run: echo "v=1" >> "$SHIPLINE_OUTPUT"}]
            results: [v]
          - name: plain
            steps: [{run: 'true'}]
          - name: uses-it
            needs: [maybe]
            steps: [{run: 'echo ${{ tasks.maybe.results.v }}'}]
        """
    )
    assert record.status == RunStatus.SUCCEEDED
    assert statuses(record) == {"maybe": "skipped", "plain": "succeeded", "uses-it": "skipped"}
    assert "tasks.maybe.results.v" in record.task("uses-it").message


def test_reusable_task_gets_inputs(run_pipeline: RunFn, write: Callable[..., Path], settings: Settings) -> None:
    write(
        """
        inputs:
          message: {}
          times: {default: "2"}
        steps:
          - run: |
              for i in $(seq ${{ inputs.times }}); do echo "say: ${{ inputs.message }}"; done
              echo "said=${{ inputs.message }}" >> "$SHIPLINE_OUTPUT"
        results: [said]
        """,
        "tasks/say.yaml",
    )
    record = run_pipeline(
        """
        name: reuse
        params: {word: hi}
        tasks:
          - name: say
            uses: ./tasks/say.yaml
            with: {message: "${{ params.word }} there"}
        """
    )
    assert record.task("say").results == {"said": "hi there"}
    assert log_text(settings, record, "say").count("say: hi there") == 2


def test_catalog_git_clone(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    os.system(f"git init -q --bare -b main {origin} && git clone -q {origin} {work} 2>/dev/null")
    (work / "README").write_text("hello\n")
    os.system(f"cd {work} && git add README && git -c user.email=t@t -c user.name=t commit -qm init && git push -q origin main")
    record = run_pipeline(
        f"""
        name: clone
        tasks:
          - name: clone
            uses: shipline/git-clone
            with: {{url: "{origin}"}}
          - name: read
            steps: [{{run: cat src/README}}]
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert len(record.task("clone").results["commit"]) == 40
    assert "hello" in log_text(settings, record, "read")


def test_concurrency_limit_is_respected(settings: Settings, store: SqlStore, write: Callable[..., Path], tmp_path: Path) -> None:
    limited = settings.model_copy(update={"max_parallel": 2})
    engine = Engine(limited, store, LocalExecutor(1.0))
    log = tmp_path / "overlap"
    tasks = "\n".join(
        f"  - name: t{i}\n    needs: []\n    steps: [{{run: 'echo start >> {log}; sleep 0.2; echo end >> {log}'}}]"
        for i in range(6)
    )
    pipeline = load_pipeline(write(f"name: wide\ntasks:\n{tasks}\n"))
    record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
    assert record.status == RunStatus.SUCCEEDED
    depth = peak = 0
    for line in log.read_text().split():
        depth += 1 if line == "start" else -1
        peak = max(peak, depth)
    assert peak == 2


def test_many_runs_of_one_definition_at_once(engine: Engine, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(
        write(
            "name: p\nparams: {n: {}}\ntasks: [{name: a, steps: [{run: 'echo \"n=${{ params.n }}\" >> $SHIPLINE_OUTPUT'}], results: [n]}]\n"
        )
    )

    async def many() -> list[RunRecord]:
        ids = [engine.submit(pipeline, {"n": str(i)}) for i in range(20)]
        return list(await asyncio.gather(*(engine.drive(i) for i in ids)))

    records = asyncio.run(many())
    assert [r.task("a").results["n"] for r in records] == [str(i) for i in range(20)]
    assert len({r.id for r in records}) == 20


def test_cancel_kills_processes_and_runs_finally(engine: Engine, write: Callable[..., Path], tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pipeline = load_pipeline(
        write(
            f"""
            name: long
            tasks:
              - name: long
                steps: [{{run: 'sleep 300 & echo $! > {pidfile}; wait'}}]
              - name: after
                steps: [{{run: 'true'}}]
            finally:
              - name: cleanup
                steps: [{{run: 'echo cleaning'}}]
            """
        )
    )

    async def scenario() -> RunRecord:
        run_id = engine.submit(pipeline, {})
        driving = asyncio.create_task(engine.drive(run_id))
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.02)
        engine.cancel(run_id)
        return await driving

    record = asyncio.run(scenario())
    assert record.status == RunStatus.CANCELLED
    assert statuses(record) == {"long": "cancelled", "after": "skipped", "cleanup": "succeeded"}
    assert not _alive(int(pidfile.read_text()))


def test_cancel_through_the_store_from_another_process(
    engine: Engine, store: SqlStore, write: Callable[..., Path], tmp_path: Path, settings: Settings
) -> None:
    pipeline = load_pipeline(write("name: long\ntasks: [{name: long, steps: [{run: sleep 300}]}]\n"))
    other = SqlStore(settings.database)  # as `shipline runs cancel` would open it

    async def scenario() -> RunRecord:
        run_id = engine.submit(pipeline, {})
        driving = asyncio.create_task(engine.drive(run_id))
        while store.get_run(run_id).task("long").status != TaskStatus.RUNNING:
            await asyncio.sleep(0.02)
        other.request_cancel(run_id)
        return await driving

    record = asyncio.run(scenario())
    assert record.status == RunStatus.CANCELLED


def test_rerun_uses_the_stored_definition(engine: Engine, write: Callable[..., Path]) -> None:
    path = write(
        "name: r\nparams: {x: {}}\ntasks: [{name: a, steps: [{run: 'echo \"x=${{ params.x }}\" >> $SHIPLINE_OUTPUT'}], results: [x]}]\n"
    )
    first = asyncio.run(engine.drive(engine.submit(load_pipeline(path), {"x": "1"})))
    path.write_text("name: r\ntasks: [{name: other, steps: [{run: 'false'}]}]\n")
    again = asyncio.run(engine.drive(engine.rerun(first.id)))
    assert again.rerun_of == first.id
    assert again.status == RunStatus.SUCCEEDED
    assert again.task("a").results == {"x": "1"}


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return True


def test_a_run_waiting_for_a_slot_is_still_queued(
    settings: Settings, store: SqlStore, write: Callable[..., Path], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    engine = Engine(settings.model_copy(update={"max_parallel": 1}), store, LocalExecutor(1.0))
    pipeline = load_pipeline(
        write(f"name: gated\ntasks: [{{name: a, steps: [{{run: 'while [ ! -e {gate} ]; do sleep 0.02; done'}}]}}]\n")
    )

    async def scenario() -> tuple[RunStatus, RunStatus, list[RunRecord]]:
        first, second = engine.submit(pipeline, {}), engine.submit(pipeline, {})
        driving = [asyncio.create_task(engine.drive(first)), asyncio.create_task(engine.drive(second))]
        while store.get_run(first).status != RunStatus.RUNNING:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        waiting = store.get_run(second).status
        gate.touch()
        records = list(await asyncio.gather(*driving))
        return store.get_run(first).status, waiting, records

    first, waiting, records = asyncio.run(scenario())
    assert waiting == RunStatus.QUEUED
    assert [r.status for r in records] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]


def test_cancel_right_after_a_task_was_launched(engine: Engine, write: Callable[..., Path]) -> None:
    # The cancel lands before the task's coroutine has run at all.
    pipeline = load_pipeline(
        write("name: early\ntasks: [{name: a, steps: [{run: sleep 30}]}, {name: b, steps: [{run: 'true'}]}]\n")
    )

    async def scenario() -> RunRecord:
        run_id = engine.submit(pipeline, {})
        driving = asyncio.create_task(engine.drive(run_id))
        while run_id not in engine._drivers or not engine._drivers[run_id].running:
            await asyncio.sleep(0)
        engine.cancel(run_id)
        return await asyncio.wait_for(driving, 30)

    record = asyncio.run(scenario())
    assert record.status == RunStatus.CANCELLED
    assert statuses(record) == {"a": "cancelled", "b": "skipped"}


def test_steps_see_no_credentials_of_the_engine(
    run_pipeline: RunFn, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    person = tmp_path / "person"
    (person / ".kube").mkdir(parents=True)
    (person / ".kube" / "config").write_text("a person's cluster credentials")
    monkeypatch.setenv("HOME", str(person))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-cloud-key")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    monkeypatch.setenv("LC_TIME", "C")
    record = run_pipeline(
        """
        name: env
        tasks:
          - name: look
            steps:
              - run: |
                  env > "$SHIPLINE_WORKSPACE/env.txt"
                  cat ~/.kube/config > "$SHIPLINE_WORKSPACE/kube.txt" 2>/dev/null || true
                  git --version > /dev/null   # PATH still finds tools
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    workspace = settings.workspaces / str(record.id)
    seen = dict(line.split("=", 1) for line in (workspace / "env.txt").read_text().splitlines() if "=" in line)
    assert "AWS_SECRET_ACCESS_KEY" not in seen and "SSH_AUTH_SOCK" not in seen
    assert seen["HOME"] == str(settings.step_homes / str(record.id)) and seen["LC_TIME"] == "C"
    assert (workspace / "kube.txt").read_text() == ""


def test_step_env_setting_lets_named_variables_through(
    engine: Engine, write: Callable[..., Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILD_CACHE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SHIPLINE_STEP_ENV", "PATH,BUILD_*")
    engine.settings = load_settings()
    pipeline = load_pipeline(
        write(
            "name: pass\ntasks: [{name: a, steps: [{run: 'echo \"cache=$BUILD_CACHE_URL\" >> $SHIPLINE_OUTPUT'}], results: [cache]}]\n"
        )
    )
    record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
    assert record.task("a").results == {"cache": "http://127.0.0.1:1"}


def test_a_run_whose_engine_died_before_starting_it_is_not_left_queued(
    settings: Settings, store: SqlStore, write: Callable[..., Path]
) -> None:
    pipeline = load_pipeline(write("name: never\ntasks: [{name: a, steps: [{run: 'true'}]}]\n"))
    cli = Engine(settings, store, LocalExecutor(1.0))
    cli.owner = f"{socket.gethostname()}:{2**22 + 1}:0"  # `shipline run`, killed between submit and drive
    run_id = cli.submit(pipeline, {}, claim=True)
    assert store.next_queued(10) == [], "a server must not take a run that a CLI engine took"
    later = Engine(settings, store, LocalExecutor(1.0))
    assert later.recover() == [run_id]
    record = store.get_run(run_id)
    assert record.status == RunStatus.FAILED and "stopped before the run started" in record.message
    assert f"shipline runs rerun {run_id}" in record.message and record.task("a").status == TaskStatus.SKIPPED


def test_an_engine_drives_the_run_it_claimed_at_submit(engine: Engine, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(write("name: mine\ntasks: [{name: a, steps: [{run: 'true'}]}]\n"))
    record = asyncio.run(engine.drive(engine.submit(pipeline, {}, claim=True)))
    assert record.status == RunStatus.SUCCEEDED


def test_a_failed_task_says_why_and_keeps_what_it_reported(run_pipeline: RunFn) -> None:
    record = run_pipeline(
        """
        name: failing-tests
        tasks:
          - name: test
            steps:
              - name: run tests
                run: |
                  echo "tests-failed=2" >> "$SHIPLINE_OUTPUT"
                  echo "undeclared=x" >> "$SHIPLINE_OUTPUT"
                  echo "2 of 5 tests failed: test_a, test_b" >&2
                  echo "   "
                  exit 1
            results: [tests-failed, tests-passed]
          - name: after
            steps: [{run: 'echo "${{ tasks.test.results.tests-failed }}"'}]
        """
    )
    assert record.status == RunStatus.FAILED
    task = record.task("test")
    assert task.message == "step 'run tests' exited with code 1: 2 of 5 tests failed: test_a, test_b"
    # Shown with the failure, but only what was declared; other tasks never see it.
    assert task.results == {"tests-failed": "2"}
    assert record.task("after").status == TaskStatus.SKIPPED


def test_an_engine_driven_from_successive_event_loops_keeps_its_slots(engine: Engine, write: Callable[..., Path]) -> None:
    # More tasks than slots wait on the slot semaphore; a second asyncio.run must not find it bound to the first loop.
    width = engine.settings.max_parallel * 3
    leaves = "".join(f"  - name: l{i}\n    needs: []\n    steps: [{{run: 'true'}}]\n" for i in range(width))
    pipeline = load_pipeline(write(f"name: wide\ntasks:\n{leaves}"))
    for _ in range(2):
        record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
        assert record.status == RunStatus.SUCCEEDED, [t.message for t in record.tasks if t.message]
