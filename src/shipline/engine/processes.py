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

HEARTBEAT_STALE = timedelta(seconds=60)
"""An engine on another host is presumed dead after this long without a heartbeat."""


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


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
