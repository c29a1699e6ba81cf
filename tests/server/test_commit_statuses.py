"""Commit statuses from the outbox, on the testbed's real Gitea: nothing lost while the forge is away."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from shipline.engine.loading import load_pipeline
from shipline.engine.outbox import OutboxReader
from shipline.engine.running import Engine
from shipline.exceptions import ForgeError
from shipline.integrations.forges.gitea import GiteaForge
from shipline.server.notifying import CONSUMER, CommitStatuses
from shipline.settings import Settings
from shipline.store.repositories import ServerStore
from shipline.store.sql import SqlStore
from shipline.testbed.fixtures import GiteaClient, GiteaRepo

pytestmark = pytest.mark.testbed

CHECK = """
name: check
tasks:
  - name: test
    steps: [{run: 'echo "summary=passed: 3 tests" >> "$SHIPLINE_OUTPUT"'}]
    results: [summary]
results:
  summary: ${{ tasks.test.results.summary }}
"""


def first_commit(repo: GiteaRepo, tmp_path: Path) -> str:
    work = tmp_path / "work"
    run = lambda *a: subprocess.run(  # noqa: E731
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *a],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    work.mkdir()
    run("init", "-b", "main")
    (work / "README.md").write_text("hi\n")
    run("add", ".")
    run("commit", "-m", "first")
    run("push", repo.clone_url, "main")
    return run("rev-parse", "HEAD")


def test_statuses_wait_for_the_forge_and_land_in_order(
    settings: Settings,
    store: SqlStore,
    engine: Engine,
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    sha = first_commit(gitea_repo, tmp_path)
    settings = settings.model_copy(
        update={
            "gitea_url": gitea.url,
            "gitea_token": SecretStr(gitea.token),
            "public_url": "https://ci.example",
        }
    )
    state = ServerStore(store, engine.secrets.keyring)
    repo = state.add_repository(name="svc", url=gitea_repo.html_url, forge="gitea", secret="s", pipeline="")

    def down(kind: str) -> GiteaForge:
        forge = GiteaForge("http://127.0.0.1:9", gitea.token)
        forge.http.sleep = lambda _: None
        return forge

    away = CommitStatuses(settings, store, state, owner="server-1", forge_for=down)
    reader = OutboxReader(store, CONSUMER, "server-1")
    reader.poll(away.handle)  # the cursor starts here

    trigger = {"event": "pull_request", "repository_id": repo.id, "sha": sha, "pr_number": 1, "pr_action": "opened"}
    run_id = engine.submit(load_pipeline(write(CHECK)), {}, trigger=trigger)
    asyncio.run(engine.drive(run_id))

    with pytest.raises(ForgeError):
        reader.poll(away.handle)  # Gitea unreachable: the cursor stays before the run's first transition
    assert gitea.request("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}/statuses/{sha}") == []

    back = CommitStatuses(settings, store, state, owner="server-1")
    while reader.poll(back.handle):
        pass
    seen = sorted(gitea.request("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}/statuses/{sha}"), key=lambda s: s["id"])
    assert [(s["status"], s["description"]) for s in seen] == [
        ("pending", f"run {run_id} queued"),
        ("pending", f"run {run_id} running"),
        ("success", "passed: 3 tests"),
    ]
    assert {(s["context"], s["target_url"]) for s in seen} == {("shipline/check", f"https://ci.example/#/runs/{run_id}")}
    assert reader.poll(back.handle) == 0  # each transition handled once
    reader.close()
