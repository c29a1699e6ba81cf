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


def owner_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def owner_alive(owner: str, heartbeat: datetime | None, now: datetime) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        return _start_time(int(pid_text)) == token
    return heartbeat is not None and now - heartbeat < HEARTBEAT_STALE
