"""The engine: turns a definition and params into a run, and drives runs to the end.

`Engine.submit` creates a queued run; `Engine.drive` takes it and carries out
what `domain.runs.plan` decides, one event at a time, until the run is over.
Every change goes through a `RunRecorder` (the one writer).  Cancel requests
reach a running run directly (`Engine.cancel`) or through the store, from
any other process (`shipline runs cancel`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload
from urllib.parse import quote, urlsplit

from shipline.domain import expressions as ex
from shipline.domain.checking import referenced_secrets, task_secret_files
from shipline.domain.outputs import OutputError, parse_output
from shipline.domain.pipelines import ResolvedPipeline, ResolvedTask
from shipline.domain.runs import (
    INTERRUPTED,
    RunRecord,
    RunStatus,
    Scheduler,
    TaskStatus,
    bind_params,
    concurrency_group,
    run_results,
)
from shipline.engine import processes
from shipline.engine.events import EventBus
from shipline.engine.logs import discard_outputs, step_output_path
from shipline.engine.processes import owner_alive, owner_id
from shipline.engine.pruning import set_aside
from shipline.engine.recording import RunRecorder, now
from shipline.exceptions import Conflict, NotFound, StoreError, UsageError
from shipline.executors.base import Executor, StepSpec, TaskInvocation
from shipline.files import private_dir
from shipline.settings import Settings
from shipline.store.secrets import Keyring, SecretStore
from shipline.store.sql import SqlStore

KEPT_TASKS = 2000
KEPT_RUNS = 20_000
KEPT_SECONDS = 60.0
"""The definitions of runs this engine made are kept in memory until it drives them (a queued run then
starts without its definition read back and checked again), up to KEPT_TASKS tasks of distinct
definitions (a task's part of a definition is 2-3 KiB; the runs of one pipeline share its definition,
counted once) and KEPT_RUNS runs, for KEPT_SECONDS at most: a run that another engine drives, or that
is cancelled while queued, is not kept for long.  The others are read back from the store."""

HEARTBEAT_SECONDS = 10.0
RECOVER_SECONDS = 15.0
"""How often a serving engine looks for runs whose engine died (another server, a killed CLI run)."""
log = logging.getLogger("shipline.engine")


class Engine:
    def __init__(self, settings: Settings, store: SqlStore, executor: Executor, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.bus = bus or EventBus()
        self.secrets = SecretStore(store, Keyring.from_settings(settings))
        self.builtin_secrets = forge_credentials(settings)
        self.owner = owner_id()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._drivers: dict[int, _RunDriver] = {}
        self._made: dict[int, _Made] = {}
        self._made_tasks = 0  # the tasks of the distinct definitions in `_made`
        self._made_uses: dict[int, int] = {}  # id() of a definition in `_made` -> how many runs there have it
        self._made_lock = threading.Lock()  # runs are made in API threads, driven in the engine's
        self._watcher: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._hurry = asyncio.Event()  # made anew by `serve`, on its loop

    @property
    def slots(self) -> asyncio.Semaphore:
        """Task slots of this engine, on the running event loop (a semaphore belongs to one loop;
        an engine driven by successive `asyncio.run` calls gets a fresh one for each)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.settings.max_parallel)
            self._slots_loop = loop
        return self._slots

    # --- creating runs ----------------------------------------------------------------

    def submit(
        self,
        pipeline: ResolvedPipeline,
        params: dict[str, str],
        *,
        trigger: dict[str, Any] | None = None,
        rerun_of: int | None = None,
        claim: bool = False,
        fallback_group: str | None = None,
    ) -> int:
        """Check the params and create a queued run; raises UsageError for bad params.

        `claim`: this engine drives it next (the CLI); if the engine dies before it
        does, recovery finds the run instead of leaving it queued for no one.
        `fallback_group`: the concurrency group when the pipeline declares none
        (a trigger rule's `queue`/`cancel`).
        """
        bound = bind_params(pipeline, params)
        return self._create(pipeline, bound, trigger, rerun_of, claim, fallback_group)

    def _create(
        self,
        pipeline: ResolvedPipeline,
        params: dict[str, str],
        trigger: dict[str, Any] | None,
        rerun_of: int | None,
        claim: bool,
        fallback_group: str | None = None,
    ) -> int:
        group = concurrency_group(pipeline, params) or fallback_group
        if group is not None and pipeline.concurrency is not None and pipeline.concurrency.policy == "cancel-previous":
            for older in self.store.active_in_group(group):
                self.cancel(older)
        owner = self.owner if claim else None
        run_id = self.store.create_run(pipeline, params, trigger=trigger, rerun_of=rerun_of, owner=owner, concurrency_group=group)
        self._keep(run_id, pipeline, params, group, owned=claim)
        return run_id

    def _keep(self, run_id: int, pipeline: ResolvedPipeline, params: dict[str, str], group: str | None, *, owned: bool) -> None:
        now = time.monotonic()
        with self._made_lock:
            while self._made:  # the oldest first: runs another engine drove, or that were cancelled
                oldest = next(iter(self._made))
                if now - self._made[oldest].at < KEPT_SECONDS:
                    break
                self._forget(self._made.pop(oldest))
            uses = self._made_uses.get(id(pipeline), 0)
            added = 0 if uses else len(pipeline.tasks)
            if len(self._made) < KEPT_RUNS and self._made_tasks + added <= KEPT_TASKS:  # full: this one is read back
                self._made[run_id] = _Made(now, pipeline, params, group, owned)
                self._made_uses[id(pipeline)] = uses + 1
                self._made_tasks += added

    def _forget(self, made: _Made) -> None:
        """Count a kept run out (under `_made_lock`); its definition's tasks go when no kept run has it."""
        uses = self._made_uses.pop(id(made.pipeline)) - 1
        if uses:
            self._made_uses[id(made.pipeline)] = uses
        else:
            self._made_tasks -= len(made.pipeline.tasks)

    def _claim(self, run_id: int) -> bool:
        """`store.claim`, telling the store when this engine made the run without a concurrency group.

        A run this engine made as its owner (`submit(claim=True)`: the CLI) with no group is
        claimed already: no other engine takes an owned run, a cancel request waits for this
        engine's driver, and nothing in the claim's UPDATE would change it.
        """
        with self._made_lock:
            made = self._made.get(run_id)
        if made is not None and made.group is None and made.owned:
            return True
        return self.store.claim(run_id, self.owner, ungrouped=made is not None and made.group is None)

    def _kept(self, run_id: int) -> tuple[ResolvedPipeline, dict[str, str]] | None:
        with self._made_lock:
            made = self._made.pop(run_id, None)
            if made is None:
                return None
            self._forget(made)
            return made.pipeline, made.params

    def check_secrets(self, pipeline: ResolvedPipeline) -> None:
        """Raise UsageError when a secret the pipeline uses is not set (a run would fail at once)."""
        if missing := self.secrets.missing([n for n in _all_secrets(pipeline) if n not in self.builtin_secrets]):
            names = ", ".join(missing)
            raise UsageError(
                f"pipeline '{pipeline.name}' uses secret {names}, which is not set; "
                f"set it with `shipline secrets set {missing[0]}` (the value is read from stdin)"
            )

    def rerun(self, run_id: int, claim: bool = False) -> int:
        """A new queued run of the same resolved definition with the same params (`claim`: as in `submit`)."""
        pipeline, params = self.store.load_spec(run_id)
        original = self.store.get_run(run_id)
        return self._create(pipeline, params, original.trigger, run_id, claim, original.concurrency_group)

    # --- driving runs -----------------------------------------------------------------

    async def drive(self, run_id: int) -> RunRecord:
        """Take the queued run and carry it to its end; returns the final record.

        A run whose concurrency group is held waits here (queued) until it is its turn,
        or until someone cancels it.
        """
        announced = False
        beat_at = time.monotonic()
        while not self._claim(run_id):
            record = self.store.get_run(run_id)
            if record.status.done:
                return record
            if record.status != RunStatus.QUEUED or record.concurrency_group is None:
                raise Conflict(f"run {run_id} is {record.status.value} and taken by another engine; it cannot be started here")
            recorder = self._recorder(run_id)
            if self.store.cancel_requests([run_id]):
                recorder.tasks_skipped({t.name: "the run was cancelled" for t in record.tasks})
                recorder.run_finished(RunStatus.CANCELLED, "cancelled while it waited for its concurrency group")
                return self.store.get_run(run_id)
            if not announced:
                announced = True
                holder = self.store.group_holder(record.concurrency_group)
                recorder.run_waiting(f"waiting: run {holder} is in concurrency group '{record.concurrency_group}'")
            if time.monotonic() - beat_at >= HEARTBEAT_SECONDS:  # a run waiting here is alive: no one may end it
                beat_at = time.monotonic()
                self.store.heartbeat(self.owner)
            await asyncio.sleep(self.settings.queue_poll_seconds)
        return await self._drive_claimed(run_id)

    async def serve(
        self,
        stop: asyncio.Event,
        poll_seconds: float = 0.5,
        recover_seconds: float = RECOVER_SECONDS,
        drain_seconds: float = 0.0,
    ) -> None:
        """Worker loop: claim queued runs from the store and drive them, until `stop`.

        It looks every `poll_seconds`, and at once when `wake()` is called (a run
        was queued in this process, or one of its runs ended and freed room).  Every
        `recover_seconds` it also ends the runs of engines that died meanwhile (a server
        of several, a killed `shipline run`): left as they were, they would hold their
        concurrency groups, and the runs queued behind them would wait for ever.

        Once `stop` is set it claims nothing more; the runs it drives get `drain_seconds`
        to end by themselves (a server restarted for an upgrade need not cancel a deploy
        half done), and those still going then are cancelled.
        """
        self.recover()
        loop = asyncio.get_running_loop()
        recovered_at = loop.time()
        self._wakeup = asyncio.Event()
        self._hurry = asyncio.Event()
        running: set[asyncio.Task[RunRecord | None]] = set()
        while not stop.is_set():
            self._wakeup.clear()  # before looking: a wake() during the look is not lost
            if loop.time() - recovered_at >= recover_seconds:
                recovered_at = loop.time()
                try:
                    if interrupted := await self._recover_beside_runs():
                        self.wake()  # their groups and slots are free
                        log.warning("ended the runs of an engine that died: %s", ", ".join(map(str, interrupted)))
                except StoreError as exc:
                    log.warning("cannot look for runs whose engine died: %s", exc)
            # A little more than the task slots, so a replica keeps its slots busy
            # without hoarding runs that another replica could start.
            capacity = max(0, 2 * self.settings.max_parallel - len(running))
            try:
                for run_id in self.store.next_queued(capacity) if capacity else []:
                    if self._claim(run_id):
                        task = asyncio.create_task(self._drive_claimed(run_id, record=False))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        task.add_done_callback(_report_failure)
                        task.add_done_callback(lambda _: self.wake())
            except StoreError as exc:  # the store is away for now: look again at the next poll
                log.warning("cannot look for queued runs: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), poll_seconds)
        why = "the engine is shutting down"
        if running and drain_seconds > 0 and not self._hurry.is_set():
            log.warning(
                "stopping: waiting up to %gs for %d runs to end (drain_seconds); stop it again to cancel them now",
                drain_seconds,
                len(running),
            )
            ended = asyncio.create_task(asyncio.wait(set(running)))
            hurried = asyncio.create_task(self._hurry.wait())
            await asyncio.wait({ended, hurried}, timeout=drain_seconds, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            hurried.cancel()
            why = (
                "the engine is shutting down; it was told again to stop while it waited for the run"
                if self._hurry.is_set()
                else f"the engine is shutting down; the run did not end within drain_seconds ({drain_seconds:g}s)"
            )
        for driver in list(self._drivers.values()):
            driver.request_cancel(why)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def wake(self) -> None:
        """Make `serve` look for queued runs now; call it on the engine's own loop."""
        if self._wakeup is not None:
            self._wakeup.set()

    def hurry(self) -> None:
        """Cut a stopping `serve`'s wait for its runs short: they are cancelled now (on the engine's loop)."""
        self._hurry.set()

    @overload
    async def _drive_claimed(self, run_id: int) -> RunRecord: ...
    @overload
    async def _drive_claimed(self, run_id: int, record: Literal[False]) -> None: ...

    async def _drive_claimed(self, run_id: int, record: bool = True) -> RunRecord | None:
        """Drive a run this engine has claimed; its final record, unless `record` is False
        (the worker loop does not read it: loading it would cost a query per run)."""
        pipeline, params = self._kept(run_id) or self.store.load_spec(run_id)
        driver = _RunDriver(self, run_id, pipeline, params, read_back=record)
        self._drivers[run_id] = driver
        self._ensure_watcher()
        try:
            await driver.go()
        finally:
            del self._drivers[run_id]
        if not record:
            return None
        return driver.final or self.store.get_run(run_id)

    def cancel(self, run_id: int) -> RunRecord:
        """Cancel a run: directly when this engine drives it, else through the store.

        From any thread: a driver is told on the loop that drives it (the server's request
        threads submit runs, and a `cancel-previous` run cancels the group's older ones)."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            _call_on(driver.loop, driver.request_cancel)
            return self.store.get_run(run_id)
        return self._recorder(run_id).request_cancel()

    def _recorder(self, run_id: int) -> RunRecorder:
        return RunRecorder(self.store, self.bus, self.settings.logs, run_id)

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Pick up cancel requests made by other processes, and keep our heartbeat fresh.

        On a shared store (PostgreSQL) an engine on another host is judged by its heartbeats:
        one that cannot write them is taken for dead once they are `HEARTBEAT_STALE` old, and
        a live server ends its runs and starts the next of their concurrency groups.  Its steps
        must not be running then (two deploys of one environment at once): it stops its runs
        itself first, when its last heartbeat is two beats short of stale.  Each run's end is
        written once the store is back, unless a server has written it by then (`_write_end`).
        """
        beat = 0.0
        beat_ok = time.monotonic()  # the claim of the run that started the watch was a write
        fenced = False
        while self._drivers:
            await asyncio.sleep(self.settings.cancel_poll_seconds)
            try:
                for run_id in self.store.cancel_requests(list(self._drivers)):
                    driver = self._drivers.get(run_id)
                    if driver is not None:
                        driver.request_cancel()
                beat += self.settings.cancel_poll_seconds
                if beat >= HEARTBEAT_SECONDS:
                    beat = 0.0
                    self.store.heartbeat(self.owner)
                    beat_ok, fenced = time.monotonic(), False
            except StoreError as exc:  # the store is away for now: the drivers see it on their next write
                log.warning("cannot read cancel requests: %s", exc)
                away = time.monotonic() - beat_ok
                if (
                    not self.store.is_sqlite
                    and not fenced
                    and away > processes.HEARTBEAT_STALE.total_seconds() - 2 * HEARTBEAT_SECONDS
                ):
                    fenced = True
                    fault = StoreError(
                        f"this engine has not reached the store for {away:.0f}s, and other servers take its runs over "
                        f"when its heartbeat is {processes.HEARTBEAT_STALE.total_seconds():.0f}s old; it stopped them first ({exc})"
                    )
                    log.error("stopping every run of this engine: %s", fault)
                    for driver in list(self._drivers.values()):
                        driver.fence(fault)

    # --- recovery ---------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Find runs whose engine died, stop what they left running, and mark them failed."""
        dead = self._dead_runs()
        for run in dead:
            self._stop_leftovers(run)
        return [run.run_id for run in dead if self._end_interrupted(run)]

    async def _recover_beside_runs(self) -> list[int]:
        """`recover`, from the serving loop: what a dead engine left running is stopped in a thread
        (signals and up to `KILL_SECONDS` of waiting, or a cluster's API), so the runs this engine
        drives meanwhile are not held up."""
        dead = self._dead_runs()
        for run in dead:
            await asyncio.to_thread(self._stop_leftovers, run)
        return [run.run_id for run in dead if self._end_interrupted(run)]

    def _dead_runs(self) -> list[_Dead]:
        moment = now()
        return [
            _Dead(run_id, owner, self.store.running_steps(run_id))
            for run_id, owner, heartbeat in self.store.owned_active()
            if owner != self.owner and not owner_alive(owner, heartbeat, moment)
        ]

    def _stop_leftovers(self, run: _Dead) -> None:
        try:
            self.executor.stop_orphans(run.run_id, run.owner, [pid for _, _, _, pid in run.steps if pid is not None])
        except Exception as exc:
            log.warning("run %s: could not stop what its steps left running: %s", run.run_id, exc)

    def _end_interrupted(self, run: _Dead) -> bool:
        """Mark the dead engine's run failed, unless another engine has ended it meanwhile."""
        recorder = self._recorder(run.run_id)
        with recorder.unended() as record:
            if record is None:
                return False
            host, _, rest = run.owner.partition(":")
            when = "before the run started" if record.status == RunStatus.QUEUED else "during the run; logs up to then are kept"
            message = (
                f"{INTERRUPTED}the engine (pid {rest.partition(':')[0]} on {host}) stopped {when}; "
                f"start it again with `shipline runs rerun {run.run_id}`"
            )
            recorder.interrupted(record, [(t, a, i) for t, a, i, _ in run.steps], message)
        discard_outputs(self.settings.logs, run.run_id)
        return True

    def workspace(self, run_id: int) -> Path:
        """The run's workspace on this host (the local executor's; a Kubernetes run's is in its volume)."""
        return self.settings.workspaces / str(run_id)


class _Dead(NamedTuple):
    """A run whose engine died (`Engine.recover`), and its steps the store has as running."""

    run_id: int
    owner: str
    steps: list[tuple[str, int, int, int | None]]


class _Made(NamedTuple):
    """A run this engine made, kept until it drives it (`Engine._keep`)."""

    at: float
    pipeline: ResolvedPipeline
    params: dict[str, str]
    group: str | None
    """Its concurrency group: a run without one is claimed in one round trip (`SqlStore.claim`)."""
    owned: bool
    """Made with this engine as its owner (`submit(claim=True)`)."""


@dataclass
class _RunDriver:
    engine: Engine
    run_id: int
    pipeline: ResolvedPipeline
    params: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value, looked up when the run starts
    cancelled: bool = False
    started: bool = False
    stopping: str = ""
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    store_fault: StoreError | None = None
    """A write of this run's state failed: the run stops and its end is written once the store is back."""
    read_back: bool = False
    """The run's record is wanted at its end (`drive`): read with the end's write."""
    final: RunRecord | None = None
    """That record, when the run ended as its driver ended it."""

    def __post_init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        """The loop that drives the run: what touches its tasks and events runs there."""
        self.schedule = Scheduler(self.pipeline)
        self.recorder = RunRecorder(self.engine.store, self.engine.bus, self.engine.settings.logs, self.run_id)
        self.recorder.on_fault = self.wake.set
        executor = self.engine.executor
        self.workspace = executor.workspace(self.engine.settings, self.run_id)
        settings = self.engine.settings
        # The same for every task of the run: made once, not per task.
        self.run_env = executor.step_environment(settings, self.run_id, self.pipeline.name)
        if settings.registry:
            self.run_env["SHIPLINE_REGISTRY"] = settings.registry
        if settings.gitea_url:
            self.run_env["SHIPLINE_GITEA_URL"] = settings.gitea_url

    def fence(self, fault: StoreError) -> None:
        """Stop the run as for a write that failed (`_outlast`): its end is written when the store is back."""
        if self.store_fault is None:
            self.store_fault = fault
            self.wake.set()

    def request_cancel(self, reason: str = "") -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._stop_main_tasks(reason or "cancelled")

    def _time_out(self) -> None:
        # Only main tasks are bounded: once they are all over (the first one failed at
        # once, say), the run's end is not a timeout, however long `finally` takes.
        main_left = any(not self.schedule.states[t.name].status.done for t in self.pipeline.main)
        if not self.stopping and main_left:
            self._stop_main_tasks(f"the run timed out after {self.pipeline.timeout:g}s")

    def _stop_main_tasks(self, why: str) -> None:
        """Stop the running tasks (finally tasks go on); `plan` skips the rest."""
        self.stopping = why
        for name, task in self.running.items():
            if not self.pipeline.task(name).is_finally:
                task.cancel(why)  # the executor tells the step's log why it was stopped
        self.wake.set()

    def _ensure_started(self) -> None:
        """A run is `running` once its first task has a slot, not while it waits for one."""
        if not self.started:
            self.started = True
            self.recorder.run_started(self.engine.owner)

    def _reveal_secrets(self) -> bool:
        """Look up the secrets the run uses, now; False (and the run failed) when one cannot be had."""
        builtin = self.engine.builtin_secrets
        names = _all_secrets(self.pipeline)
        if names and _secrets_withheld(self.engine.store.get_run(self.run_id).trigger):
            return self._withhold_secrets(names)
        try:
            self.secrets = self.engine.secrets.reveal([n for n in names if n not in builtin])
            self.secrets.update({n: builtin[n] for n in names if n in builtin})
        except (NotFound, StoreError, UsageError) as exc:
            self.recorder.tasks_skipped({t.name: "the run could not start" for t in self.pipeline.tasks})
            self._ensure_started()
            self.recorder.run_finished(RunStatus.FAILED, str(exc))
            return False
        self.recorder.hide(list(self.secrets.values()))
        return True

    def _withhold_secrets(self, names: list[str]) -> bool:
        """A run of untrusted code (a pull request from a fork): the built-in git credentials are
        an empty file (public clones still work), and a pipeline that uses a stored secret fails now."""
        stored = [n for n in names if n not in self.engine.builtin_secrets]
        if stored:
            listed = ", ".join(stored)
            self.recorder.tasks_skipped({t.name: "the run could not start" for t in self.pipeline.tasks})
            self._ensure_started()
            self.recorder.run_finished(
                RunStatus.FAILED,
                f"this run was started by a pull request from a fork, and such runs get no secrets; the pipeline uses "
                f"secret {listed}. To run it with secrets, push its branch to the repository itself (a maintainer can)",
            )
            return False
        self.secrets = dict.fromkeys(names, "")
        return True

    async def go(self) -> None:
        # Where the run starts, not where it is made (see `set_aside`).
        if (moved := set_aside(self.engine.settings, self.run_id)) is not None:
            log.warning("files of an earlier store's run %s moved to %s", self.run_id, moved)
        if not self._reveal_secrets():
            return
        private_dir(self.engine.settings.logs / str(self.run_id), root=self.engine.settings.home)
        await self.engine.executor.run_starting(self.engine.settings, self.run_id)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.pipeline.timeout, self._time_out) if self.pipeline.timeout else None
        try:
            while True:
                if (fault := self.store_fault or self.recorder.fault) is not None:
                    raise fault
                decision = self.schedule.decide(
                    self.params,
                    self.run_id,
                    stopping=bool(self.stopping),
                    cancelled=self.cancelled,
                    secrets=self.secrets,
                    secret_files=dict.fromkeys(self.secrets, ""),  # judged only; files are made per task
                )
                if decision.skip:
                    for name in decision.skip:
                        self.schedule.update(name, TaskStatus.SKIPPED)
                    self.recorder.tasks_skipped(decision.skip)
                if decision.start:
                    # The ends these tasks were started on are saved before they start (a store
                    # that cannot take them stops the run here); ends nothing waits on stay held.
                    self.recorder.flush()
                for name in decision.start:
                    self._launch(self.pipeline.task(name))
                if decision.finished is not None and not self.running:
                    message = self.stopping if decision.finished != RunStatus.SUCCEEDED else ""
                    if decision.finished == RunStatus.FAILED and not message:
                        failed = [n for n, s in self.schedule.states.items() if s.status == TaskStatus.FAILED]
                        message = f"task {', '.join(failed)} failed" if failed else ""
                    self._ensure_started()
                    ctx = self.schedule.context(self.params, self.run_id, self.cancelled, self.secrets)
                    results = run_results(self.pipeline, ctx)
                    self.final = self.recorder.run_finished(decision.finished, message, results, read_back=self.read_back)
                    return
                if decision.skip or decision.start:
                    continue
                await self.wake.wait()
                self.wake.clear()
        except StoreError as exc:
            await self._outlast(exc)
        except BaseException:
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
            self.recorder.run_finished(RunStatus.FAILED, "the engine stopped during the run")
            raise
        finally:
            if timer is not None:
                timer.cancel()
            try:
                await asyncio.shield(self.engine.executor.run_ended(self.engine.settings, self.run_id))
            except Exception as exc:
                log.warning("run %s: could not clean up after it: %s", self.run_id, exc)

    async def _outlast(self, fault: StoreError) -> None:
        """The run's state could not be written: stop it, and write how it ended once the store takes writes again."""
        self.store_fault = fault
        self.stopping = self.stopping or "the store could not be written"
        for task in self.running.values():
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        message = f"stopped: the run's state could not be written to the store ({fault})"
        log.warning("run %s stopped: %s; its end is written when the store takes writes again", self.run_id, fault)
        delay = 0.5
        while True:
            try:
                self._write_end(message)
                log.info("run %s: the store takes writes again; the run is recorded as failed", self.run_id)
                return
            except StoreError:
                if self.cancelled:  # the engine is stopping: recovery will end the run
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)

    def _write_end(self, message: str) -> None:
        """What the store missed, through the recorder: tasks that ended as they ended, then the rest as for an interrupted run."""
        store = self.engine.store
        with self.recorder.unended() as record:
            if record is None:
                # Another server took this engine for dead (its heartbeat went stale) and ended the run:
                # its record stands, and its end is in the outbox once; nothing held is saved over it.
                self.recorder.drop_held()
                log.warning("run %s was ended by another server meanwhile; its record is left as it is", self.run_id)
                return
            self.recorder.flush()  # what was held first: what the store has is then all it will get
            saved = {t.name: t.status for t in store.get_run(self.run_id).tasks}
            for name, state in self.schedule.states.items():
                if state.status.done and saved.get(name) != state.status:
                    self.recorder.task_finished(
                        name, state.status, state.results, "it ended while the store could not be written"
                    )
            self._ensure_started()
            steps = [(task, attempt, index) for task, attempt, index, _pid in store.running_steps(self.run_id)]
            self.recorder.interrupted(store.get_run(self.run_id), steps, message)

    def _launch(self, task: ResolvedTask) -> None:
        self.schedule.update(task.name, TaskStatus.RUNNING)
        handle = asyncio.create_task(self._run_task(task))
        self.running[task.name] = handle
        # A task cancelled before its coroutine ever ran skips the coroutine's
        # `finally`: the done-callback makes sure it is still recorded as ended.
        handle.add_done_callback(lambda _: self._finish(task.name, *self._stopped()))

    def _stopped(self) -> tuple[TaskStatus, dict[str, str], str]:
        """How a task ends when the run stops it: cancelled, or failed for a run timeout."""
        status = TaskStatus.FAILED if self.stopping and not self.cancelled else TaskStatus.CANCELLED
        return status, {}, f"stopped: {self.stopping}" if self.stopping else "cancelled"

    def _finish(self, name: str, status: TaskStatus, results: dict[str, str], message: str) -> None:
        if name not in self.running:
            return  # already recorded
        del self.running[name]
        self.schedule.update(name, status, results)
        self.recorder.task_finished(name, status, results, message)
        self.wake.set()

    async def _run_task(self, task: ResolvedTask) -> None:
        outcome: tuple[TaskStatus, dict[str, str], str] = (TaskStatus.FAILED, {}, "")
        try:
            async with self.engine.slots:
                self._ensure_started()
                outcome = await self._attempts(task)
        except asyncio.CancelledError:
            outcome = self._stopped()
        except Exception as exc:  # a bug or an unexpected OS error: the task fails, the run goes on
            outcome = (TaskStatus.FAILED, {}, f"shipline could not run the task: {exc.__class__.__name__}: {exc}")
        finally:
            self._finish(task.name, *outcome)

    async def _attempts(self, task: ResolvedTask) -> tuple[TaskStatus, dict[str, str], str]:
        names = task_secret_files(self.pipeline, task)
        settings = self.engine.settings
        files = {name: self.engine.executor.secret_file_path(settings, self.run_id, task.name, name) for name in names}
        return await self._attempts_with(task, files)

    async def _attempts_with(self, task: ResolvedTask, files: dict[str, str]) -> tuple[TaskStatus, dict[str, str], str]:
        ctx = self.schedule.context(self.params, self.run_id, self.cancelled, self.secrets, files)
        step_ctx: dict[str, object] = ctx
        if task.uses is not None:
            # A reusable task's steps see its inputs and run.*, nothing of the pipeline.
            inputs = {k: ex.render(v, ctx) for k, v in task.inputs.items()}
            step_ctx = {"inputs": inputs, "run": ctx["run"]}
        base_env = {**self.run_env, "SHIPLINE_TASK": task.name}
        base_env.update({k: ex.render(v, ctx) for k, v in self.pipeline.env.items()})
        base_env.update({k: ex.render(v, ctx) for k, v in task.env.items()})
        message = ""
        failed_results: dict[str, str] = {}
        for attempt in range(1, task.retries + 2):
            invocation = self._invocation(task, attempt, base_env, step_ctx, files)
            self.recorder.task_started(task.name, attempt)
            listener = self.recorder.steps(task.name, attempt, [s.name for s in invocation.steps])
            try:
                # The executor bounds the attempt itself (and says so in the step's log);
                # this is the backstop for one that does not.
                backstop = task.timeout + self.engine.settings.kill_grace_seconds + 30 if task.timeout else None
                async with asyncio.timeout(backstop):
                    outcome = await self.engine.executor.execute(invocation, listener)
            except TimeoutError:
                outcome = None
                message = f"timed out after {task.timeout:g}s"
            finally:
                listener.close()
            if self.recorder.fault is not None:
                raise self.recorder.fault
            if outcome is not None:
                if outcome.succeeded:
                    results, message = _collect_results(task, outcome.outputs, self.recorder.mask)
                    if not message:
                        return TaskStatus.SUCCEEDED, results, ""
                else:
                    message = outcome.message
                    # What the steps reported before failing (a test task's counts and
                    # failing names) is what a person looks at first; keep it.
                    failed_results = _partial_results(task, outcome.outputs)
            if attempt <= task.retries:
                self.recorder.task_retrying(task.name, attempt, message)
        if task.retries:
            message = f"{message} (after {task.retries + 1} attempts)"
        return TaskStatus.FAILED, failed_results, message

    def _invocation(
        self, task: ResolvedTask, attempt: int, base_env: dict[str, str], ctx: dict[str, object], files: dict[str, str]
    ) -> TaskInvocation:
        steps = []
        for i, step in enumerate(task.steps):
            script, holes = ex.bind_script(step.run, ctx)
            env = {**base_env, **{k: ex.render(v, ctx) for k, v in step.env.items()}, **holes}
            workdir = self.workspace / (step.workdir or task.workdir or ".")
            steps.append(
                StepSpec(
                    index=i,
                    name=step.name or _first_line(step.run),
                    script=script,
                    shell=step.shell,
                    env=env,
                    workdir=workdir,
                    output_file=step_output_path(self.engine.settings.logs, self.run_id, task.name, attempt, i),
                    timeout=step.timeout,
                    workspace=self.workspace,
                    image=step.image or task.image,
                )
            )
        secret_files = {path: self.secrets[name] for name, path in files.items()}
        return TaskInvocation(self.run_id, task.name, attempt, steps, timeout=task.timeout, secret_files=secret_files)


def _secrets_withheld(trigger: dict[str, Any] | None) -> bool:
    """Runs of untrusted code (pull requests from forks) are marked so by whoever started them."""
    return isinstance(trigger, dict) and trigger.get("secrets") == "withheld"


def _all_secrets(pipeline: ResolvedPipeline) -> list[str]:
    return sorted({*referenced_secrets(pipeline), *referenced_secrets(pipeline, "secret_files")})


def forge_credentials(settings: Settings) -> dict[str, str]:
    """Secrets shipline offers without `secrets set`: `git-credentials`, a git credential-store
    file for the configured forges (a stored secret of that name wins).

    Always offered, empty when no forge token is set: a catalog pipeline can hand it to
    git unconditionally, and still clone a public or local repository on a machine
    with no token (an empty store is no credential at all)."""
    lines = []
    if settings.gitea_url and settings.gitea_token:
        parts = urlsplit(settings.gitea_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            token = quote(settings.gitea_token.get_secret_value(), safe="")
            lines.append(f"{parts.scheme}://shipline:{token}@{parts.netloc}")
    if settings.github_token:
        token = quote(settings.github_token.get_secret_value(), safe="")
        lines.append(f"https://x-access-token:{token}@github.com")
    return {"git-credentials": "\n".join(lines) + "\n" if lines else ""}


def _report_failure(task: asyncio.Task[RunRecord | None]) -> None:
    """A run's driver that failed is said in the log (never `Task exception was never retrieved`)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("a run's driver stopped: %s: %s", exc.__class__.__name__, exc)


def _first_line(script: str) -> str:
    line = script.strip().splitlines()[0] if script.strip() else ""
    return line if len(line) <= 60 else line[:57] + "..."


def _collect_results(task: ResolvedTask, outputs: tuple[str, ...], shown: Callable[[str], str]) -> tuple[dict[str, str], str]:
    """Merge the steps' outputs and check every declared result is there (`shown`: how output is quoted)."""
    results: dict[str, str] = {}
    for i, text in enumerate(outputs):
        try:
            results.update(parse_output(text, shown))
        except OutputError as exc:
            return {}, f"step {i + 1} wrote a malformed $SHIPLINE_OUTPUT: {exc}"
    missing = [name for name in task.results if name not in results]
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        return {}, (f"declared result {names} not produced: a step must write `NAME=value` to $SHIPLINE_OUTPUT")
    return {k: v for k, v in results.items() if k in task.results}, ""


def _partial_results(task: ResolvedTask, outputs: tuple[str, ...]) -> dict[str, str]:
    """The declared results a failed attempt's steps wrote (shown with the failure, never used by other tasks)."""
    results: dict[str, str] = {}
    for text in outputs:
        try:
            results.update(parse_output(text))
        except OutputError:
            continue
    return {k: v for k, v in results.items() if k in task.results}


def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Call `fn` now on `loop`'s own thread; from another thread, hand it to the loop (a closing
    loop is ending its runs anyway)."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if here is loop:
        fn()
    else:
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(fn)
