"""Who owns a run, whether that engine still lives, and cleaning up after one that died.

An owner id is `host:pid:starttime`: the start time (from /proc) tells a
live engine from a new process that happens to reuse the pid.  Stopping what
a dead engine's steps left running is the executor's (`Executor.stop_orphans`).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from shipline.executors.cgroups import process_start_time

HEARTBEAT_STALE = timedelta(seconds=60)
"""An engine on another host is presumed dead after this long without a heartbeat."""


_start_time = process_start_time


def _local(owner: str) -> tuple[int, str] | None:
    """The pid and start time of an owner on this host; None for another host's."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    return (int(pid_text), token) if host == socket.gethostname() and pid_text.isdigit() else None


def owner_gone(owner: str) -> bool:
    """`owner` was a process of this host that is no longer running (False for another host's: nobody can tell)."""
    local = _local(owner)
    return local is not None and _start_time(local[0]) != local[1]


def owner_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def owner_alive(owner: str, heartbeat: datetime | None, now: datetime) -> bool:
    local = _local(owner)
    if local is not None:
        return _start_time(local[0]) == local[1]
    return heartbeat is not None and now - heartbeat < HEARTBEAT_STALE
