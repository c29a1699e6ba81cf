"""The one writer of run state: every change is saved to the store, then published.

Nothing else updates runs, tasks or steps.  Secret values are masked here,
on the way to the store, the log files and the event bus alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shipline.domain.runs import RunStatus, StepStatus, TaskStatus, mask
from shipline.engine.events import Event, EventBus
from shipline.engine.logs import LogWriter, step_log_path
from shipline.executors.base import StepEnd
from shipline.store.sql import SqlStore


def now() -> datetime:
    return datetime.now(UTC)


class RunRecorder:
    def __init__(self, store: SqlStore, bus: EventBus, logs: Path, run_id: int) -> None:
        self.store = store
        self.bus = bus
        self.logs = logs
        self.run_id = run_id
        self.secrets: list[str] = []

    def hide(self, values: list[str]) -> None:
        """From now on, write each of these values as ***.

        Logs are masked a line at a time, so each line of a multi-line value
        (a PEM key, a kubeconfig) is masked on its own too; lines too short to
        tell anything (`}`, `---`) are left alone.
        """
        for value in values:
            if value:
                self.secrets.append(value)
                self.secrets += [line for line in value.splitlines() if len(line.strip()) >= 4 and line != value]

    def mask(self, text: str) -> str:
        return mask(text, self.secrets) if self.secrets else text

    def _publish(self, kind: Literal["run", "task", "step", "log"], data: dict[str, Any], at: datetime) -> None:
        if self.bus.has_subscribers:
            self.bus.publish(Event(self.run_id, kind, data, at))

    def run_started(self, owner: str) -> None:
        at = now()
        self.store.update_run(self.run_id, status=RunStatus.RUNNING.value, started_at=at, owner=owner, heartbeat_at=at)
        self._publish("run", {"status": RunStatus.RUNNING.value}, at)

    def run_waiting(self, message: str) -> None:
        """A queued run that may not start yet (its concurrency group is held): said, not stored."""
        self._publish("run", {"status": RunStatus.QUEUED.value, "message": self.mask(message)}, now())

    def run_finished(self, status: RunStatus, message: str = "", results: dict[str, str] | None = None) -> None:
        at = now()
        message = self.mask(message)
        shown = {k: self.mask(v) for k, v in (results or {}).items()}
        self.store.update_run(self.run_id, status=status.value, finished_at=at, message=message, results=shown)
        self._publish("run", {"status": status.value, "message": message, "results": shown}, at)

    def task_started(self, task: str, attempt: int) -> None:
        at = now()
        values: dict[str, Any] = {"status": TaskStatus.RUNNING.value, "attempts": attempt, "message": ""}
        if attempt == 1:
            values["started_at"] = at
        self.store.update_task(self.run_id, task, **values)
        self._publish("task", {"task": task, "status": TaskStatus.RUNNING.value, "attempt": attempt}, at)

    def task_retrying(self, task: str, attempt: int, message: str) -> None:
        at = now()
        self.store.update_task(self.run_id, task, message=f"attempt {attempt} failed: {message}; retrying")
        self._publish("task", {"task": task, "status": TaskStatus.RUNNING.value, "attempt": attempt, "message": message}, at)

    def task_finished(self, task: str, status: TaskStatus, results: dict[str, str], message: str = "") -> None:
        at = now()
        shown = {k: self.mask(v) for k, v in results.items()}
        message = self.mask(message)
        self.store.update_task(self.run_id, task, status=status.value, results=shown, message=message, finished_at=at)
        self._publish("task", {"task": task, "status": status.value, "results": shown, "message": message}, at)

    def tasks_skipped(self, reasons: dict[str, str]) -> None:
        at = now()
        for task, reason in reasons.items():
            self.store.update_task(self.run_id, task, status=TaskStatus.SKIPPED.value, message=self.mask(reason))
            self._publish("task", {"task": task, "status": TaskStatus.SKIPPED.value, "message": reason}, at)

    def steps(self, task: str, attempt: int, names: list[str]) -> StepRecorder:
        return StepRecorder(self, task, attempt, names)


class StepRecorder:
    """What the executor reports about one task attempt's steps (a `StepListener`)."""

    def __init__(self, run: RunRecorder, task: str, attempt: int, names: list[str]) -> None:
        self.run = run
        self.task = task
        self.attempt = attempt
        self.names = names
        self.writers: dict[int, LogWriter] = {}

    def step_started(self, index: int, pid: int | None) -> None:
        at = now()
        path = step_log_path(self.run.logs, self.run.run_id, self.task, self.attempt, index)
        self._writer(index)
        self.run.store.start_step(
            self.run.run_id, self.task, self.attempt, index, name=self.names[index], log_path=str(path), started_at=at, pid=pid
        )
        self.run._publish("step", {"task": self.task, "step": index, "name": self.names[index], "attempt": self.attempt, "status": StepStatus.RUNNING.value}, at)

    def _writer(self, index: int) -> LogWriter:
        writer = self.writers.get(index)
        if writer is None:  # a line after the step was closed (a process that outlived its group)
            writer = self.writers[index] = LogWriter(step_log_path(self.run.logs, self.run.run_id, self.task, self.attempt, index))
        return writer

    def step_log(self, index: int, line: str) -> None:
        line = self.run.mask(line)
        at = self._writer(index).write(line)
        self.run._publish("log", {"task": self.task, "step": index, "attempt": self.attempt, "line": line}, at)

    def step_finished(self, index: int, exit_code: int | None, status: StepEnd) -> None:
        at = now()
        writer = self.writers.pop(index, None)
        if writer is not None:
            writer.close()
        self.run.store.update_step(self.run.run_id, self.task, self.attempt, index, status=status, exit_code=exit_code, finished_at=at)
        self.run._publish("step", {"task": self.task, "step": index, "attempt": self.attempt, "status": status, "exit_code": exit_code}, at)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
