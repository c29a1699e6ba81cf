"""The one writer of run state: every change is saved to the store, then published.

Nothing else updates runs, tasks or steps.  Secret values are masked here, in
one place: every value the recorder hands on, to the store, the log files or
the event bus, is masked once on its way (`_save_*`, `_log` and `_publish` are
the only ways out, and each masks what it is given).  A new message, field or
kind of event is masked without anyone having to remember it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shipline.domain.runs import RunRecord, RunStatus, StepStatus, TaskStatus, Transition, mask
from shipline.domain.urls import url_secrets
from shipline.engine.events import Event, EventBus
from shipline.engine.logs import LogWriter, step_log_path
from shipline.exceptions import StoreError
from shipline.executors.base import StepEnd
from shipline.store.sql import SqlStore

STRUCTURE = frozenset(
    {
        "status",
        "started_at",
        "finished_at",
        "owner",
        "heartbeat_at",
        "log_path",
        "pid",
        "exit_code",
        "attempts",
        "attempt",
        "step",
        "task",
    }
)
"""Fields the engine makes itself (states, times, ids, the task's name from the definition): never masked,
so a short secret that happens to read `failed` or `1` cannot break a record.  Every other field is masked."""


def now() -> datetime:
    return datetime.now(UTC)


def _nothing() -> None:
    pass


class _HeldRow:
    """The values of a row's write that is held (not saved yet); `joined` once a later
    write of the same row has taken them, so that this one saves nothing of the row."""

    __slots__ = ("values", "joined")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.joined = False


HOLD_SECONDS = 0.05
"""How long at most a transition may wait to be saved with the next one (see `RunRecorder._later`)."""


class RunRecorder:
    def __init__(self, store: SqlStore, bus: EventBus, logs: Path, run_id: int) -> None:
        self._store = store
        self._bus = bus
        self.logs = logs
        self.run_id = run_id
        self.secrets: list[str] = []
        self.fault: StoreError | None = None
        """A state could not be written (the executor is not stopped for it: the driver looks here)."""
        self.on_fault: Callable[[], None] | None = None
        """Called when a held transition could not be written (the driver wakes up to stop the run)."""
        self._held: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        # Rows whose first write is held still: a later write to the same row joins it
        # (one row write instead of two when both are saved together; see `_later`).
        self._unsaved_tasks: dict[str, _HeldRow] = {}
        self._unsaved_steps: dict[tuple[str, int, int], _HeldRow] = {}

    def hide(self, values: list[str]) -> None:
        """From now on, write each of these values as ***.

        Logs are masked a line at a time, so each line of a multi-line value
        (a PEM key, a kubeconfig) is masked on its own too; lines too short to
        tell anything (`}`, `---`) are left alone.  So is the password or token
        of each URL with credentials in it, as written and %-decoded.
        """
        for value in values:
            if value:
                self.secrets.append(value)
                self.secrets += [line for line in value.splitlines() if len(line.strip()) >= 4 and line != value]
                # The token in a credential URL (a git-credentials line), wherever it shows up alone.
                self.secrets += [t for line in value.splitlines() for t in url_secrets(line) if len(t) >= 4]

    def mask(self, text: str) -> str:
        return mask(text, self.secrets) if self.secrets else text

    def _masked(self, values: dict[str, Any]) -> dict[str, Any]:
        """The fields to save or publish, each masked but the engine's own (`STRUCTURE`)."""
        if not self.secrets:
            return values
        return {k: v if k in STRUCTURE else self._deep(v) for k, v in values.items()}

    def _deep(self, value: Any) -> Any:
        """Every string in the value masked: keys and items of mappings and lists too."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self._deep(k): self._deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._deep(v) for v in value)
        return value

    # --- the only ways out: each masks what it is given --------------------------------

    def _publish(self, kind: Literal["run", "task", "step", "log"], data: dict[str, Any], at: datetime) -> None:
        self._send(kind, self._masked(data), at)

    # --- saving transitions together ------------------------------------------------------
    #
    # Most transitions come in quick succession (a task starts, its step starts and ends,
    # the task ends): each on its own would be a transaction.  Those no decision waits
    # for are held (`_later`) and saved with the next one that must be saved now (before the
    # driver starts a task: the ends it was started on; the run's end), or after HOLD_SECONDS
    # at the latest (a step that runs longer is in the store by then, with its pid).
    # Each is still saved in the transaction that makes it, with its outbox row, and
    # published only once it is saved, in order (a step's log lines wait behind it).
    # A task's end that finds its start still held makes one UPDATE of the two (the
    # start's outbox row keeps its place); a step's end that finds its row's INSERT still
    # held puts its values in that INSERT: four statements per task instead of six.

    def _later(self, save: Callable[[], None], publish: Callable[[], None]) -> None:
        """Hold a save (and the event that follows it) for the next write, or HOLD_SECONDS."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (recovery from the CLI): nothing comes soon after
            loop = None
        self._held.append((save, publish))
        if loop is None:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(HOLD_SECONDS, self._flush_held)

    def _now(self, save: Callable[[], None], read_back: bool = False) -> RunRecord | None:
        """Save now, with whatever is held, in one transaction; then publish what was held.

        With `read_back`, the transaction reads the run's record after the writes, returned
        (None when this save is part of a larger block)."""
        held, self._held = self._held, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            with self._store.together(read_back=self.run_id if read_back else None) as block:
                for earlier, _ in held:
                    earlier()
                save()
        except StoreError:
            self._held = held + self._held  # saved again with the next write (the store may be back)
            raise
        for _, publish in held:
            publish()
        return block.record

    def flush(self) -> None:
        """Save what is held now (raises StoreError when the store cannot take it)."""
        if self._held:
            self._now(lambda: None)

    @contextmanager
    def unended(self) -> Iterator[RunRecord | None]:
        """For ending a run its engine did not end (another server's recovery, an engine back from a
        store outage): the run's record, or None when it was ended meanwhile.  The saves made in the
        block are one transaction with the run's row locked (`SqlStore.lock_unended`): two such
        writers take turns, and the second finds the run ended.  If the block fails, what was held
        when it began is held again (its saves were rolled back with the rest)."""
        held = list(self._held)
        try:
            with self._store.together():
                yield self._store.lock_unended(self.run_id)
        except StoreError:
            self._held = held + [h for h in self._held if not any(h is k for k in held)]
            raise

    def drop_held(self) -> None:
        """Forget what is held: the run was ended elsewhere, and its record is no longer this recorder's to write."""
        self._held = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush_held(self) -> None:
        self._timer = None
        try:
            self.flush()
        except StoreError as exc:
            self.fault = self.fault or exc
            if self.on_fault is not None:
                self.on_fault()

    def _send(self, kind: Literal["run", "task", "step", "log"], data: dict[str, Any], at: datetime) -> None:
        """Only for data masked here already (by `_publish` or `_log`)."""
        if self._bus.has_subscribers:
            self._bus.publish(Event(self.run_id, kind, data, at))

    def _save_run(self, transition: dict[str, Any] | None = None, **values: Any) -> None:
        """Save the run's fields; with `transition` (status and data), append it to the outbox in the same transaction."""
        self._store.update_run(self.run_id, self._transition("run", None, transition), **self._masked(values))

    def _save_task(self, task: str, transition: dict[str, Any] | None = None, **values: Any) -> None:
        self._store.update_task(self.run_id, task, self._transition("task", task, transition), **self._masked(values))

    def _save_held_task(self, task: str, row: _HeldRow, transition: dict[str, Any] | None) -> None:
        """A task's held write, unless a later write took its values: then its outbox row alone."""
        if self._unsaved_tasks.get(task) is row:
            del self._unsaved_tasks[task]
        if not row.joined:
            self._save_task(task, transition, **row.values)
        elif (saved := self._transition("task", task, transition)) is not None:
            self._store.add_transition(saved)

    def _transition(self, kind: Literal["run", "task"], task: str | None, data: dict[str, Any] | None) -> Transition | None:
        if data is None:
            return None
        # Not popped: without secrets `_masked` hands back `data` itself, and a save that failed
        # (the store away) is made again with it.
        masked = self._masked(data)
        return Transition(self.run_id, kind, masked["status"], task, {k: v for k, v in masked.items() if k != "status"})

    def _save_new_step(self, task: str, attempt: int, index: int, **values: Any) -> None:
        self._store.start_step(self.run_id, task, attempt, index, **self._masked(values))

    def _save_step(self, task: str, attempt: int, index: int, **values: Any) -> None:
        self._store.update_step(self.run_id, task, attempt, index, **self._masked(values))

    def _log(self, writer: LogWriter, line: str, event: dict[str, Any]) -> None:
        """Write a step's line to its log and publish it with `event`: masked once, for both."""
        line = self.mask(line)
        at = writer.write(line)
        if self._held and self._bus.has_subscribers:  # after the step's start, which is held
            self._held.append((_nothing, lambda: self._send("log", {**event, "line": line}, at)))
        else:
            self._send("log", {**event, "line": line}, at)

    def hold_back(self, text: str) -> tuple[str, str]:
        """Split a piece of a line that goes on: what can be masked and written now, and the rest.

        The rest is the shortest end that could be the start of a secret the
        next piece completes; a secret that spans the split is kept whole on the
        left, so masking the left part alone hides it.
        """
        if not self.secrets:
            return text, ""
        cut = max(0, len(text) - max(len(s) for s in self.secrets) + 1)
        moved = True
        while moved:
            moved = False
            for secret in self.secrets:
                start = text.find(secret, max(0, cut - len(secret) + 1))
                while start != -1 and start < cut:
                    if start + len(secret) > cut:
                        cut, moved = start + len(secret), True
                    start = text.find(secret, start + 1)
        return text[:cut], text[cut:]

    # --- what happened ------------------------------------------------------------------

    def run_started(self, owner: str) -> None:
        at = now()
        self._later(
            lambda: self._save_run(
                {"status": RunStatus.RUNNING.value}, status=RunStatus.RUNNING.value, started_at=at, owner=owner, heartbeat_at=at
            ),
            lambda: self._publish("run", {"status": RunStatus.RUNNING.value}, at),
        )

    def run_waiting(self, message: str) -> None:
        """A queued run that may not start yet (its concurrency group is held): said, not stored."""
        self._publish("run", {"status": RunStatus.QUEUED.value, "message": message}, now())

    def run_finished(
        self, status: RunStatus, message: str = "", results: dict[str, str] | None = None, *, read_back: bool = False
    ) -> RunRecord | None:
        """The run's end, saved now; with `read_back`, its record as saved (read in the same transaction:
        on PostgreSQL the same round trip), or None when it could not be read with it."""
        at = now()
        results = results or {}
        record = self._now(
            lambda: self._save_run(
                {"status": status.value, "message": message, "results": results},
                status=status.value,
                finished_at=at,
                message=message,
                results=results,
            ),
            read_back,
        )
        self._publish("run", {"status": status.value, "message": message, "results": results}, at)
        return record

    def task_started(self, task: str, attempt: int) -> None:
        at = now()
        values: dict[str, Any] = {"status": TaskStatus.RUNNING.value, "attempts": attempt, "message": ""}
        if attempt == 1:
            values["started_at"] = at
        row = self._unsaved_tasks[task] = _HeldRow(values)
        self._later(
            lambda: self._save_held_task(task, row, {"status": TaskStatus.RUNNING.value} if attempt == 1 else None),
            lambda: self._publish("task", {"task": task, "status": TaskStatus.RUNNING.value, "attempt": attempt}, at),
        )

    def task_retrying(self, task: str, attempt: int, message: str) -> None:
        at = now()
        self._later(
            lambda: self._save_task(task, message=f"attempt {attempt} failed: {message}; retrying"),
            lambda: self._publish(
                "task",
                {"task": task, "status": TaskStatus.RUNNING.value, "attempt": attempt, "message": message, "retrying": True},
                at,
            ),
        )

    def task_finished(self, task: str, status: TaskStatus, results: dict[str, str], message: str = "") -> None:
        """Held, as a start is: the driver saves what is held before it starts a task (`flush`), so no
        task starts on an unsaved end of a task it needs, and ends that nothing waits on (the
        siblings of a fan-out, the run's last task: the run's end saves it) go together, one
        transaction for many.  A task's end that finds its start still held makes one UPDATE of the two.
        """
        at = now()
        values: dict[str, Any] = {"status": status.value, "results": results, "message": message, "finished_at": at}
        started = self._unsaved_tasks.pop(task, None)
        if started is not None:  # its start is held still: one UPDATE for both
            started.joined = True
            values = {**started.values, **values}
        transition = {"status": status.value, "message": message, "results": results}
        event = {"task": task, "status": status.value, "results": results, "message": message}
        self._later(lambda: self._save_task(task, transition, **values), lambda: self._publish("task", event, at))

    def tasks_skipped(self, reasons: dict[str, str]) -> None:
        at = now()
        for task, reason in reasons.items():
            self._later(*self._skip(task, reason, at))

    def _skip(self, task: str, reason: str, at: datetime) -> tuple[Callable[[], None], Callable[[], None]]:
        def save() -> None:
            self._save_task(
                task, {"status": TaskStatus.SKIPPED.value, "message": reason}, status=TaskStatus.SKIPPED.value, message=reason
            )

        def publish() -> None:
            self._publish("task", {"task": task, "status": TaskStatus.SKIPPED.value, "message": reason}, at)

        return save, publish

    def request_cancel(self) -> RunRecord:
        """Ask the run's engine to cancel it; a queued run no engine has taken ends here and now."""
        record = self._store.request_cancel(self.run_id)
        if record.status == RunStatus.CANCELLED:
            self._send("run", {"status": record.status.value, "message": record.message}, now())
        return record

    def interrupted(self, record: RunRecord, running_steps: list[tuple[str, int, int]], message: str) -> None:
        """The run's engine died: what was running failed, what was pending is skipped, the run failed."""
        at = now()

        def save() -> None:
            for task, attempt, index in running_steps:
                self._save_step(task, attempt, index, status=StepStatus.FAILED.value, finished_at=at)
            for task_record in record.tasks:
                if task_record.status == TaskStatus.RUNNING:
                    self._save_task(
                        task_record.name,
                        {"status": TaskStatus.FAILED.value, "message": "interrupted"},
                        status=TaskStatus.FAILED.value,
                        finished_at=at,
                        message="interrupted",
                    )
                elif task_record.status == TaskStatus.PENDING:
                    self._save_task(
                        task_record.name,
                        {"status": TaskStatus.SKIPPED.value, "message": "interrupted"},
                        status=TaskStatus.SKIPPED.value,
                        message="interrupted",
                    )
            self._save_run(
                {"status": RunStatus.FAILED.value, "message": message},
                status=RunStatus.FAILED.value,
                finished_at=at,
                message=message,
            )

        self._now(save)
        self._publish("run", {"status": RunStatus.FAILED.value, "message": message}, at)

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
        self.carry: dict[int, str] = {}  # the held-back end of a cut line, by step

    def step_started(self, index: int, pid: int | None) -> None:
        at = now()
        path = step_log_path(self.run.logs, self.run.run_id, self.task, self.attempt, index)
        self._writer(index)
        key = (self.task, self.attempt, index)
        row = self.run._unsaved_steps[key] = _HeldRow(
            {"name": self.names[index], "log_path": str(path), "started_at": at, "pid": pid}
        )

        def save() -> None:
            if self.run._unsaved_steps.get(key) is row:
                del self.run._unsaved_steps[key]
            self.run._save_new_step(self.task, self.attempt, index, **row.values)

        self.run._later(
            save,
            lambda: self.run._publish(
                "step",
                {
                    "task": self.task,
                    "step": index,
                    "name": self.names[index],
                    "attempt": self.attempt,
                    "status": StepStatus.RUNNING.value,
                },
                at,
            ),
        )

    def _writer(self, index: int) -> LogWriter:
        writer = self.writers.get(index)
        if writer is None:  # a line after the step was closed (a process that outlived its group)
            writer = self.writers[index] = LogWriter(
                step_log_path(self.run.logs, self.run.run_id, self.task, self.attempt, index)
            )
        return writer

    def step_log(self, index: int, line: str, partial: bool = False) -> None:
        line = self.carry.pop(index, "") + line
        if partial:
            line, rest = self.run.hold_back(line)
            if rest:
                self.carry[index] = rest
            if not line:
                return
        self.run._log(self._writer(index), line, {"task": self.task, "step": index, "attempt": self.attempt})

    def step_finished(self, index: int, exit_code: int | None, status: StepEnd) -> None:
        if index in self.carry:
            self.step_log(index, "")
        at = now()
        writer = self.writers.pop(index, None)
        if writer is not None:
            writer.close()
        ended = {"status": status, "exit_code": exit_code, "finished_at": at}
        unsaved = self.run._unsaved_steps.pop((self.task, self.attempt, index), None)
        if unsaved is not None:
            unsaved.values.update(ended)  # its INSERT is held still: it makes the row as it ended
        self.run._later(
            _nothing if unsaved is not None else lambda: self.run._save_step(self.task, self.attempt, index, **ended),
            lambda: self.run._publish(
                "step", {"task": self.task, "step": index, "attempt": self.attempt, "status": status, "exit_code": exit_code}, at
            ),
        )

    def close(self) -> None:
        for index in list(self.carry):
            self.step_log(index, "")
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
