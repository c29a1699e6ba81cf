"""A cgroup per step, so that no process a step starts outlives it.

A process group is not enough: `setsid`, a daemonising tool or a double fork
leaves it, and a killed engine leaves its steps' children running.  A cgroup
holds every descendant whatever it does, and the kernel says which pids are in
it.  Each step gets `<own cgroup>/shipline/<engine pid>-<start time>/run-<RUN>/<TASK>.<ATTEMPT>.<STEP>`
in the first writable hierarchy of: cgroup v1 `freezer` (frozen before the
kill, so nothing forks while it dies), v1 `pids`, the cgroup v2 tree.  A group
its step left empty is kept for the run's next step rather than removed and
made again.  The
engine's name in the path lets a later engine find what a dead one left
(`kill_run`).  Where none is writable, steps are tracked by process group
only, and a warning says so once.

Host-specific by nature: only the local executor and the engine's recovery use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import time
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger("shipline.executors")

CGROUP_ROOT = Path("/sys/fs/cgroup")
KILL_SECONDS = 5.0
"""How long a kill may take before it gives up (a process in uninterruptible sleep)."""


def process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (from /proc): tells a process from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def engine_key(pid: int, start_time: str) -> str:
    return f"{pid}-{start_time}"


@dataclass(frozen=True)
class Hierarchy:
    kind: str
    """`freezer`, `pids` (cgroup v1) or `v2`."""
    base: Path
    """`<own cgroup>/shipline` in that hierarchy: every step cgroup is below it."""
    top: Path
    """Where the hierarchy is mounted: a path of /proc/PID/cgroup is relative to it."""
    controller: str | None
    """Its controller's name in /proc/PID/cgroup (None: the v2 tree)."""


def _own_path(controller: str | None, pid: int | str = "self") -> str | None:
    """The cgroup of `pid` (this process by default) in the hierarchy of `controller` (None: the v2 tree), from /proc."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller is not None and controller in controllers.split(",")):
            return path
    return None


@cache
def hierarchy() -> Hierarchy | None:
    """The hierarchy step cgroups go in, or None (and a warning) when none is writable here."""
    for kind, mount, controller in (("freezer", "freezer", "freezer"), ("pids", "pids", "pids"), ("v2", "unified", None)):
        own = _own_path(controller)
        top = CGROUP_ROOT / mount if kind != "v2" or (CGROUP_ROOT / mount).is_dir() else CGROUP_ROOT
        if own is None or not (top / "cgroup.procs").exists():
            continue
        base = top / own.lstrip("/") / "shipline"
        try:
            base.mkdir(exist_ok=True)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError:
            continue
        return Hierarchy(kind, base, top, controller)
    log.warning(
        "no writable cgroup hierarchy (v1 freezer or pids, or cgroup v2) under %s: a step's processes are "
        "tracked by process group only, so one that calls setsid can outlive its step",
        CGROUP_ROOT,
    )
    return None


_spare: dict[int, list[Path]] = {}
"""Per run, its step cgroups found empty at their step's end, for its next steps: a cgroup's
mkdir and rmdir cost the kernel more than the step `true` itself (0.2 and 0.07 ms here).
Used from the engine's event loop only; `remove_run` removes them with the run's folder."""


class StepGroup:
    """The cgroup of one step: made (or taken from the run's spare ones) before the step
    starts; killed and removed when it ends, or kept for the run's next step when its
    step left nothing in it."""

    def __init__(self, path: Path, kind: str, run_id: int = 0) -> None:
        self.path = path
        self.kind = kind
        self.run_id = run_id

    @classmethod
    def create(cls, run_id: int, task: str, attempt: int, index: int) -> StepGroup | None:
        """An empty cgroup for this step of this engine; None where cgroups cannot be used.

        Named after the first step that used it (`TASK.ATTEMPT.STEP`); the run's later steps
        may get it again (`release`).
        """
        where = hierarchy()
        if where is None:
            return None
        if spare := _spare.get(run_id):
            return cls(spare.pop(), where.kind, run_id)
        path = _engine_dir(where.base, os.getpid()) / f"run-{run_id}" / f"{task}.{attempt}.{index}"
        existed = path.is_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot make the step's cgroup %s (%s): its processes are tracked by process group only", path, exc)
            return None
        group = cls(path, where.kind, run_id)
        if existed:
            group.kill()  # left at the same place by an earlier engine with our pid: start empty
        return group

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        return _pids(self.path)

    def signal(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL every process in the group, and wait (a bounded time) until it is empty."""
        _kill_tree(self.path, self.kind)

    def occupied(self) -> bool:
        """Some process is still in the group (or a group below it): `kill` has work to do.

        Cheap (a read of `cgroup.procs`), so a caller on an event loop can ask
        before handing the kill, which may wait, to a thread.
        """
        return any(_pids(Path(d)) for d, _, _ in os.walk(self.path))

    def release(self) -> bool:
        """At its step's end: when nothing is in the group, keep it for the run's next step and
        say True; False when a process or a group below it is left (then `kill` and `remove`).

        Two cheap looks, not a walk of the group: its folder's link count (2 + the groups
        below it, on cgroupfs) and its `cgroup.procs`.
        """
        try:
            if os.stat(self.path).st_nlink != 2 or _pids(self.path, strict=True):
                return False
        except OSError:
            return False
        _spare.setdefault(self.run_id, []).append(self.path)
        return True

    def remove(self) -> None:
        """Remove the (killed) group.

        Its run's folder stays until the run ends (`remove_run`), and the engine's
        while the engine lives: a cgroup's mkdir and rmdir cost the kernel more
        than the step `true` itself.  Both go when the process exits, or, if it
        was killed, with the recovery of its runs.
        """
        with suppress(OSError):
            self.path.rmdir()


def step_group_of(pid: int) -> Path | None:
    """The step cgroup (of any engine's) that `pid` is in; None when it is in none.

    For the step server, which runs a `shipline step` on behalf of a step's
    process (`pid`) in a copy that joins that group: it is then killed with the
    step, like the step's own children.  The group's parent is the run's folder.
    """
    where = hierarchy()
    if where is None:
        return None
    path = _own_path(where.controller, pid)
    if path is None:
        return None
    group = where.top / path.lstrip("/")
    if not group.is_relative_to(where.base) or group == where.base:
        return None
    return group


def own_group() -> Path | None:
    """The cgroup this process is in, in the hierarchy steps use (where a copy goes back to between calls)."""
    where = hierarchy()
    if where is None:
        return None
    path = _own_path(where.controller)
    return None if path is None else where.top / path.lstrip("/")


def move_into(group: Path) -> bool:
    """Move this process (all its threads) into `group`; False when the kernel refuses."""
    try:
        fd = os.open(group / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_run(run_id: int) -> None:
    """Remove the run's spare step cgroups and the (empty) folder of its step cgroups, at the run's end."""
    for path in _spare.pop(run_id, ()):
        with suppress(OSError):
            path.rmdir()
    where = hierarchy()
    if where is not None:
        with suppress(OSError):
            (_engine_dir(where.base, os.getpid()) / f"run-{run_id}").rmdir()


@cache
def _engine_dir(base: Path, pid: int) -> Path:
    """`base/<pid>-<start time>`: this engine's folder, named once per process (a forked child is
    another engine) and removed, when empty, as the process exits."""
    path = base / engine_key(pid, process_start_time(pid) or "0")
    atexit.register(_remove_if_empty, path, pid)
    return path


def _remove_if_empty(path: Path, pid: int) -> None:
    if os.getpid() != pid:  # a forked child that inherited the handler
        return
    for run_id in list(_spare):  # runs that ended without `remove_run` (their engine stopped first)
        remove_run(run_id)
    with suppress(OSError):
        for run in path.iterdir():
            with suppress(OSError):
                run.rmdir()
        path.rmdir()


def _pids(path: Path, *, strict: bool = False) -> list[int]:
    """The pids in the group (none when it cannot be read, or with `strict`, an OSError).

    Read with the file's descriptor alone: each step's end reads its group's, and a text
    file object (a buffer, a decoder) cost more than the open and read themselves."""
    try:
        fd = os.open(f"{path}/cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, 65536)]
            while chunks[-1]:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
    except OSError:
        if strict:
            raise
        return []
    return [int(p) for p in b"".join(chunks).split()]


def _kill_tree(path: Path, kind: str) -> None:
    """Kill every process in `path` and its child cgroups; freeze first where the freezer allows."""
    groups = [Path(d) for d, _, _ in os.walk(path)] if path.is_dir() else []
    if not any(_pids(g) for g in groups):
        return  # the usual case at a step's end: nothing to freeze
    frozen = kind == "freezer" and _freeze(path, "FROZEN")
    deadline = time.monotonic() + KILL_SECONDS
    try:
        while True:
            alive = [pid for g in groups for pid in _pids(g)]
            if not alive:
                return
            if frozen and not _is_frozen(path):
                _freeze(path, "FROZEN")  # a process moved in while it froze: freeze again
            for pid in alive:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if frozen:
                _freeze(path, "THAWED")  # killed frozen processes die once thawed
                frozen = False
            if time.monotonic() > deadline:
                log.warning("processes %s in %s did not die within %ss", alive, path, KILL_SECONDS)
                return
            time.sleep(0.005)
    finally:
        if frozen:
            _freeze(path, "THAWED")


def _freeze(path: Path, state: str) -> bool:
    try:
        (path / "freezer.state").write_text(state)
    except OSError:
        return False
    if state == "FROZEN":
        for _ in range(200):
            if _is_frozen(path):
                break
            time.sleep(0.002)
    return True


def _is_frozen(path: Path) -> bool:
    try:
        return (path / "freezer.state").read_text().strip() == "FROZEN"
    except OSError:
        return False


def kill_run(owner_pid: int, owner_start_time: str, run_id: int) -> int:
    """Kill what the steps of `run_id` under a (dead) engine left, remove their cgroups; how many processes there were."""
    where = hierarchy()
    if where is None:
        return 0
    run_dir = where.base / engine_key(owner_pid, owner_start_time) / f"run-{run_id}"
    if not run_dir.is_dir():
        return 0
    count = sum(len(_pids(Path(d))) for d, _, _ in os.walk(run_dir))
    _kill_tree(run_dir, where.kind)
    for d, _, _ in sorted(os.walk(run_dir), key=lambda entry: -len(entry[0])):
        with suppress(OSError):
            Path(d).rmdir()
    with suppress(OSError):
        run_dir.parent.rmdir()
    return count
