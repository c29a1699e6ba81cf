"""Helpers the tests import (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shipline.domain.runs import RunRecord

REPO = Path(__file__).resolve().parent.parent

RunFn = Callable[..., RunRecord]
"""`run_pipeline(yaml_text, params)`: load, run in-process, return the final record."""


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
