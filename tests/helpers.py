"""Helpers the tests import (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shipline.domain.runs import RunRecord

REPO = Path(__file__).resolve().parent.parent

RunFn = Callable[..., RunRecord]
"""`run_pipeline(yaml_text, params)`: load, run in-process, return the final record."""

GROUPED = """
name: grouped
params:
  seconds: {default: "0"}
concurrency: one-at-a-time
tasks:
  - name: work
    steps: [{run: "sleep ${{ params.seconds }}"}]
"""
"""A pipeline whose runs take turns in one concurrency group, each sleeping `seconds`."""


def shipline(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real `shipline` command in a subprocess (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "shipline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=check,
    )


class Background:
    """A `shipline` command left running (a CLI run, a server), its output kept in a file.

    `why()` says what became of it, for an assertion's message: its exit status and the
    end of its output, or, when it still runs, where each of its threads is (it is started
    under `-X faulthandler`, and SIGABRT makes it print them and end).
    """

    def __init__(self, *args: str, output: Path, env: dict[str, str] | None = None) -> None:
        self.output = output
        with output.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-m", "shipline", *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def why(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=30)
            state = "still running, stopped to show where it was"
        else:
            state = f"ended with exit status {self.proc.returncode}"
        return f"`shipline` {state}; its output:\n{self.output.read_text(errors='replace')[-4000:]}"
