"""Fixtures for server tests: a live server with an operator and a read-only token."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serverkit import Live, start_server

from shipline.settings import Settings
from shipline.store.repositories import Role


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test whose fixture can say what the server saw (`failure_report()`) gets it under its traceback:
    a timeout on a busy CI machine is read from the report, not guessed at."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        explain = getattr(value, "failure_report", None)
        if callable(explain):
            try:
                text = explain()
            except Exception as exc:  # the report must not hide the failure it explains
                text = f"(no report: {exc!r})"
            report.sections.append((f"what {name} saw", text))


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
