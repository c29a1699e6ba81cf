"""The executor interface: one method, `execute`, and a listener for what it sees.

An executor knows nothing of pipelines or the store: it gets fully rendered
steps (scripts with values already moved into environment variables) and
reports step starts, log lines and exits to a listener.  Cancelling the
`execute` coroutine must stop everything it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class StepSpec:
    index: int
    name: str
    script: str
    shell: Literal["bash", "sh"]
    env: dict[str, str]
    workdir: Path
    output_file: Path
    """Where the step writes `name=value` result lines ($SHIPLINE_OUTPUT)."""
    timeout: float | None = None
    workspace: Path | None = None
    """The run's workspace: `workdir` must be inside it, also once symlinks are followed."""


@dataclass(frozen=True)
class TaskInvocation:
    run_id: int
    task: str
    attempt: int
    steps: list[StepSpec]
    timeout: float | None = None
    """Bounds the whole attempt: when it runs out, the executor stops the steps and reports a timeout."""


@dataclass(frozen=True)
class TaskOutcome:
    succeeded: bool
    message: str = ""
    outputs: tuple[str, ...] = ()
    """The text each step wrote to its output file, in step order."""


StepEnd = Literal["succeeded", "failed", "cancelled"]


class StepListener(Protocol):
    def step_started(self, index: int, pid: int | None) -> None: ...

    def step_log(self, index: int, line: str, partial: bool = False) -> None:
        """A line of output; `partial`: it goes on in the next call (an executor cuts very long lines)."""

    def step_finished(self, index: int, exit_code: int | None, status: StepEnd) -> None: ...


class Executor(Protocol):
    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome: ...
