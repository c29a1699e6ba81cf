"""The scheduler alone: what starts, what is skipped and when a run is over, with no engine around it."""

from __future__ import annotations

from shipline.domain.pipelines import ResolvedPipeline, ResolvedTask, Step
from shipline.domain.runs import RunStatus, Scheduler, TaskStatus


def _task(name: str, needs: list[str], *, when: str | None = None, is_finally: bool = False) -> ResolvedTask:
    return ResolvedTask(name=name, needs=needs, when=when, steps=[Step(run="true")], is_finally=is_finally)


def _drive(scheduler: Scheduler, outcome: dict[str, TaskStatus]) -> tuple[list[list[str]], dict[str, str], RunStatus]:
    """Play a run: every started task ends with `outcome[name]` (default succeeded); returns the waves."""
    waves: list[list[str]] = []
    skipped: dict[str, str] = {}
    while True:
        decision = scheduler.decide({}, 1)
        for name, why in decision.skip.items():
            skipped[name] = why
            scheduler.update(name, TaskStatus.SKIPPED)
        if decision.finished is not None:
            return waves, skipped, decision.finished
        if decision.start:
            waves.append(decision.start)
            for name in decision.start:
                scheduler.update(name, TaskStatus.RUNNING)
            for name in decision.start:
                scheduler.update(name, outcome.get(name, TaskStatus.SUCCEEDED))
        elif not decision.skip:
            raise AssertionError("stuck: nothing started, skipped or finished")


def test_a_fan_out_of_500_starts_together_and_the_join_waits_for_all() -> None:
    leaves = [_task(f"leaf{i}", ["root"]) for i in range(500)]
    pipeline = ResolvedPipeline(name="fan", tasks=[_task("root", []), *leaves, _task("join", [t.name for t in leaves])])
    waves, skipped, status = _drive(Scheduler(pipeline), {})
    assert status == RunStatus.SUCCEEDED and not skipped
    assert waves[0] == ["root"] and len(waves[1]) == 500 and waves[2] == ["join"]


def test_a_failure_skips_what_has_not_started_and_finally_still_runs() -> None:
    pipeline = ResolvedPipeline(
        name="f",
        tasks=[
            _task("build", []),
            _task("test", ["build"]),
            _task("push", ["test"]),
            _task("report", [], is_finally=True),
            _task("after-report", ["report"], is_finally=True),
        ],
    )
    waves, skipped, status = _drive(Scheduler(pipeline), {"test": TaskStatus.FAILED})
    assert status == RunStatus.FAILED
    assert skipped == {"push": "the run is stopping: an earlier task failed"}
    assert waves == [["build"], ["test"], ["report"], ["after-report"]]


def test_a_false_when_skips_the_task_and_its_dependents_still_run() -> None:
    pipeline = ResolvedPipeline(name="w", tasks=[_task("a", []), _task("b", ["a"], when="${{ 'x' == 'y' }}"), _task("c", ["b"])])
    waves, skipped, status = _drive(Scheduler(pipeline), {})
    assert status == RunStatus.SUCCEEDED
    assert skipped == {"b": "when: ${{ 'x' == 'y' }} is false"}
    assert waves == [["a"], ["c"]]


def test_finally_tasks_see_the_run_status_of_the_main_tasks() -> None:
    pipeline = ResolvedPipeline(
        name="s",
        tasks=[
            _task("a", []),
            _task("on-failure", [], when="${{ run.status == 'failed' }}", is_finally=True),
            _task("on-success", [], when="${{ run.status == 'succeeded' }}", is_finally=True),
        ],
    )
    waves, skipped, status = _drive(Scheduler(pipeline), {"a": TaskStatus.FAILED})
    assert status == RunStatus.FAILED
    assert waves == [["a"], ["on-failure"]] and set(skipped) == {"on-success"}
