"""Detached processes that outlive the command that started them.

A service runs in a session of its own (so a terminal's Ctrl-C or the end of a
pytest session does not reach it), with its pid in a file and its output in a
log, so that `up` in one process and `down` in another agree on what runs.

The service is started by a short-lived `setsid sh` that backgrounds it and
prints its pid; the service is thus reparented at once and never becomes a
zombie of ours, and no Popen object is left to warn when it is collected.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shipline.exceptions import ToolError

_LAUNCHER = 'log=$1; shift; exec "$@" </dev/null >>"$log" 2>&1 & echo $!'


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to drop to (Gitea refuses to run as root)."""

    user: str
    uid: int
    gid: int
    home: Path

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]


def start_detached(
    argv: Sequence[str], *, pidfile: Path, log: Path, env: Mapping[str, str], cwd: Path, run_as: RunAs | None = None
) -> int:
    """Start argv in a new session; write and return its pid."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n")
    command = run_as.wrap(argv) if run_as else list(argv)
    try:
        proc = subprocess.run(
            ["setsid", "sh", "-c", _LAUNCHER, "sh", str(log), *command],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"could not start {argv[0]}: {exc}") from exc
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise ToolError(f"could not start {' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()} (log: {log})")
    pid = int(proc.stdout.strip())
    pidfile.write_text(f"{pid}\n")
    return pid


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _thread_state(stat_path: str) -> bytes:
    with open(stat_path, "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0]


def _running_thread(pid: int) -> str | None:
    # A multi-threaded program (every Go service) that exits shows its first thread as a
    # zombie while the others still close its files, listening sockets among them: the
    # process has ended only once no thread of it runs.
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in threads:
        try:
            if _thread_state(f"/proc/{pid}/task/{tid}/stat") not in (b"Z", b"X"):
                return tid
        except (OSError, IndexError):
            continue
    return None


def is_alive(pid: int, program: str | None = None) -> bool:
    """True while a thread of pid runs (it is not a zombie) and, if given, its command line names program."""
    try:
        thread = _running_thread(pid)
        if thread is None:
            return False
        if program is not None:
            with open(f"/proc/{pid}/task/{thread}/cmdline", "rb") as cmdline:
                # pids are reused: only claim the process if it runs our program.
                if program.encode() not in cmdline.read():
                    return False
    except (OSError, IndexError):
        return False
    return True


def running_pid(pidfile: Path, program: str) -> int | None:
    pid = read_pid(pidfile)
    return pid if pid is not None and is_alive(pid, program) else None


def stop(pidfile: Path, program: str, grace: float = 10.0) -> bool:
    """Stop the process named by pidfile (and its process group); True if one was running."""
    pid = running_pid(pidfile, program)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    _signal_group(pgid, pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_alive(pid):
        time.sleep(0.1)
    if is_alive(pid):
        _signal_group(pgid, pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and is_alive(pid):
            time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    return True


def _signal_group(pgid: int, pid: int, sig: signal.Signals) -> None:
    # The group is the service's own session (setsid): never ours.
    try:
        if pgid != os.getpgid(0):
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
