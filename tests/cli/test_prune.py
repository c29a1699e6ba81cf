"""`shipline runs prune`: old runs go with their workspaces and logs; nothing else does.

Runs are real (run in-process on the test's SHIPLINE_HOME), aged by moving
their `finished_at` back in the store; pruning is the real command.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import RunFn, shipline
from sqlalchemy import func, select

from shipline.domain.runs import RunRecord
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.repositories import ServerStore
from shipline.store.secrets import Keyring
from shipline.store.sql import SqlStore
from shipline.store.tables import runs, step_runs, task_runs

BLOB = 100_000


def pipeline(name: str) -> str:
    return f"""
    name: {name}
    tasks:
      - name: build
        steps: [{{run: 'head -c {BLOB} /dev/zero > blob; echo built'}}]
    """


def finished(run_pipeline: RunFn, store: SqlStore, name: str, days_ago: float) -> int:
    """A real run of `name` that finished `days_ago` days ago."""
    record = run_pipeline(pipeline(name))
    assert record.status == "succeeded", record
    store.update_run(record.id, finished_at=datetime.now(UTC) - timedelta(days=days_ago))
    return record.id


def rows(store: SqlStore, run_id: int) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table).where(column == run_id)).scalar_one()
            for table, column in ((runs, runs.c.id), (task_runs, task_runs.c.run_id), (step_runs, step_runs.c.run_id))
        }


def prune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return shipline("runs", "prune", *args, env=env)


def prune_json(*args: str) -> dict[str, object]:
    done = prune("--json", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_old_runs_go_with_workspace_logs_and_records(
    home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn
) -> None:
    old = finished(run_pipeline, store, "app", days_ago=40)
    gone_already = finished(run_pipeline, store, "app", days_ago=35)
    recent = finished(run_pipeline, store, "app", days_ago=1)
    for run_id in (old, recent):
        assert (settings.workspaces / str(run_id) / "blob").stat().st_size == BLOB
        assert (settings.logs / str(run_id)).is_dir() and (settings.step_homes / str(run_id)).is_dir()
    (settings.workspaces / str(gone_already) / "blob").unlink()
    (settings.workspaces / str(gone_already)).rmdir()

    done = prune("--keep", "0")

    assert done.returncode == 0, done.stderr
    assert f"removed run {old}  app  finished " in done.stdout
    assert done.stdout.splitlines()[-1].startswith("2 runs, 9") and "KiB freed" in done.stdout
    for run_id in (old, gone_already):
        assert not (settings.workspaces / str(run_id)).exists()
        assert not (settings.logs / str(run_id)).exists() and not (settings.step_homes / str(run_id)).exists()
        assert rows(store, run_id) == {"runs": 0, "task_runs": 0, "step_runs": 0}
        shown = shipline("runs", "show", str(run_id))
        assert shown.returncode == 2 and f"no run {run_id}" in shown.stderr
    assert (settings.workspaces / str(recent) / "blob").exists() and (settings.logs / str(recent)).is_dir()
    assert rows(store, recent) == {"runs": 1, "task_runs": 1, "step_runs": 1}


def test_queued_running_recent_and_kept_runs_stay(
    home: Path, settings: Settings, store: SqlStore, engine: Engine, run_pipeline: RunFn, write: Callable[..., Path]
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=90)
    queued = engine.submit(load_pipeline(write(pipeline("app"), "queued.yaml")), {})
    store.update_run(queued, finished_at=long_ago)  # a stray date must not make an active run prunable
    running = finished(run_pipeline, store, "app", days_ago=90)
    store.update_run(running, status="running")
    nightly = [finished(run_pipeline, store, "nightly", days_ago=d) for d in (60, 50, 40)]
    other = finished(run_pipeline, store, "other", days_ago=60)
    recent = finished(run_pipeline, store, "nightly", days_ago=0.5)

    result = prune_json("--older-than", "12h", "--keep", "2", "--pipeline", "nightly")

    assert result["runs"] == [nightly[0], nightly[1]], "the newest 2 of nightly (one of them recent) are kept"
    kept = [queued, running, nightly[2], other, recent]
    assert [rows(store, run_id)["runs"] for run_id in kept] == [1, 1, 1, 1, 1]
    assert (settings.workspaces / str(running) / "blob").exists()
    assert (settings.workspaces / str(other) / "blob").exists()
    assert prune_json("--older-than", "1d", "--keep", "0")["runs"] == [other, nightly[2]], "queued and running stay"


def test_workspaces_only_keeps_records_and_logs(home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn) -> None:
    old = finished(run_pipeline, store, "app", days_ago=40)

    result = prune_json("--workspaces-only", "--keep", "0")

    assert result["runs"] == [old] and isinstance(result["bytes_freed"], int) and result["bytes_freed"] >= BLOB
    assert not (settings.workspaces / str(old)).exists() and not (settings.step_homes / str(old)).exists()
    assert rows(store, old) == {"runs": 1, "task_runs": 1, "step_runs": 1}
    logs = shipline("runs", "logs", str(old))
    assert logs.returncode == 0 and "built" in logs.stdout.splitlines()
    assert prune_json("--workspaces-only", "--keep", "0")["runs"] == [], "a run whose workspace is gone is not counted again"


def test_dry_run_removes_nothing_and_predicts_the_real_run(
    home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn
) -> None:
    old = finished(run_pipeline, store, "app", days_ago=40)

    done = prune("--dry-run", "--keep", "0")
    assert done.returncode == 0, done.stderr
    assert f"would remove run {old}  app" in done.stdout
    assert "1 run, " in done.stdout and "would be freed, nothing removed: dry run" in done.stdout
    dry = prune_json("--dry-run", "--keep", "0")
    assert (settings.workspaces / str(old) / "blob").exists() and (settings.logs / str(old)).is_dir()
    assert rows(store, old)["runs"] == 1

    real = prune_json("--keep", "0")
    assert dry == {"runs": [old], "leftovers": [], "bytes_freed": real["bytes_freed"], "dry_run": True, "failed": []}
    assert real == {"runs": [old], "leftovers": [], "bytes_freed": real["bytes_freed"], "dry_run": False, "failed": []}


def age(path: Path, days: float) -> Path:
    """Make a folder look last changed `days` ago."""
    when = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def test_old_folders_of_runs_without_a_record_go_too(
    home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn
) -> None:
    """A record removed some other way, or an earlier store's files set aside, leave folders no run
    points at: nothing else would ever remove them."""
    kept = finished(run_pipeline, store, "app", days_ago=40)  # its folders are old too, but it has a record
    orphan, fresh = finished(run_pipeline, store, "app", days_ago=40), finished(run_pipeline, store, "app", days_ago=40)
    assert store.delete_runs([orphan, fresh]) == 2
    folders = [root / str(orphan) for root in (settings.workspaces, settings.step_homes, settings.logs)]
    for path in folders + [root / str(kept) for root in (settings.workspaces, settings.step_homes, settings.logs)]:
        age(path, 40)
    set_aside = settings.home / "leftovers" / "run-7-20260101T000000.000000"
    (set_aside / "logs").mkdir(parents=True)
    (set_aside / "logs" / "build.1.0.log").write_text("an earlier store's log\n")
    age(set_aside, 40)
    (settings.home / "leftovers" / "run-8-20261130T000000.000000").mkdir()  # set aside today

    assert prune_json("--keep", "1", "--pipeline", "app")["leftovers"] == [], "--pipeline: only that pipeline's runs"
    scratch_only = prune_json("--keep", "1", "--workspaces-only")
    assert scratch_only["leftovers"] == [str(p) for p in folders[:2]], "--workspaces-only keeps logs"
    assert folders[2].is_dir() and set_aside.is_dir()

    done = prune("--keep", "1")

    assert done.returncode == 0, done.stderr
    assert f"removed {folders[2]}  (no run record)" in done.stdout and f"removed {set_aside}  (no run record)" in done.stdout
    assert "0 runs, 2 folders without a record, " in done.stdout
    assert not any(path.exists() for path in folders) and not set_aside.exists()
    assert (settings.workspaces / str(fresh) / "blob").exists(), "folders changed lately stay, record or not"
    assert (settings.home / "leftovers" / "run-8-20261130T000000.000000").is_dir()
    assert (settings.workspaces / str(kept) / "blob").exists() and rows(store, kept)["runs"] == 1


def test_a_link_is_never_followed_and_the_failure_is_reported(
    home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn, tmp_path: Path
) -> None:
    trap, fine = finished(run_pipeline, store, "app", days_ago=50), finished(run_pipeline, store, "app", days_ago=40)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    workspace = settings.workspaces / str(trap)
    (workspace / "blob").unlink()
    workspace.rmdir()
    workspace.symlink_to(outside)

    done = prune("--json", "--keep", "0")

    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["runs"] == [fine], "the other runs are pruned all the same"
    [failure] = result["failed"]
    assert failure["id"] == trap and f"{workspace} is a link to {outside}" in failure["error"]
    assert f"run {trap}: not removed: {workspace} is a link" in done.stderr
    assert (outside / "keep.txt").read_text() == "mine"
    assert rows(store, trap)["runs"] == 1 and (settings.logs / str(trap)).is_dir(), "a run not cleaned keeps its record and logs"


@pytest.mark.parametrize("value", ["7x", "d", "-1d", "1.5h", "7 days", "999999999999d"])
def test_a_bad_duration_is_a_usage_error(home: Path, value: str) -> None:
    done = prune("--older-than", value)
    assert done.returncode == 2
    assert "Invalid value for '--older-than'" in done.stderr and "Traceback" not in done.stderr
    assert "7d, 12h, 30m or 90s" in done.stderr or "shorter duration" in done.stderr


def test_on_a_terminal_it_asks_first(home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn) -> None:
    old = finished(run_pipeline, store, "app", days_ago=40)
    command = f"{sys.executable} -m shipline runs prune --keep 0"
    done = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TERM": "dumb"},
    )
    assert "Remove the records, workspaces and logs of 1 run? [y/N]" in done.stdout
    assert "Aborted" in done.stdout
    assert rows(store, old)["runs"] == 1 and (settings.workspaces / str(old)).is_dir()


@pytest.mark.postgres
def test_postgresql_deletes_runs_with_their_tasks_and_steps(
    home: Path, settings: Settings, postgres_url: str, write: Callable[..., Path]
) -> None:
    pg_settings = settings.model_copy(update={"database_url": postgres_url})
    store = SqlStore(postgres_url)
    try:
        engine = Engine(pg_settings, store, LocalExecutor(1.0), EventBus())

        def run_here(text: str) -> RunRecord:
            return asyncio.run(engine.drive(engine.submit(load_pipeline(write(text)), {})))

        old, recent = (finished(run_here, store, "app", days_ago=d) for d in (40, 1))
        done = prune("--json", "--keep", "0", env={"SHIPLINE_DATABASE_URL": postgres_url})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["runs"] == [old]
        assert rows(store, old) == {"runs": 0, "task_runs": 0, "step_runs": 0}
        assert rows(store, recent) == {"runs": 1, "task_runs": 1, "step_runs": 1}
        assert not (settings.workspaces / str(old)).exists() and not (settings.logs / str(old)).exists()
    finally:
        store.close()


def test_a_rerun_whose_first_run_was_pruned_says_so(home: Path, store: SqlStore, run_pipeline: RunFn) -> None:
    first = finished(run_pipeline, store, "app", days_ago=40)
    again = shipline("runs", "rerun", str(first))
    assert again.returncode == 0, again.stderr
    rerun = max(r.id for r in store.list_runs())
    assert f"rerun of    {first}\n" in shipline("runs", "show", str(rerun)).stdout

    assert prune("--keep", "0").returncode == 0

    shown = shipline("runs", "show", str(rerun))
    assert shown.returncode == 0 and f"rerun of    {first}  (pruned)" in shown.stdout


def test_deliveries_say_which_of_their_runs_were_pruned(
    home: Path, settings: Settings, store: SqlStore, run_pipeline: RunFn
) -> None:
    old, recent = finished(run_pipeline, store, "app", days_ago=40), finished(run_pipeline, store, "app", days_ago=1)
    state = ServerStore(store, Keyring.from_settings(settings))
    state.claim_delivery("gitea", "d-1", None, "push", "test", lambda *_: False)
    state.finish_delivery("gitea", "d-1", "started", [old, recent])

    assert prune("--older-than", "30d", "--keep", "0").returncode == 0

    listed = shipline("repos", "deliveries")
    assert listed.returncode == 0, listed.stderr
    assert f"runs: {old} (pruned), {recent}  d-1" in listed.stdout
    (delivery,) = json.loads(shipline("repos", "deliveries", "--json").stdout)
    assert (delivery["run_ids"], delivery["pruned_run_ids"]) == ([old, recent], [old])
