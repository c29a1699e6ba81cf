"""Who owns a run, whether that engine still lives, and cleaning up after one that died.

An owner id is `host:pid:starttime`: the start time (from /proc) tells a
live engine from a new process that happens to reuse the pid.
"""

from __future__ import annotations

import os
import signal
import socket
from contextlib import suppress
from datetime import datetime, timedelta

from shipline.executors.cgroups import kill_run, process_start_time

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


def kill_orphan_group(pid: int, run_id: int) -> bool:
    """Kill a step's process group left by a dead engine, if it really is that run's step."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    if f"SHIPLINE_RUN_ID={run_id}".encode() not in environ:
        return False
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        return True
    return False


def kill_orphans(owner: str, run_id: int) -> int:
    """Kill every process the steps of `run_id` left when their engine (`owner`, dead) stopped.

    Through the steps' cgroups: also what left the steps' process groups
    (`setsid`, daemons, `(sleep 300) &` whose shell is gone).  Returns how many.
    """
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return 0
    return kill_run(int(pid_text), token, run_id)
