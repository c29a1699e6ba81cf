"""The run semantics, the same on both executors: `local`, and `kubernetes` (each task a pod on
the testbed's real node).  Everything a step shares with a later one goes through the run's
workspace, never through a path of the host: that is what a definition may rely on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shipline.domain.runs import RunRecord, RunStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.kubernetes import KubernetesExecutor

RunOn = Callable[..., RunRecord]


def statuses(record: RunRecord) -> dict[str, str]:
    return {t.name: t.status.value for t in record.tasks}


def log_text(engine: Engine, record: RunRecord, task: str) -> str:
    return "".join(p.read_text() for p in sorted((engine.settings.logs / str(record.id)).glob(f"{task}.*.log")))


def nothing_left(engine: Engine, record: RunRecord) -> None:
    """On Kubernetes: no pod and no Secret of the run is left in the namespace (listed)."""
    executor = engine.executor
    if not isinstance(executor, KubernetesExecutor):
        return
    left = executor.leftovers(record.id)
    for _ in range(60):  # a pod deleted with a grace period goes within it
        if not left:
            break
        time.sleep(0.5)
        left = executor.leftovers(record.id)
    assert left == [], f"left behind in the namespace: {left}"


def test_results_flow_needs_and_when(run_on: RunOn, any_engine: Engine) -> None:
    big = "x" * 20000  # far over Tekton's 4 KB termination-message cap
    record = run_on(
        """
        name: flow
        params:
          greeting: {default: hello}
        tasks:
          - name: produce
            steps:
              - run: |
                  echo "answer=42" >> "$SHIPLINE_OUTPUT"
                  printf 'big=%s\\n' "$(head -c 20000 /dev/zero | tr '\\0' x)" >> "$SHIPLINE_OUTPUT"
            results: [answer, big]
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
    assert record.status == RunStatus.SUCCEEDED, [(t.name, t.message) for t in record.tasks]
    assert statuses(record) == {"produce": "succeeded", "consume": "succeeded", "never": "skipped", "report": "succeeded"}
    assert record.task("produce").results == {"answer": "42", "big": big}
    assert "hi 42" in log_text(any_engine, record, "consume")
    assert "done: succeeded" in log_text(any_engine, record, "report")
    nothing_left(any_engine, record)


def test_the_workspace_is_shared_by_the_tasks_of_a_run(run_on: RunOn, any_engine: Engine) -> None:
    record = run_on(
        """
        name: share
        tasks:
          - name: write
            steps:
              - run: mkdir -p out && echo "built" > out/artifact && pwd > out/where
                workdir: src
          - name: a
            needs: [write]
            steps: [{run: 'cat src/out/artifact > from-a'}]
          - name: b
            needs: [write]
            steps: [{run: 'cat src/out/artifact > from-b'}]
          - name: read
            needs: [a, b]
            steps:
              - run: |
                  echo "seen=$(cat from-a)-$(cat from-b)" >> "$SHIPLINE_OUTPUT"
                  echo "where=$(cat src/out/where)" >> "$SHIPLINE_OUTPUT"
                  echo "workspace=$SHIPLINE_WORKSPACE" >> "$SHIPLINE_OUTPUT"
            results: [seen, where, workspace]
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    results = record.task("read").results
    assert results["seen"] == "built-built"
    assert results["where"] == f"{results['workspace']}/src", "workdir is relative to the run's workspace"
    nothing_left(any_engine, record)


def test_first_failure_skips_the_rest_and_finally_runs(run_on: RunOn, any_engine: Engine) -> None:
    record = run_on(
        """
        name: fails
        tasks:
          - name: ok
            steps: [{run: echo fine}]
          - name: boom
            steps:
              - run: echo about to fail
              - run: exit 3
              - run: echo never printed
          - name: after
            steps: [{run: echo never}]
        finally:
          - name: cleanup
            steps: [{run: 'echo "status=${{ run.status }} boom=${{ tasks.boom.status }}"'}]
        """
    )
    assert record.status == RunStatus.FAILED
    assert statuses(record) == {"ok": "succeeded", "boom": "failed", "after": "skipped", "cleanup": "succeeded"}
    assert record.task("boom").message == "step 'exit 3' exited with code 3"
    assert [s.exit_code for s in record.task("boom").steps if s.exit_code is not None] == [0, 3]
    assert "status=failed boom=failed" in log_text(any_engine, record, "cleanup")
    assert "never printed" not in log_text(any_engine, record, "boom")
    assert "boom" in record.message
    nothing_left(any_engine, record)


def test_pipefail_errexit_and_a_missing_result(run_on: RunOn) -> None:
    record = run_on(
        """
        name: strict
        tasks:
          - name: pipe
            needs: []
            steps: [{run: 'false | true; echo not reached'}]
          - name: noresult
            needs: []
            steps: [{run: 'echo nothing'}]
            results: [missing]
        """
    )
    assert statuses(record) == {"pipe": "failed", "noresult": "failed"}
    assert "exited with code 1" in record.task("pipe").message
    assert "declared result 'missing' not produced" in record.task("noresult").message


def test_retries_until_success(run_on: RunOn, any_engine: Engine) -> None:
    record = run_on(
        """
        name: flaky
        tasks:
          - name: flaky
            retries: 2
            steps:
              - run: |
                  n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count
                  echo "attempt $n"
                  [ "$n" -ge 2 ]
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert record.task("flaky").attempts == 2
    nothing_left(any_engine, record)


def test_timeouts_stop_the_step(run_on: RunOn, any_engine: Engine) -> None:
    record = run_on(
        """
        name: slow
        tasks:
          - name: task-bound
            needs: []
            timeout: 2s
            steps: [{run: 'echo going; sleep 300'}]
          - name: step-bound
            needs: []
            steps:
              - run: echo first
              - {run: 'sleep 300', timeout: 2s}
        """
    )
    assert statuses(record) == {"task-bound": "failed", "step-bound": "failed"}
    assert record.task("task-bound").message == "timed out after 2s"
    assert record.task("step-bound").message == "step 'sleep 300' timed out after 2s"
    assert "timed out" in log_text(any_engine, record, "task-bound")
    nothing_left(any_engine, record)


def test_cancel_stops_the_task_and_runs_finally(any_engine: Engine, write: Callable[..., Path]) -> None:
    pipeline = load_pipeline(
        write(
            """
            name: long
            tasks:
              - name: long
                steps: [{run: 'echo started-long; sleep 300'}]
              - name: after
                steps: [{run: 'true'}]
            finally:
              - name: cleanup
                steps: [{run: 'echo cleaning'}]
            """
        )
    )
    logs = any_engine.settings.logs

    async def scenario() -> RunRecord:
        run_id = any_engine.submit(pipeline, {})
        driving = asyncio.create_task(any_engine.drive(run_id))
        while "started-long" not in "".join(p.read_text() for p in (logs / str(run_id)).glob("long.*.log")):
            await asyncio.sleep(0.05)
        any_engine.cancel(run_id)
        return await driving

    record = asyncio.run(scenario())
    assert record.status == RunStatus.CANCELLED
    assert statuses(record) == {"long": "cancelled", "after": "skipped", "cleanup": "succeeded"}
    assert "cancelled" in log_text(any_engine, record, "long")
    nothing_left(any_engine, record)


@pytest.mark.parametrize(
    "hostile",
    [
        "$(touch pwned)",
        "`touch pwned`",
        "'; touch pwned; echo '",
        '"; touch pwned; echo "',
        "x\ntouch pwned",
    ],
)
def test_values_are_data_never_code(run_on: RunOn, hostile: str) -> None:
    record = run_on(
        """
        name: hostile
        params:
          value: {}
        tasks:
          - name: echo
            env: {FROM_ENV: "${{ params.value }}"}
            steps:
              - run: |
                  echo ${{ params.value }}
                  echo "${{ params.value }}"
                  echo "$FROM_ENV"
          - name: check
            steps:
              - run: 'if [ -e pwned ]; then echo "pwned=yes" >> "$SHIPLINE_OUTPUT"; else echo "pwned=no" >> "$SHIPLINE_OUTPUT"; fi'
            results: [pwned]
        """,
        {"value": hostile},
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    assert record.task("check").results == {"pwned": "no"}, "a param's value was executed"


def test_secrets_are_masked_and_secret_files_reach_only_their_task(any_engine: Engine, run_on: RunOn) -> None:
    any_engine.secrets.set("token", "s3cr3t-value-123")
    any_engine.secrets.set("kubeconfig", "apiVersion: v1\nkind: Config\n")
    record = run_on(
        """
        name: secret
        tasks:
          - name: use
            env:
              TOKEN: ${{ secrets.token }}
              CONF: ${{ secret_files.kubeconfig }}
            steps:
              - run: |
                  echo "token is $TOKEN"
                  echo "inline ${{ secrets.token }}"
                  grep -q "kind: Config" "$CONF" && echo "file=read" >> "$SHIPLINE_OUTPUT"
                  echo "mode=$(stat -L -c %a "$CONF")" >> "$SHIPLINE_OUTPUT"
                  echo "$CONF" > conf-path
            results: [file, mode]
          - name: other
            steps:
              - run: 'if [ -e "$(cat conf-path)" ]; then echo "seen=yes"; else echo "seen=no"; fi >> "$SHIPLINE_OUTPUT"'
            results: [seen]
        """
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    text = log_text(any_engine, record, "use")
    assert "s3cr3t-value-123" not in text and "token is ***" in text and "inline ***" in text
    assert record.task("use").results["file"] == "read"
    assert record.task("use").results["mode"] in {"600", "400"}, "only the steps' user may read a secret file"
    assert record.task("other").results == {"seen": "no"}, "a secret file outlived its task"
    nothing_left(any_engine, record)


def test_a_workdir_that_leads_out_of_the_workspace_is_refused(run_on: RunOn) -> None:
    record = run_on(
        """
        name: escape
        tasks:
          - name: link
            steps: [{run: 'ln -s / out'}]
          - name: use
            steps: [{run: 'echo escaped > marker', workdir: out/tmp}]
        """
    )
    assert statuses(record) == {"link": "succeeded", "use": "failed"}
    assert "outside the run's workspace: refused" in record.task("use").message
