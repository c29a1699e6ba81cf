"""Run steps as local processes, each in its own process group.

Each step is `bash --noprofile --norc -eo pipefail -c SCRIPT` (or `sh -ec`)
in the run's workspace.  stdout and stderr are merged, read in chunks and cut
into lines, so a step that prints a 10 MB line or no newline at all still
streams.  On cancel or timeout the whole process group gets SIGTERM, then
SIGKILL after a grace period: children started by the step go too.  When a
step ends, processes it left running in its group are killed as well.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import suppress

from shipline.executors.base import StepListener, StepSpec, TaskInvocation, TaskOutcome

_CHUNK = 64 * 1024
_MAX_LINE = 64 * 1024
"""Longer lines are cut into pieces of this size, so memory stays bounded."""

_SHELLS = {
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"],
    "sh": ["sh", "-ec"],
}


class LocalExecutor:
    def __init__(self, kill_grace_seconds: float = 5.0) -> None:
        self.kill_grace_seconds = kill_grace_seconds

    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome:
        outputs: list[str] = []
        for step in invocation.steps:
            code, status = await self._run_step(step, listener)
            outputs.append(_read_output(step))
            if status != "succeeded":
                label = step.name
                if status == "timed out":
                    return TaskOutcome(False, f"step '{label}' timed out after {step.timeout:g}s", tuple(outputs))
                return TaskOutcome(False, f"step '{label}' exited with code {code}", tuple(outputs))
        return TaskOutcome(True, "", tuple(outputs))

    async def _run_step(self, step: StepSpec, listener: StepListener) -> tuple[int | None, str]:
        step.output_file.parent.mkdir(parents=True, exist_ok=True)
        step.output_file.write_bytes(b"")
        step.workdir.mkdir(parents=True, exist_ok=True)
        env = {**step.env, "SHIPLINE_OUTPUT": str(step.output_file)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *_SHELLS[step.shell],
                step.script,
                cwd=step.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            listener.step_started(step.index, None)
            listener.step_log(step.index, f"shipline: cannot start {step.shell}: {exc}")
            listener.step_finished(step.index, None, "failed")
            return None, "failed"
        listener.step_started(step.index, proc.pid)
        reader = asyncio.ensure_future(_pump(proc, step.index, listener))
        try:
            async with asyncio.timeout(step.timeout):
                code = await proc.wait()
            # Whatever the step left behind in its group (`server &`) holds the pipe
            # open and would outlive the run: it ends with the step.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await reader
        except TimeoutError:
            await self._stop(proc, reader)
            listener.step_log(step.index, f"shipline: step timed out after {step.timeout:g}s; its processes were stopped")
            listener.step_finished(step.index, proc.returncode, "failed")
            return proc.returncode, "timed out"
        except asyncio.CancelledError:
            await self._stop(proc, reader)
            listener.step_log(step.index, "shipline: cancelled; the step's processes were stopped")
            listener.step_finished(step.index, proc.returncode, "cancelled")
            raise
        status = "succeeded" if code == 0 else "failed"
        listener.step_finished(step.index, code, status)
        return code, status

    async def _stop(self, proc: asyncio.subprocess.Process, reader: asyncio.Future[None]) -> None:
        """TERM the group, wait the grace period, then KILL what is left."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.kill_grace_seconds)
        except TimeoutError:
            pass
        # Children may outlive the leader, or ignore TERM: the group goes either way.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader


async def _pump(proc: asyncio.subprocess.Process, index: int, listener: StepListener) -> None:
    assert proc.stdout is not None
    pending = b""
    while chunk := await proc.stdout.read(_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _emit(listener, index, line)
        while len(pending) > _MAX_LINE:
            _emit(listener, index, pending[:_MAX_LINE])
            pending = pending[_MAX_LINE:]
    if pending:
        _emit(listener, index, pending)


def _emit(listener: StepListener, index: int, raw: bytes) -> None:
    for piece in range(0, max(len(raw), 1), _MAX_LINE):
        listener.step_log(index, raw[piece : piece + _MAX_LINE].decode("utf-8", "replace").removesuffix("\r"))


def _read_output(step: StepSpec) -> str:
    try:
        return step.output_file.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
