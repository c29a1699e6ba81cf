"""Run steps as local processes, each in its own process group.

Each step is `bash --noprofile --norc -eo pipefail -c SCRIPT` (or `sh -ec`)
in the run's workspace.  stdout and stderr are merged and cut into lines as
they arrive, so a step that prints a 10 MB line or no newline at all still
streams.  On cancel or timeout the whole process group gets SIGTERM, then
SIGKILL after a grace period: children started by the step go too.  When a
step's main process exits, what it left running in its group is killed.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
from collections.abc import Callable
from contextlib import suppress

from shipline.executors.base import StepEnd, StepListener, StepSpec, TaskInvocation, TaskOutcome

MAX_LINE = 64 * 1024
"""Longer lines are cut into pieces of this size, so memory stays bounded."""

DRAIN_SECONDS = 2.0
"""After the group is killed, how long the output pipe gets to close (a process that left the group may hold it)."""

_SHELLS = {
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-ec"],
}


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


class LocalExecutor:
    def __init__(self, kill_grace_seconds: float = 5.0) -> None:
        self.kill_grace_seconds = kill_grace_seconds

    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome:
        outputs: list[str] = []
        for step in invocation.steps:
            try:
                code, status = await self._run_step(step, listener)
            finally:
                output = _take_output(step)
            outputs.append(output)
            if status == "timed out":
                return TaskOutcome(False, f"step '{step.name}' timed out after {step.timeout:g}s", tuple(outputs))
            if status != "succeeded":
                return TaskOutcome(False, f"step '{step.name}' exited with code {code}", tuple(outputs))
        return TaskOutcome(True, "", tuple(outputs))

    async def _run_step(self, step: StepSpec, listener: StepListener) -> tuple[int | None, str]:
        _create_output(step)
        step.workdir.mkdir(parents=True, exist_ok=True)
        env = {**step.env, "SHIPLINE_OUTPUT": str(step.output_file)}

        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character cut in two by MAX_LINE stays whole

        def emit(raw: bytes, partial: bool) -> None:
            text = decoder.decode(raw, final=not partial)
            listener.step_log(step.index, text if partial else text.removesuffix("\r"), partial)

        loop = asyncio.get_running_loop()
        spawn = asyncio.ensure_future(
            loop.subprocess_exec(
                _StepProtocol,
                *_SHELLS[step.shell],
                step.script,
                cwd=step.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
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
                await self._stop(transport.get_pid(), proto)
                transport.close()
                listener.step_finished(step.index, transport.get_returncode(), "cancelled")
            raise
        except OSError as exc:
            listener.step_started(step.index, None)
            listener.step_log(step.index, f"shipline: cannot start {step.shell}: {exc}")
            listener.step_finished(step.index, None, "failed")
            return None, "failed"
        pid = transport.get_pid()
        listener.step_started(step.index, pid)
        proto.attach(emit)
        try:
            try:
                async with asyncio.timeout(step.timeout):
                    await asyncio.shield(proto.exited)  # a cancel must not cancel the future itself
            except TimeoutError:
                await self._stop(pid, proto)
                listener.step_log(step.index, f"shipline: step timed out after {step.timeout:g}s; its processes were stopped")
                listener.step_finished(step.index, transport.get_returncode(), "failed")
                return transport.get_returncode(), "timed out"
            except asyncio.CancelledError:
                await self._stop(pid, proto)
                listener.step_log(step.index, "shipline: cancelled; the step's processes were stopped")
                listener.step_finished(step.index, transport.get_returncode(), "cancelled")
                raise
            _kill_group(pid, signal.SIGKILL)
            await _drain(proto)
            code = transport.get_returncode()
        finally:
            transport.close()
        status: StepEnd = "succeeded" if code == 0 else "failed"
        listener.step_finished(step.index, code, status)
        return code, status

    async def _stop(self, pid: int, proto: _StepProtocol) -> None:
        """TERM the group, give it the grace period, then KILL what is left."""
        _kill_group(pid, signal.SIGTERM)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.exited), self.kill_grace_seconds)
        _kill_group(pid, signal.SIGKILL)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proto.exited), DRAIN_SECONDS)
        await _drain(proto)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _drain(proto: _StepProtocol) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proto.closed), DRAIN_SECONDS)


def _create_output(step: StepSpec) -> None:
    """An empty $SHIPLINE_OUTPUT that only the engine's user may read: it holds results unmasked."""
    directory = step.output_file.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    fd = os.open(step.output_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _take_output(step: StepSpec) -> str:
    """What the step wrote to $SHIPLINE_OUTPUT; the file goes, so no raw value outlives the step."""
    try:
        return step.output_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    finally:
        step.output_file.unlink(missing_ok=True)
