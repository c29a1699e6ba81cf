"""Step logs: one file per step attempt, one timestamped line per output line.

Lines are written and flushed as they arrive, so a reader (`runs logs
--follow`, the server) sees them at once and a killed engine loses nothing
that a step had printed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from shipline.files import open_regular, own_file, private_dir
from shipline.store.sql import SqlStore


@dataclass(frozen=True)
class LogLine:
    at: datetime
    text: str


def step_log_path(logs: Path, run_id: int, task: str, attempt: int, index: int) -> Path:
    """`logs/RUN/TASK.ATTEMPT.STEP.log`: all of a run's logs in its one folder (task names hold no dot).

    Runs recorded before 2026-11-29 have theirs in `logs/RUN/TASK/ATTEMPT.STEP.log`; readers go
    by the path in the step's record.  A folder per task was a new inode on the way from one
    task to the next (0.4 ms of kernel CPU each on this project's CI disk)."""
    return logs / str(run_id) / f"{task}.{attempt}.{index}.log"


@dataclass(frozen=True)
class Elsewhere:
    """The step logs of a run are not in this process's logs folder, but under another server's home."""

    why: str
    """What to tell a person: where the steps ran, and how to read their logs."""
    url: str | None
    """The URL of the server that ran them, when it registered one (`SqlStore.register_server`)."""
    owner: str
    """The engine that ran them ("" when none is recorded)."""


def logs_elsewhere(store: SqlStore, logs: Path, run_id: int) -> Elsewhere | None:
    """Where the run's step logs are when the steps ran under another `SHIPLINE_HOME` (another
    server sharing the store); None when they are here or there are none.

    A run's log folder is made as it starts, on the host and in the home of the engine
    that runs it; servers share the store, not their logs folders."""
    if (logs / str(run_id)).is_dir() or not store.log_paths(run_id):
        return None
    owner = store.run_owner(run_id) or ""
    host, _, rest = owner.partition(":")
    ran = f"on {host} (process {rest.partition(':')[0]})" if host else "under another server"
    url = store.server_url(owner) if owner else None
    here = f"the logs of run {run_id} are not here ({socket.gethostname()}, {logs}): its steps ran {ran}"
    if url is None:
        return Elsewhere(
            f"{here}, whose $SHIPLINE_HOME/logs keeps them; read them there, or give every server one logs folder "
            "(a volume they all mount)",
            None,
            owner,
        )
    return Elsewhere(
        f"{here}, whose server is at {url}: read them there (GET {url}/api/v1/runs/{run_id}/logs?format=text, "
        "or any server of the store passes the request on), or give every server one logs folder",
        url,
        owner,
    )


def step_output_path(logs: Path, run_id: int, task: str, attempt: int, index: int) -> Path:
    """Where the step writes its results ($SHIPLINE_OUTPUT), beside its log; removed once read."""
    return logs / str(run_id) / f"{task}.{attempt}.{index}.out"


class LogWriter:
    """Appends to a step's log, a file only the engine's user may read (lines come masked from the recorder).

    The file is made with the step's first line: a step that prints nothing has none (readers
    take a missing log for an empty one), and a step's start makes no file before it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, text: str, at: datetime | None = None) -> datetime:
        at = at or datetime.now(UTC)
        if self._file is None:
            private_dir(self.path.parent)
            self._file = os.fdopen(own_file(self.path), "a", encoding="utf-8")
        self._file.write(f"{at.isoformat()} {text}\n")
        self._file.flush()
        return at

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def parse_line(raw: str) -> LogLine:
    stamp, _, text = raw.rstrip("\n").partition(" ")
    try:
        return LogLine(datetime.fromisoformat(stamp), text)
    except ValueError:
        return LogLine(datetime.fromtimestamp(0, UTC), raw.rstrip("\n"))


def read_log(path: Path) -> Iterator[LogLine]:
    try:
        f = open_regular(path, text=True)
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            yield parse_line(raw)


def discard_outputs(logs: Path, run_id: int) -> None:
    """Remove what a run's steps wrote to $SHIPLINE_OUTPUT and no engine read (it died): raw, unmasked values."""
    for pattern in ("*.out", "*/*.out"):  # and where runs recorded before 2026-11-29 have them
        for path in (logs / str(run_id)).glob(pattern):
            path.unlink(missing_ok=True)
