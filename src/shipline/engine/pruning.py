"""Pruning: the runs that are over and old go, with their workspaces and logs.

Nothing else ever removes a run, so without this `$SHIPLINE_HOME` only grows.
`choose` is the policy (pure: which runs), `prunable` applies it to the
store, and `prune` removes each run's files and then its record, one run at a
time: a run whose files could not be removed keeps its record and is reported,
never lost silently.  `leftovers` finds the old folders of runs the store has no
record of (an earlier store's, set aside under `leftovers/`, or left when a
record went some other way); `prune` removes those too.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from shipline.exceptions import Conflict, ShiplineError
from shipline.settings import Settings
from shipline.store.sql import SqlStore


class FinishedRun(NamedTuple):
    id: int
    pipeline: str
    finished_at: datetime


@dataclass(frozen=True)
class Failure:
    run_id: int
    error: str


@dataclass
class Outcome:
    """What `prune` removed, or with `dry_run` would have removed."""

    dry_run: bool
    runs: list[FinishedRun] = field(default_factory=list)
    bytes_freed: int = 0
    failed: list[Failure] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    """Folders of runs without a record, removed (their failures are in `failed`, with run id 0)."""


def choose(finished: Iterable[FinishedRun], *, before: datetime, keep: int) -> list[FinishedRun]:
    """The runs that finished before `before`, except the newest `keep` of each pipeline; oldest first."""
    seen: Counter[str] = Counter()
    chosen = []
    for run in sorted(finished, key=lambda r: (r.finished_at, r.id), reverse=True):
        seen[run.pipeline] += 1
        if seen[run.pipeline] > keep and run.finished_at < before:
            chosen.append(run)
    return chosen[::-1]


def prunable(
    store: SqlStore,
    settings: Settings,
    *,
    before: datetime,
    keep: int,
    pipeline: str | None = None,
    workspaces_only: bool = False,
) -> list[FinishedRun]:
    """The runs `prune` would take: with `workspaces_only`, only those that still have a workspace."""
    chosen = choose((FinishedRun(*row) for row in store.finished_runs(pipeline)), before=before, keep=keep)
    if workspaces_only:
        chosen = [run for run in chosen if os.path.lexists(settings.workspaces / str(run.id))]
    return chosen


def prune(
    store: SqlStore,
    settings: Settings,
    chosen: Iterable[FinishedRun],
    *,
    leftover: Iterable[Path] = (),
    workspaces_only: bool = False,
    dry_run: bool = False,
) -> Outcome:
    """Remove each run's workspace and step home, then (unless `workspaces_only`) its logs, then its record.

    A run whose files or record could not be removed is reported in `failed`
    and the others go on.  Bytes count the directories removed whole, a failed
    run's included.
    """
    outcome = Outcome(dry_run=dry_run)
    scratch = [settings.workspaces, settings.step_homes]
    roots = scratch if workspaces_only else [*scratch, settings.logs]
    for run in chosen:
        freed = 0
        try:
            for root in roots:
                freed += _remove(root, run.id, dry_run)
            if not (workspaces_only or dry_run):
                store.delete_runs([run.id])
        except (OSError, ShiplineError) as exc:
            outcome.failed.append(Failure(run.id, str(exc)))
        else:
            outcome.runs.append(run)
        outcome.bytes_freed += freed
    for path in leftover:
        try:
            outcome.bytes_freed += _remove(path.parent, path.name, dry_run)
        except OSError as exc:
            outcome.failed.append(Failure(0, f"{path}: {exc}"))
        except ShiplineError as exc:
            outcome.failed.append(Failure(0, str(exc)))
        else:
            outcome.leftovers.append(path)
    return outcome


def leftovers(store: SqlStore, settings: Settings, *, before: datetime, workspaces_only: bool = False) -> list[Path]:
    """Folders of runs the store has no record of, last changed before `before`, oldest first:
    `workspaces/N`, `step-homes/N` (and unless `workspaces_only`, `logs/N`) of a run whose record is
    gone, and what `set_aside` moved under `leftovers/`.  A run's record is written before any of
    its folders, so a folder without one is not a run's that is starting."""
    scratch = [settings.workspaces, settings.step_homes]
    roots = scratch if workspaces_only else [*scratch, settings.logs]
    found: list[tuple[float, Path]] = []
    numbered: dict[int, list[tuple[float, Path]]] = {}
    cutoff = before.timestamp()
    for root in roots:
        for entry in _entries(root):
            if entry.name.isdigit() and (changed := _changed(entry)) < cutoff:
                numbered.setdefault(int(entry.name), []).append((changed, Path(entry.path)))
    for run_id in numbered.keys() - store.known_runs(sorted(numbered)):
        found += numbered[run_id]
    if not workspaces_only:  # what was set aside holds its logs too
        found += [(changed, Path(e.path)) for e in _entries(settings.home / LEFTOVERS) if (changed := _changed(e)) < cutoff]
    return [path for _, path in sorted(found)]


def _entries(root: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(root) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _changed(entry: os.DirEntry[str]) -> float:
    """When the entry itself last changed; one gone meanwhile counts as changed now (it is not taken)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def _remove(root: Path, name: int | str, dry_run: bool) -> int:
    """Remove `root/NAME` and return the bytes its files held; a directory already gone holds none."""
    path = root / str(name)
    if not os.path.lexists(path):
        return 0
    # The name is ours, but the entry itself may be a link to anywhere: never follow one.
    if path.is_symlink() or path.resolve().parent != root.resolve():
        raise Conflict(f"{path} is a link to {path.resolve()}: left alone, remove it by hand if that is safe")
    if not path.is_dir():
        size = os.lstat(path).st_size
        if not dry_run:
            path.unlink()
        return size
    size = _measure(path, make_writable=not dry_run)
    if not dry_run:
        shutil.rmtree(path)
    return size


def _measure(path: Path, *, make_writable: bool) -> int:
    """Total size of the files under `path`, links not followed.

    Steps may leave read-only directories (Go's module cache is one), whose
    entries rmtree cannot unlink: with `make_writable` they are opened up first.
    """
    total = 0
    for directory, _subdirectories, filenames in os.walk(path):
        if make_writable:
            mode = os.lstat(directory).st_mode
            if mode & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(directory, mode | stat.S_IRWXU)
        for name in filenames:
            total += os.lstat(os.path.join(directory, name)).st_size
    return total


LEFTOVERS = "leftovers"
"""Under `$SHIPLINE_HOME`: files found under a new run's id, set aside (see `set_aside`)."""


def set_aside(settings: Settings, run_id: int) -> Path | None:
    """Make sure a new run starts with no files: what is already under its id is moved away.

    A run id is new when the store gives it, and a run is started once, so files
    under its id when its driver starts (before it makes any) belong to an
    earlier store (a database deleted and made anew, or restored from an older
    copy): its logs must not be appended to, its workspace not reused.  They go
    to `$SHIPLINE_HOME/leftovers/run-ID-TIME/` for an operator to look at or remove.
    Not where the run is made: an engine may claim and start it the moment it is
    stored, and the run's own first folders were then moved away from under it.
    """
    where: Path | None = None
    for root in (settings.logs, settings.workspaces, settings.step_homes):
        path = root / str(run_id)
        if not os.path.lexists(path):
            continue
        if where is None:
            stamp = datetime.now().strftime("%Y%m%dT%H%M%S.%f")
            where = settings.home / LEFTOVERS / f"run-{run_id}-{stamp}"
            where.mkdir(parents=True, mode=0o700)
        os.rename(path, where / root.name)
    return where
