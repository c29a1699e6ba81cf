"""Fixtures for server tests: a live server with an operator and a read-only token."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serverkit import Live, start_server

from shipline.settings import Settings
from shipline.store.repositories import Role


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    settings = settings.model_copy(update={"queue_poll_seconds": 0.05, "poll_tick_seconds": 0.2})
    uv, thread, app_server, url = start_server(settings)
    _, operator = app_server.state.create_token("tests", Role.OPERATOR)
    _, read = app_server.state.create_token("viewer", Role.READ)
    try:
        yield Live(url, app_server, operator, read)
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Callable[..., Path]:
    def _make(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / "pipelines" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _make
