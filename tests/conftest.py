"""Fixtures shared by the whole suite: a fresh SHIPLINE_HOME, stores, a PostgreSQL server."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shipline.domain.runs import RunRecord
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings, load_settings
from shipline.store.sql import SqlStore


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SHIPLINE_HOME, also set in the environment for CLI subprocesses."""
    path = tmp_path / "home"
    monkeypatch.setenv("SHIPLINE_HOME", str(path))
    monkeypatch.delenv("SHIPLINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("SHIPLINE_CONFIG", raising=False)
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings({"SHIPLINE_HOME": str(home)}).model_copy(update={"cancel_poll_seconds": 0.1, "kill_grace_seconds": 1.0})


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlStore]:
    s = SqlStore(settings.database)
    yield s
    s.close()


@pytest.fixture
def engine(settings: Settings, store: SqlStore) -> Engine:
    return Engine(settings, store, LocalExecutor(settings.kill_grace_seconds), EventBus())


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a dedented YAML file under tmp_path and return its path."""

    def _write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


from helpers import RunFn  # noqa: E402


@pytest.fixture
def run_pipeline(engine: Engine, write: Callable[..., Path]) -> RunFn:
    """Load a definition (text), run it in-process to the end, return the record."""

    def _run(text: str, params: dict[str, str] | None = None) -> RunRecord:
        pipeline = load_pipeline(write(text))
        run_id = engine.submit(pipeline, params or {})
        return asyncio.run(engine.drive(run_id))

    return _run


# --- PostgreSQL, from Debian's package, one server per session ------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL on 127.0.0.1; yields an admin URL.  Runs as the `postgres` user."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail("PostgreSQL is not installed: run `shipline testbed build` (it installs Debian's postgresql)")
    bindir = Path(bins[-1]).parent
    # Not under pytest's tmp dir: its parents are private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="shipline-pg-"))
    data = root / "data"
    as_pg: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*args: str) -> None:
        done = subprocess.run([*as_pg, *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "shipline", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300")
    try:
        yield f"postgresql+psycopg://shipline@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"
