"""Fixtures shared by the whole suite: a fresh SHIPLINE_HOME, stores, a PostgreSQL server."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunRecord
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.exceptions import ToolError
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings, load_settings
from shipline.store.sql import SqlStore
from shipline.testbed.postgres import ThrowawayPostgres

pytest_plugins = ["shipline.testbed.fixtures"]


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
    # Pipeline files registered over HTTP live beside the home (`pipeline_file` writes them there).
    return load_settings({"SHIPLINE_HOME": str(home)}).model_copy(
        update={"cancel_poll_seconds": 0.1, "kill_grace_seconds": 1.0, "pipelines_root": home.parent / "pipelines"}
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlStore]:
    s = SqlStore(settings.database)
    yield s
    s.close()


@pytest.fixture
def engine(settings: Settings, store: SqlStore) -> Engine:
    return Engine(settings, store, LocalExecutor.from_settings(settings), EventBus())


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a dedented YAML file under tmp_path and return its path."""

    def _write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


@pytest.fixture
def run_pipeline(engine: Engine, write: Callable[..., Path]) -> RunFn:
    """Load a definition (text), run it in-process to the end, return the record."""

    def _run(text: str, params: dict[str, str] | None = None) -> RunRecord:
        pipeline = load_pipeline(write(text))
        run_id = engine.submit(pipeline, params or {})
        return asyncio.run(engine.drive(run_id))

    return _run


# --- PostgreSQL, from Debian's package, one server per session ------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    try:
        server = ThrowawayPostgres().start()
    except ToolError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_server.create_database()
