"""Step logs: one file per step attempt, one timestamped line per output line.

Lines are written and flushed as they arrive, so a reader (`runs logs
--follow`, the server) sees them at once and a killed engine loses nothing
that a step had printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from shipline.store.files import private_dir, private_file


@dataclass(frozen=True)
class LogLine:
    at: datetime
    text: str


def step_log_path(logs: Path, run_id: int, task: str, attempt: int, index: int) -> Path:
    return logs / str(run_id) / task / f"{attempt}.{index}.log"


class LogWriter:
    """Appends to a step's log, a file only the engine's user may read (lines come masked from the recorder)."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        self.path = path
        self._file: IO[str] = os.fdopen(private_file(path), "a", encoding="utf-8")

    def write(self, text: str, at: datetime | None = None) -> datetime:
        at = at or datetime.now(UTC)
        self._file.write(f"{at.isoformat()} {text}\n")
        self._file.flush()
        return at

    def close(self) -> None:
        self._file.close()


def parse_line(raw: str) -> LogLine:
    stamp, _, text = raw.rstrip("\n").partition(" ")
    try:
        return LogLine(datetime.fromisoformat(stamp), text)
    except ValueError:
        return LogLine(datetime.fromtimestamp(0, UTC), raw.rstrip("\n"))


def read_log(path: Path) -> Iterator[LogLine]:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for raw in f:
                yield parse_line(raw)
    except FileNotFoundError:
        return


def discard_outputs(logs: Path, run_id: int) -> None:
    """Remove what a run's steps wrote to $SHIPLINE_OUTPUT and no engine read (it died): raw, unmasked values."""
    for path in (logs / str(run_id)).glob("*/*.out"):
        path.unlink(missing_ok=True)
