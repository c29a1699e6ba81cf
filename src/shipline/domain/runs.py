"""Runs: statuses, the records a user sees, and the state machine that drives them.

`Scheduler` is the scheduler's brain and is pure: told what happened to each
task, it says which tasks to start, which to skip (and why), and whether the
run is over.  The engine only carries out its decisions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from shipline.domain import expressions as ex
from shipline.domain.urls import has_credentials, public_url
from shipline.exceptions import UsageError

if TYPE_CHECKING:  # records and the scheduler only name them: `runs list` need not build the definition models
    from shipline.domain.pipelines import ResolvedPipeline, ResolvedTask


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


MASK = "***"


class StepRecord(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    index: int
    name: str
    attempt: int
    status: StepStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TaskRecord(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    name: str
    status: TaskStatus
    results: dict[str, str] = {}
    started_at: datetime | None = None
    finished_at: datetime | None = None
    needs: list[str] = []
    is_finally: bool = False
    attempts: int = 0
    message: str = ""
    steps: list[StepRecord] = []


INTERRUPTED = "interrupted: "
"""How the message of a run whose engine died begins (recovery writes it; notifiers read it)."""


class RunRecord(BaseModel):
    """A pipeline instance as users and scripts see it (`--json`, the API)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: int
    pipeline: str
    status: RunStatus
    params: dict[str, str]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""
    source: str = ""
    rerun_of: int | None = None
    trigger: dict[str, Any] | None = None
    results: dict[str, str] = {}
    """The pipeline's own results (its top-level `results:`), set when the run ends."""
    concurrency_group: str | None = None
    tasks: list[TaskRecord] = []

    @property
    def interrupted(self) -> bool:
        """The run's engine died under it and recovery ended it: nothing of its own work failed."""
        return self.status == RunStatus.FAILED and self.message.startswith(INTERRUPTED)

    def task(self, name: str) -> TaskRecord:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


# --- the outbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A run or task changing status, as the recorder appends it to the outbox (already masked)."""

    run_id: int
    kind: Literal["run", "task"]
    status: str
    task: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "task": self.task,
            "status": self.status,
            "data": dict(self.data),
            "created_at": self.at,
        }


class RunTransition(BaseModel):
    """An outbox row as a notifier reads it: the transition, and what it needs of its run."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    id: int
    run_id: int
    pipeline: str
    kind: Literal["run", "task"]
    task: str | None = None
    status: str
    data: dict[str, Any] = {}
    at: datetime
    params: dict[str, str] = {}
    trigger: dict[str, Any] | None = None


# --- the state machine -----------------------------------------------------------------


@dataclass
class TaskState:
    status: TaskStatus = TaskStatus.PENDING
    results: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    start: list[str]
    skip: dict[str, str]  # task -> why
    finished: RunStatus | None  # the final status once nothing is left to do


_BAD = (TaskStatus.FAILED, TaskStatus.CANCELLED)


class _TasksView(Mapping[str, Mapping[str, object]]):
    """`tasks.*` of an expression, built on access: a context costs nothing to make, however many tasks."""

    def __init__(self, states: Mapping[str, TaskState]) -> None:
        self._states = states

    def __getitem__(self, name: str) -> Mapping[str, object]:
        st = self._states[name]
        if st.status == TaskStatus.SUCCEEDED:
            return {"status": st.status.value, "results": st.results}
        return {"status": st.status.value}

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)


def aggregate(pipeline: ResolvedPipeline, states: Mapping[str, TaskState], cancelled: bool) -> RunStatus:
    """The run's status judged from its main tasks (what `run.status` means to finally tasks)."""
    if cancelled:
        return RunStatus.CANCELLED
    if any(states[t.name].status in _BAD for t in pipeline.main):
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED


def context(
    pipeline: ResolvedPipeline,
    states: Mapping[str, TaskState],
    params: Mapping[str, str],
    run_id: int,
    cancelled: bool = False,
    inputs: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    secret_files: Mapping[str, str] | None = None,
    run_status: RunStatus | None = None,
) -> dict[str, object]:
    """What `${{ }}` may see.  Results of tasks that did not succeed are absent.

    `inputs` defaults to the archetype's inputs, rendered (they may use params and secrets);
    `run_status`, when the caller knows it, saves judging it from every task.
    """
    status = run_status or aggregate(pipeline, states, cancelled)
    ctx: dict[str, object] = {
        "params": params,
        "secrets": secrets or {},
        "secret_files": secret_files or {},
        "tasks": _TasksView(states),
        "run": {"id": str(run_id), "pipeline": pipeline.name, "status": status.value},
    }
    ctx["inputs"] = dict(inputs) if inputs is not None else _render_all(pipeline.inputs, ctx)
    return ctx


class Scheduler:
    """The run's state machine: which tasks start, which are skipped (and why), when the run is over.

    Pure and incremental: `update` records what happened to a task, `decide`
    looks only at the tasks that became ready since the last decision, so a
    decision costs what changed, not the size of the run.  The engine only
    carries out its decisions.
    """

    def __init__(self, pipeline: ResolvedPipeline) -> None:
        self.pipeline = pipeline
        self.states = {t.name: TaskState() for t in pipeline.tasks}
        self._finally = {t.name for t in pipeline.finally_}
        self._unmet = {t.name: len(set(t.needs)) for t in pipeline.tasks}
        self._dependents: dict[str, list[str]] = {t.name: [] for t in pipeline.tasks}
        for task in pipeline.tasks:
            for need in dict.fromkeys(task.needs):
                self._dependents[need].append(task.name)
        self._ready = [t.name for t in pipeline.main if not self._unmet[t.name]]
        self._ready_finally = [t.name for t in pipeline.finally_ if not self._unmet[t.name]]
        self._pending_main = dict.fromkeys(t.name for t in pipeline.main)  # an ordered set
        self._main_open = len(pipeline.main)
        self._open = len(pipeline.tasks)
        self.main_failed = False
        self.finally_failed = False

    def update(self, name: str, status: TaskStatus, results: dict[str, str] | None = None) -> None:
        """Record a task's new status (and results); every change must come through here."""
        state = self.states[name]
        was_done = state.status.done
        state.status = status
        if results is not None:
            state.results = results
        if status != TaskStatus.PENDING:
            self._pending_main.pop(name, None)
        if was_done or not status.done:
            return
        self._open -= 1
        is_finally = name in self._finally
        if not is_finally:
            self._main_open -= 1
        if status in _BAD:
            if is_finally:
                self.finally_failed = True
            else:
                self.main_failed = True
        for dependent in self._dependents[name]:
            self._unmet[dependent] -= 1
            if not self._unmet[dependent]:
                (self._ready_finally if dependent in self._finally else self._ready).append(dependent)

    def run_status(self, cancelled: bool) -> RunStatus:
        """What `run.status` means to finally tasks: judged from the main tasks."""
        if cancelled:
            return RunStatus.CANCELLED
        return RunStatus.FAILED if self.main_failed else RunStatus.SUCCEEDED

    def context(
        self,
        params: Mapping[str, str],
        run_id: int,
        cancelled: bool = False,
        secrets: Mapping[str, str] | None = None,
        secret_files: Mapping[str, str] | None = None,
    ) -> dict[str, object]:
        return context(
            self.pipeline,
            self.states,
            params,
            run_id,
            cancelled,
            secrets=secrets,
            secret_files=secret_files,
            run_status=self.run_status(cancelled),
        )

    def decide(
        self,
        params: Mapping[str, str],
        run_id: int,
        *,
        stopping: bool = False,
        cancelled: bool = False,
        secrets: Mapping[str, str] | None = None,
        secret_files: Mapping[str, str] | None = None,
    ) -> Decision:
        """Decide what happens next; the caller reports every change back through `update`.

        `stopping` is set once the run must not start more main tasks (a task
        failed, the run was cancelled or timed out).  Main tasks then become
        `skipped`; finally tasks still run once every main task has ended.
        """
        start: list[str] = []
        skip: dict[str, str] = {}
        ctx = self.context(params, run_id, cancelled, secrets, secret_files)
        if stopping or cancelled or self.main_failed:
            reason = "the run is stopping: " + ("cancelled" if cancelled else "an earlier task failed")
            skip.update(dict.fromkeys(self._pending_main, reason))
            self._ready.clear()
        else:
            ready, self._ready = self._ready, []
            for name in ready:
                if self.states[name].status == TaskStatus.PENDING:
                    _judge(self.pipeline.task(name), ctx, start, skip)
        if self._main_open == 0:
            ready, self._ready_finally = self._ready_finally, []
            for name in ready:
                if self.states[name].status == TaskStatus.PENDING:
                    _judge(self.pipeline.task(name), ctx, start, skip)
        finished = None
        if self._open == 0:
            if cancelled:
                finished = RunStatus.CANCELLED
            elif stopping or self.main_failed or self.finally_failed:
                finished = RunStatus.FAILED
            else:
                finished = RunStatus.SUCCEEDED
        return Decision(start, skip, finished)


def _render_all(templates: Mapping[str, str], ctx: Mapping[str, object]) -> dict[str, str]:
    """Each template rendered; one whose references do not resolve is left out."""
    out: dict[str, str] = {}
    for name, template in templates.items():
        try:
            out[name] = ex.render(template, ctx)
        except ex.UnresolvedReference:
            continue
    return out


def run_results(pipeline: ResolvedPipeline, ctx: Mapping[str, object]) -> dict[str, str]:
    """The pipeline's own results once it has ended: those whose references resolve."""
    return _render_all(pipeline.results, ctx)


def concurrency_group(pipeline: ResolvedPipeline, params: Mapping[str, str]) -> str | None:
    """The run's rendered concurrency group, or None; raises UsageError when it cannot be rendered."""
    if pipeline.concurrency is None:
        return None
    ctx: dict[str, object] = {"params": dict(params), "run": {"pipeline": pipeline.name}}
    ctx["inputs"] = _render_all(pipeline.inputs, ctx)
    try:
        group = ex.render(pipeline.concurrency.group, ctx)
    except ex.UnresolvedReference as exc:
        raise UsageError(
            f"concurrency group {pipeline.concurrency.group!r} of '{pipeline.name}' needs {'.'.join(exc.path)}, "
            "which has no value when the run is created"
        ) from exc
    return group[:255]


def _judge(task: ResolvedTask, ctx: dict[str, object], start: list[str], skip: dict[str, str]) -> None:
    """Start the task, or skip it for a false `when:` or a result that does not exist."""
    try:
        texts = [*task.env.values(), *task.inputs.values()]
        if task.uses is None:
            texts += [text for step in task.steps for text in (step.run, *step.env.values())]
        for text in texts:
            ex.render(text, ctx)
        if task.when is not None and not ex.evaluate_condition(task.when, ctx):
            skip[task.name] = f"when: {task.when.strip()} is false"
            return
    except ex.UnresolvedReference as exc:
        skip[task.name] = f"needs {'.'.join(exc.path)}, which does not exist (that task did not succeed)"
        return
    start.append(task.name)


def mask(text: str, secrets: list[str]) -> str:
    """Replace each secret value (longest first, so overlaps stay hidden) with ***."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def bind_params(pipeline: ResolvedPipeline, given: Mapping[str, str]) -> dict[str, str]:
    """Defaults plus given values; every unknown or missing param is named in one error."""
    problems = []
    for name in given:
        if name not in pipeline.params:
            known = ", ".join(sorted(pipeline.params)) or "it declares none"
            problems.append(f"unknown param '{name}' (pipeline '{pipeline.name}' params: {known})")
    bound: dict[str, str] = {}
    for name, spec in pipeline.params.items():
        if name in given:
            bound[name] = given[name]
        elif spec.default is not None:
            bound[name] = spec.default
        else:
            hint = f" ({spec.description})" if spec.description else ""
            problems.append(f"param '{name}' is required{hint}: pass -p {name}=VALUE")
    for name, value in bound.items():
        if has_credentials(value):
            # Params are stored with the run, shown to readers and given again on rerun.
            problems.append(
                f"param '{name}' is a URL with credentials ({public_url(value)!r} with a token or password before '@'); "
                "params are shown to everyone who can read runs: pass the URL without them, and the token as a "
                "secret (`shipline secrets set NAME`, then `${{ secrets.NAME }}`)"
            )
    if problems:
        raise UsageError("\n".join(problems))
    return bound
