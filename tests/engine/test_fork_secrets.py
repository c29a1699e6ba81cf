"""A run of a pull request from a fork (its trigger says `secrets: withheld`) gets no secrets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from shipline.domain.runs import RunStatus, TaskStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore

FORK = {"event": "pull_request", "fork": True, "secrets": "withheld"}


def test_a_stored_secret_fails_the_run_before_any_step(engine: Engine, write: Callable[..., Path], tmp_path: Path) -> None:
    engine.secrets.set("deploy-key", "s3cr3t-value")
    marker = tmp_path / "ran"
    pipeline = load_pipeline(
        write(f"""
        name: deploy
        tasks:
          - name: push
            env: {{KEY: "${{{{ secrets.deploy-key }}}}"}}
            steps: [{{run: "touch {marker}"}}]
    """)
    )
    record = asyncio.run(engine.drive(engine.submit(pipeline, {}, trigger=FORK)))
    assert record.status is RunStatus.FAILED
    assert "pull request from a fork" in record.message and "deploy-key" in record.message
    assert "s3cr3t-value" not in record.message
    assert record.tasks[0].status is TaskStatus.SKIPPED and not marker.exists()
    # The same pipeline from a branch of the repository itself gets its secret.
    same = asyncio.run(engine.drive(engine.submit(pipeline, {}, trigger={"event": "pull_request"})))
    assert same.status is RunStatus.SUCCEEDED and marker.exists()


def test_builtin_git_credentials_are_an_empty_file(
    settings: Settings, store: SqlStore, write: Callable[..., Path], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"gitea_url": "http://127.0.0.1:3000", "gitea_token": SecretStr("tok-123456")})
    engine = Engine(settings, store, LocalExecutor(settings.kill_grace_seconds), EventBus())
    seen = tmp_path / "creds"
    pipeline = load_pipeline(
        write(f"""
        name: clone
        tasks:
          - name: clone
            env: {{CREDS: "${{{{ secret_files.git-credentials }}}}"}}
            steps: [{{run: 'cat "$CREDS" > {seen}'}}]
    """)
    )
    record = asyncio.run(engine.drive(engine.submit(pipeline, {}, trigger=FORK)))
    assert record.status is RunStatus.SUCCEEDED, record.message
    assert seen.read_text() == ""
    trusted = asyncio.run(engine.drive(engine.submit(pipeline, {}, trigger={"event": "push"})))
    assert trusted.status is RunStatus.SUCCEEDED and "tok-123456" in seen.read_text()
