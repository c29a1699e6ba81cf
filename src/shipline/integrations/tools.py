"""Running a command-line tool (buildah, helm) with its output shown as it comes.

The catalog's steps print what their tools print, so a run's log reads like a
terminal; the caller gets the whole output back to find the line that names a
failure's cause.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipline.exceptions import ToolError

Echo = Callable[[str], None]
"""Where a tool's output lines go (a step prints them: they become its log)."""


@dataclass(frozen=True)
class ToolRun:
    argv: tuple[str, ...]
    code: int
    output: str
    """stdout and stderr, interleaved as the tool wrote them."""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def cause(self) -> str:
        """The line that most likely names what went wrong: the last `Error:` line, else the last line."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        for line in reversed(lines):
            lowered = line.lower()
            if lowered.startswith(("error", "[error]")) or " error: " in lowered:
                return line
        return lines[-1] if lines else f"{self.argv[0]} exited with code {self.code} and printed nothing"


def run_tool(
    argv: Sequence[str], *, echo: Echo, cwd: Path | None = None, env: Mapping[str, str] | None = None, needed_for: str
) -> ToolRun:
    """Run argv to its end, echoing each output line; a missing program is a ToolError naming it."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise ToolError(
            f"'{argv[0]}' is not installed or not on PATH; {needed_for} needs it "
            f'(on the testbed: eval "$(shipline testbed env)" puts helm and kubectl on PATH)'
        ) from exc
    lines: list[str] = []
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            lines.append(line)
            echo(line.rstrip("\n"))
    code = proc.wait()
    return ToolRun(tuple(argv), code, "".join(lines))
