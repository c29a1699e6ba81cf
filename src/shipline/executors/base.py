"""The executor interface: where steps run, and a listener for what they do.

An executor knows nothing of pipelines or the store: it gets fully rendered
steps (scripts with values already moved into environment variables) and
reports step starts, log lines and exits to a listener.  Cancelling the
`execute` coroutine must stop everything it started.

Everything that depends on where steps run is behind this interface, not in
the engine: the paths steps see (workspace, HOME, secret files), the
environment they start from, how secret files reach them, and how what a
dead engine left running is found and stopped (processes by pid and cgroup
for `local`, pods by label for `kubernetes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from shipline.settings import Settings


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
    image: str | None = None
    """The container image the step runs in (`image:` of the step, else of the task); executors
    that run steps on the host ignore it."""


@dataclass(frozen=True)
class TaskInvocation:
    run_id: int
    task: str
    attempt: int
    steps: list[StepSpec]
    timeout: float | None = None
    """Bounds the whole attempt: when it runs out, the executor stops the steps and reports a timeout."""
    secret_files: dict[str, str] = field(default_factory=dict)
    """path (from `Executor.secret_file_path`) -> value of the secrets the steps get as files:
    the executor puts them there for the attempt only, readable by the steps alone."""


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
    """`settings`: the engine's (its home, `step_env`...), passed on each call."""

    def workspace(self, settings: Settings, run_id: int) -> Path:
        """The run's workspace as its steps see it."""
        ...

    def secret_file_path(self, settings: Settings, run_id: int, task: str, name: str) -> str:
        """Where a step of `task` finds the secret file `name` (what `${{ secret_files.NAME }}` renders to)."""
        ...

    def step_environment(self, settings: Settings, run_id: int, pipeline: str) -> dict[str, str]:
        """What every step of the run starts from (HOME, SHIPLINE_RUN_ID, PATH...), before the definition's `env:`."""
        ...

    async def run_starting(self, settings: Settings, run_id: int) -> None:
        """Before the run's first task: make the run's private places."""
        ...

    async def run_ended(self, settings: Settings, run_id: int) -> None:
        """The run is over: remove what it held that must not outlive it (secret files, Secrets, pods)."""
        ...

    def stop_orphans(self, run_id: int, owner: str, pids: list[int]) -> None:
        """The engine `owner` died while driving `run_id`: stop what its steps left running
        (`pids`: the step processes it recorded, where there are such)."""
        ...

    async def execute(self, invocation: TaskInvocation, listener: StepListener) -> TaskOutcome: ...
