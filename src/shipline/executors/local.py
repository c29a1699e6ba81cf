"""Run steps as local processes, each in its own process group.

Each step is `bash --noprofile --norc -eo pipefail -c SCRIPT` (or `sh -ec`)
in the run's workspace.  stdout and stderr are merged and cut into lines as
they arrive, so a step that prints a 10 MB line or no newline at all still
streams.  On cancel or timeout the whole process group gets SIGTERM, then
SIGKILL after a grace period: children started by the step go too.  When a
step's main process exits, what it left running is killed.  "What it left"
is found through a cgroup of the step's own (`cgroups.py`), so a child that
called `setsid` or double-forked out of the process group goes as well.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from fnmatch import translate
from functools import cache, lru_cache
from pathlib import Path

from shipline.executors.base import StepEnd, StepListener, StepSpec, TaskInvocation, TaskOutcome
from shipline.executors.cgroups import StepGroup, kill_run, remove_run
from shipline.executors.spawning import spawn
from shipline.executors.stepserving import step_server
from shipline.files import private_dir, regular_fd, remove_entry
from shipline.settings import Settings

SECRET_FILES_DIR = ".secret-files"
"""Under a run's HOME: one folder per task with the secret files its steps were given."""

MAX_LINE = 64 * 1024
"""Longer lines are cut into pieces of this size, so memory stays bounded."""

DRAIN_SECONDS = 2.0
"""After the group is killed, how long the output pipe gets to close (a process that left the group may hold it)."""

_SHELLS = {
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-ec"],
}

_JOIN = (
    '{ echo 0 > "$SHIPLINE_CGROUP_PROCS"; } 2>/dev/null || echo "shipline: warning: could not join the step\'s cgroup;'
    ' processes that leave its process group may outlive it" >&2; unset SHIPLINE_CGROUP_PROCS; '
)
"""Put before the step's script, on its first line (the script's line numbers stay): the
step's shell moves itself into the step's cgroup before it runs anything that could fork,
and no process of its own is started for that."""


class _StepProtocol(asyncio.SubprocessProtocol):
    """Lines out as they come; `exited` as soon as the main process ends, pipes or not.

    (`Process.wait()` would also wait for every holder of the pipe to close it.)
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.emit: Callable[[bytes, bool], None] | None = None
        self.early: list[tuple[bytes, bool]] = []  # lines that came before the step was announced
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.pending = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self._emit(line)
        while len(self.pending) > MAX_LINE:
            self._emit(self.pending[:MAX_LINE], partial=True)
            self.pending = self.pending[MAX_LINE:]

    def attach(self, emit: Callable[[bytes, bool], None]) -> None:
        self.emit = emit
        for line, partial in self.early:
            emit(line, partial)
        self.early.clear()

    def _emit(self, line: bytes, partial: bool = False) -> None:
        """Pass a line on in pieces of MAX_LINE; all but the last of a cut line are `partial`."""
        for start in range(0, max(len(line), 1), MAX_LINE):
            piece = line[start : start + MAX_LINE]
            cut = partial or start + MAX_LINE < len(line)
            if self.emit is None:
                self.early.append((piece, cut))
            else:
                self.emit(piece, cut)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = b""

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


_SPAWNER: ThreadPoolExecutor | None = None


def _spawner() -> ThreadPoolExecutor:
    global _SPAWNER
    if _SPAWNER is None:
        _SPAWNER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shipline-spawn")
    return _SPAWNER


class _Process:
    """A step's process, started in a thread, its output piped to `_StepProtocol` on the loop.

    The spawn returns once the child has exec'd, which takes milliseconds while other
    processes join cgroups (each join makes the kernel wait for a grace period before any
    fork goes on): started from the event loop, as asyncio's subprocess transport does, every
    step of every run waited that long.  In a thread the loop goes on, and `spawning` lets go
    of the GIL meanwhile.  Its end is seen on a pidfd in the loop; the interface is the part
    of asyncio's subprocess transport the runner uses.

    A step that starts `alone` (no other step of its executor is running or starting: a
    sequential run's, or a lone run's) is spawned on the loop itself, which has nothing else
    to do meanwhile: the hop to the thread and back cost 0.1-0.2 ms a step, more than a tenth of
    a sequential task's overhead.  The GIL is let go of all the same.
    """

    def __init__(self, pid: int, proto: _StepProtocol) -> None:
        self._pid = pid
        self._proto = proto
        self._returncode: int | None = None
        self._pipe: asyncio.ReadTransport | None = None
        self._pipe_open = True

    @classmethod
    async def start(
        cls, argv: list[str], *, cwd_fd: int, env: Mapping[str, str], alone: bool = False
    ) -> tuple[_Process, _StepProtocol]:
        loop = asyncio.get_running_loop()
        if alone:
            pid, read = _spawn_piped(argv, cwd_fd, env)
        else:
            pid, read = await loop.run_in_executor(_spawner(), _spawn_piped, argv, cwd_fd, env)
        proto = _StepProtocol()
        self = cls(pid, proto)
        self._pipe, _ = await loop.connect_read_pipe(lambda: _Pipe(self), open(read, "rb", buffering=0))
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # an older kernel, or a sandbox that forbids it: a thread waits
            loop.run_in_executor(None, self._wait_blocking, loop)
        else:
            loop.add_reader(pidfd, self._reap, loop, pidfd)
        return self, proto

    def get_pid(self) -> int:
        return self._pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def close(self) -> None:
        """Kill the process if it still runs, and stop reading its output."""
        if self._returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        if self._pipe is not None:
            self._pipe.close()

    def _reap(self, loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._exited(_wait(self._pid))

    def _wait_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        code = _wait(self._pid)
        with suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(self._exited, code)

    def _exited(self, code: int) -> None:
        self._returncode = code
        self._proto.process_exited()
        self._maybe_closed()

    def _pipe_lost(self, exc: Exception | None) -> None:
        self._pipe_open = False
        self._proto.pipe_connection_lost(1, exc)
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if self._returncode is not None and not self._pipe_open:
            self._proto.connection_lost(None)


def _spawn_piped(argv: list[str], cwd_fd: int, env: Mapping[str, str]) -> tuple[int, int]:
    """The step's pid and the read end of the pipe its output goes to.  The pipe is made and its
    write end closed in the spawning thread itself: nothing on the loop can close a descriptor
    the spawn is still handing to the child."""
    read, write = os.pipe()
    try:
        return spawn(argv, cwd_fd=cwd_fd, env=env, output=write), read
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)


def _wait(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else: as asyncio's own watchers say
        logging.getLogger("shipline.executors").warning("process %s was reaped elsewhere; exit code unknown", pid)
        return 255
    return os.waitstatus_to_exitcode(status)


class _Pipe(asyncio.Protocol):
    def __init__(self, process: _Process) -> None:
        self.process = process

    def data_received(self, data: bytes) -> None:
        self.process._proto.pipe_data_received(1, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.process._pipe_lost(exc)


class _LastLine:
    """A listener that also keeps the last non-empty line a step printed, for the failure message."""

    LIMIT = 300

    def __init__(self, inner: StepListener) -> None:
        self.inner = inner
        self.last_line = ""

    def step_started(self, index: int, pid: int | None) -> None:
        self.last_line = ""
        self.inner.step_started(index, pid)

    def step_log(self, index: int, line: str, partial: bool = False) -> None:
        if line.strip():
            text = line.strip()
            self.last_line = text if len(text) <= self.LIMIT else text[: self.LIMIT - 3] + "..."
        self.inner.step_log(index, line, partial)

    def step_finished(self, index: int, exit_code: int | None, status: StepEnd) -> None:
        self.inner.step_finished(index, exit_code, status)


class LocalExecutor:
    def __init__(
        self,
        kill_grace_seconds: float = 5.0,
        max_log_bytes: int = 50 * 1024 * 1024,
        max_output_bytes: int = 1024 * 1024,
        step_server: bool = True,
    ) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self.max_log_bytes = max_log_bytes
        self.max_output_bytes = max_output_bytes
        self.step_server = step_server
        self._steps = 0
        """Steps between their spawn and their end, of every run this executor runs (`_Process.start`'s `alone`)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalExecutor:
        return cls(settings.kill_grace_seconds, settings.step_log_max_bytes, settings.step_output_max_bytes, settings.step_server)

    # --- where the run's steps live: folders of the engine's host -------------------------

    def workspace(self, settings: Settings, run_id: int) -> Path:
        return settings.workspaces / str(run_id)

    def secret_file_path(self, settings: Settings, run_id: int, task: str, name: str) -> str:
        return str(settings.step_homes / str(run_id) / SECRET_FILES_DIR / task / name)

    def step_environment(self, settings: Settings, run_id: int, pipeline: str) -> dict[str, str]:
        return step_environment(
            os.environ,
            settings.step_env,
            run_id=run_id,
            pipeline=pipeline,
            task="",
            workspace=self.workspace(settings, run_id),
            home=settings.step_homes / str(run_id),
        )

    async def run_starting(self, settings: Settings, run_id: int) -> None:
        for private in (self.workspace(settings, run_id), settings.step_homes / str(run_id)):
            private_dir(private, root=settings.home)

    async def run_ended(self, settings: Settings, run_id: int) -> None:
        shutil.rmtree(settings.step_homes / str(run_id) / SECRET_FILES_DIR, ignore_errors=True)
        remove_run(run_id)

    def stop_orphans(self, run_id: int, owner: str, pids: list[int]) -> None:
        for pid in pids:
            kill_orphan_group(pid, run_id)
        kill_orphans(owner, run_id)

    def _write_secret_files(self, invocation: TaskInvocation) -> None:
        """The secrets this task uses as files, each in a 0600 file only its steps are told of.

        They live in the run's private HOME and go when the attempt ends (and, at the
        latest, when the run does); their values are masked like every secret.
        """
        folder = _secret_folder(invocation)
        # HOME is the steps' to write: an earlier step may have put a symlink where these
        # folders go, to have a later task's secrets written where it can read them.
        for part in (folder.parent, folder):
            if part.is_symlink() or (part.exists() and not part.is_dir()):
                part.unlink()
            part.mkdir(mode=0o700, exist_ok=True)
            os.chmod(part, 0o700)
        for where, value in invocation.secret_files.items():
            path = folder / Path(where).name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value)

    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome:
        if not invocation.secret_files:
            return await self._execute(invocation, listener)
        self._write_secret_files(invocation)
        try:
            return await self._execute(invocation, listener)
        finally:
            shutil.rmtree(_secret_folder(invocation), ignore_errors=True)

    async def _execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome:
        watched = _LastLine(listener)
        outputs: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + invocation.timeout if invocation.timeout else None
        for step in invocation.steps:
            # A step's own timeout, or what is left of the task's, whichever ends first.
            limit, what = step.timeout, f"step timed out after {step.timeout:g}s" if step.timeout else ""
            if deadline is not None and invocation.timeout is not None:
                left = deadline - loop.time()
                if limit is None or left < limit:
                    limit, what = max(left, 0.0), f"the task timed out after {invocation.timeout:g}s"
            size = 0
            try:
                workdir = _open_workdir(step)
            except WorkdirEscape as exc:
                listener.step_started(step.index, None)
                listener.step_log(step.index, f"shipline: {exc}")
                listener.step_finished(step.index, None, "failed")
                outputs.append("")
                return TaskOutcome(False, f"step '{step.name}': {exc}", tuple(outputs))
            group = StepGroup.create(invocation.run_id, invocation.task, invocation.attempt, step.index)
            released = False  # the step's end found its group empty and kept it for the run's next step
            self._steps += 1
            try:
                code, status, released = await self._run_step(step, watched, group, workdir, limit, what, alone=self._steps == 1)
            finally:
                self._steps -= 1
                os.close(workdir)
                if group is not None and not released:
                    # Usually the group is empty by now: then removing it is an rmdir, done
                    # here rather than through a thread.
                    if group.occupied():
                        await asyncio.to_thread(_kill_and_remove, group)
                    else:
                        group.remove()
                size, output, wrong = _take_output(step, self.max_output_bytes)
            outputs.append(output)
            if wrong and status == "succeeded":
                return TaskOutcome(False, f"step '{step.name}': {wrong}", tuple(outputs))
            if size > self.max_output_bytes and status == "succeeded":
                return TaskOutcome(
                    False,
                    f"step '{step.name}' wrote {size} bytes to $SHIPLINE_OUTPUT, more than "
                    f"step_output_max_bytes ({self.max_output_bytes}); results are short `name=value` lines: "
                    "put files in the workspace and write their paths (or raise SHIPLINE_STEP_OUTPUT_MAX_BYTES)",
                    tuple(outputs),
                )
            if status == "timed out" and what.startswith("the task"):
                return TaskOutcome(False, f"timed out after {invocation.timeout:g}s", tuple(outputs))
            if status == "timed out":
                return TaskOutcome(False, f"step '{step.name}' timed out after {step.timeout:g}s", tuple(outputs))
            if status != "succeeded":
                # The step's last words usually say why (a catalog step ends with the cause).
                said = f": {watched.last_line}" if watched.last_line else ""
                return TaskOutcome(False, f"step '{step.name}' exited with code {code}{said}", tuple(outputs))
        return TaskOutcome(True, "", tuple(outputs))

    async def _run_step(
        self,
        step: StepSpec,
        listener: StepListener,
        group: StepGroup | None,
        workdir: int,
        limit: float | None,
        what: str,
        alone: bool,
    ) -> tuple[int | None, str, bool]:
        """The step's exit code and how it ended; True when its group was found empty at its end (and released).
        `alone`: no other step of this executor is running or starting (see `_Process`)."""
        _prepare_output(step)
        env = {**step.env, "SHIPLINE_OUTPUT": str(step.output_file)}
        if self.step_server and "shipline step" in step.script and (server := step_server()):
            env["SHIPLINE_STEP_SOCKET"] = server.address  # see shipline.launch
            env["SHIPLINE_STEP_FALLBACK"] = server.fallback
            env["PATH"] = os.pathsep.join(p for p in (str(server.client), env.get("PATH", "")) if p)
        kept = 0

        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character cut in two by MAX_LINE stays whole

        def emit(raw: bytes, partial: bool) -> None:
            nonlocal kept
            if kept > self.max_log_bytes:
                return  # past the cap: drained from the pipe, not kept
            kept += len(raw) + (0 if partial else 1)
            if kept > self.max_log_bytes:
                listener.step_log(
                    step.index,
                    f"shipline: this step's output passed step_log_max_bytes ({self.max_log_bytes} bytes); the rest "
                    "is not kept (write large output to a file in the workspace, or raise SHIPLINE_STEP_LOG_MAX_BYTES)",
                    False,
                )
                return
            text = decoder.decode(raw, final=not partial)
            listener.step_log(step.index, text if partial else text.removesuffix("\r"), partial)

        script = step.script
        if group is not None:
            env["SHIPLINE_CGROUP_PROCS"] = str(group.procs_file)
            script = _JOIN + script
        spawn = asyncio.ensure_future(
            # The folder checked and opened, not its name: a symlink swapped in since (by a
            # task running beside this one) cannot redirect the step.
            _Process.start([*_SHELLS[step.shell], script], cwd_fd=workdir, env=env, alone=alone)
        )
        try:
            # Shielded: a cancel while asyncio is still setting up would kill only the
            # leader, and what the step already forked would live on.
            transport, proto = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            with suppress(Exception):
                transport, proto = await spawn
                listener.step_started(step.index, transport.get_pid())
                proto.attach(emit)
                await self._stop(transport.get_pid(), proto, group)
                transport.close()
                listener.step_finished(step.index, transport.get_returncode(), "cancelled")
            raise
        except OSError as exc:
            listener.step_started(step.index, None)
            listener.step_log(step.index, f"shipline: cannot start {step.shell}: {exc}")
            listener.step_finished(step.index, None, "failed")
            return None, "failed", False
        pid = transport.get_pid()
        listener.step_started(step.index, pid)
        proto.attach(emit)
        try:
            try:
                async with asyncio.timeout(limit):
                    await asyncio.shield(proto.exited)  # a cancel must not cancel the future itself
            except TimeoutError:
                await self._stop(pid, proto, group)
                listener.step_log(step.index, f"shipline: {what}; its processes were stopped")
                listener.step_finished(step.index, transport.get_returncode(), "failed")
                return transport.get_returncode(), "timed out", False
            except asyncio.CancelledError as exc:
                await self._stop(pid, proto, group)
                why = str(exc.args[0]) if exc.args and exc.args[0] else "cancelled"
                listener.step_log(step.index, f"shipline: {why}; the step's processes were stopped")
                listener.step_finished(step.index, transport.get_returncode(), "cancelled")
                raise
            _kill_group(pid, signal.SIGKILL)
            # Nothing outside the group can enter it: found empty now, it stays so (and is kept
            # for the run's next step).
            leftovers = group is not None and not group.release()
            if leftovers:
                assert group is not None
                await asyncio.to_thread(group.kill)
            await _drain(proto)
            code = transport.get_returncode()
        finally:
            transport.close()
        status: StepEnd = "succeeded" if code == 0 else "failed"
        listener.step_finished(step.index, code, status)
        return code, status, group is not None and not leftovers

    async def _stop(self, pid: int, proto: _StepProtocol, group: StepGroup | None) -> None:
        """TERM the step's processes, give them the grace period, then KILL what is left."""
        _kill_group(pid, signal.SIGTERM)
        if group is not None:
            group.signal(signal.SIGTERM)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.exited), self.kill_grace_seconds)
        _kill_group(pid, signal.SIGKILL)
        if group is not None:
            await asyncio.to_thread(group.kill)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.exited), DRAIN_SECONDS)
        await _drain(proto)


class WorkdirEscape(Exception):
    """A step's workdir leads outside the run's workspace (through a symlink a step made)."""


def _open_workdir(step: StepSpec) -> int:
    """Open the step's workdir, making the folders that are missing, and never leave the workspace.

    One folder at a time: each is made inside the folder opened before (so nothing
    is ever created through a symlink), opened, and where it really is checked.
    A symlink that stays inside the workspace is fine; one that leads out is refused.
    """
    if step.workspace is None:
        step.workdir.mkdir(parents=True, exist_ok=True)
        return os.open(step.workdir, os.O_RDONLY | os.O_DIRECTORY)
    inside = step.workdir.is_relative_to(step.workspace)
    shown = step.workdir.relative_to(step.workspace) if inside else step.workdir
    if not inside or ".." in shown.parts:
        raise WorkdirEscape(f"workdir '{shown}' is not inside the run's workspace: refused")
    try:  # the run's workspace is there from its start: opened, not made again, for each step
        fd = os.open(step.workspace, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        step.workspace.mkdir(parents=True, exist_ok=True)
        fd = os.open(step.workspace, os.O_RDONLY | os.O_DIRECTORY)
    root: Path | None = None
    try:
        for part in shown.parts:
            if part in ("", "."):
                continue
            # Where the workspace opened is (no walk of its path); most steps work at its top, and need not ask.
            root = root or Path(os.readlink(f"/proc/self/fd/{fd}"))
            with suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                raise WorkdirEscape(f"workdir '{shown}': cannot open '{part}' ({exc.strerror}): refused") from exc
            os.close(fd)
            fd = inner
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if not real.is_relative_to(root):
                raise WorkdirEscape(
                    f"workdir '{shown}' leads to {real} (through a symlink), outside the run's workspace: refused"
                )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kill_and_remove(group: StepGroup) -> None:
    group.kill()
    group.remove()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _drain(proto: _StepProtocol) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proto.closed), DRAIN_SECONDS)


def _prepare_output(step: StepSpec) -> None:
    """The folder of $SHIPLINE_OUTPUT, which only the engine's user may enter: the file holds results
    unmasked.  The file itself is the step's to create (`>>` does): most steps write no result, and
    making an empty file for each step (one of the three files and folders a step made) cost
    0.2-0.7 ms on this project's disk.  None is there before the step: each attempt's file has its own
    name, and `_take_output` removes it once read.  The folder is the run's log folder, there since
    the run began: one chmod finds it (a mkdir that failed, a stat and a chmod did)."""
    directory = step.output_file.parent
    try:
        os.chmod(directory, 0o700)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)


NOT_A_FILE = (
    "$SHIPLINE_OUTPUT is not a regular file (the step made it a FIFO, a symlink or a folder): its results "
    "are not read; append `name=value` lines to it (`>>`)"
)


def _take_output(step: StepSpec, limit: int) -> tuple[int, str, str]:
    """How many bytes the step wrote to $SHIPLINE_OUTPUT, what (nothing when it is over `limit`,
    which is not read), and what is wrong with it ("" when nothing); it goes, so no raw value
    outlives the step.  Most steps write none: then this is one failed open.

    Only a regular file is read: a FIFO's open would wait for a writer (and the engine's loop
    with it), and a symlink would lead to a file elsewhere."""
    path = step.output_file
    try:
        fd = regular_fd(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, "", ""
    if fd is None:
        remove_entry(path)
        return 0, "", NOT_A_FILE
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            return size, "", ""
        with open(fd, "rb", closefd=False) as file:
            return size, file.read().decode("utf-8", errors="replace"), ""
    finally:
        os.close(fd)
        remove_entry(path)


@lru_cache(maxsize=8)
def _allowed(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One test for all the allowed names' patterns (shell-style, case-sensitive): each run
    filters the engine's whole environment, and a pattern at a time cost more than the run's SQL."""
    if not patterns:
        return lambda name: False
    return re.compile("|".join(translate(p) for p in patterns)).match


def step_environment(
    environ: Mapping[str, str], allowed: list[str], *, run_id: int, pipeline: str, task: str, workspace: Path, home: Path
) -> dict[str, str]:
    """What every step starts from: the allowed part of the engine's environment, a HOME of the run's own, SHIPLINE_*.

    The engine's other variables (cloud keys, SSH_AUTH_SOCK, a person's
    KUBECONFIG) and its HOME (~/.kube, ~/.docker, ~/.git-credentials) stay out:
    no person's credentials are used by a pipeline.
    """
    passes = _allowed(tuple(allowed))
    # The names first: a value read from os.environ is decoded, and most are not passed on.
    env = {k: environ[k] for k in environ if not k.startswith("SHIPLINE_") and passes(k)}
    # Catalog tasks call `shipline step ...`: the steps find the same shipline as
    # the engine's, also when it lives in a virtualenv that is not on PATH.
    if (tools := _engines_tools()) and tools not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (tools, env.get("PATH", "")) if p)
    env.update(
        HOME=str(home),
        SHIPLINE_RUN_ID=str(run_id),
        SHIPLINE_PIPELINE=pipeline,
        SHIPLINE_TASK=task,
        SHIPLINE_WORKSPACE=str(workspace),
        CI="true",
    )
    return env


@cache
def _engines_tools() -> str | None:
    """The folder of the engine's Python when the `shipline` command is there too (a virtualenv's bin)."""
    tools = Path(sys.executable).parent
    return str(tools) if (tools / "shipline").exists() else None


def kill_orphan_group(pid: int, run_id: int) -> bool:
    """Kill a step's process group left by a dead engine, if it really is that run's step."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    if f"SHIPLINE_RUN_ID={run_id}".encode() not in environ:
        return False
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        return True
    return False


def kill_orphans(owner: str, run_id: int) -> int:
    """Kill every process the steps of `run_id` left when their engine (`owner`, dead) stopped.

    Through the steps' cgroups: also what left the steps' process groups
    (`setsid`, daemons, `(sleep 300) &` whose shell is gone).  Returns how many.
    """
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return 0
    return kill_run(int(pid_text), token, run_id)


def _secret_folder(invocation: TaskInvocation) -> Path:
    """Where the attempt's secret files go: the folder of the paths the engine rendered (`secret_file_path`)."""
    return Path(next(iter(invocation.secret_files))).parent
