"""A real `git push` to the testbed's Gitea sends a real webhook that starts a run."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serverkit import BUILD, Live

from shipline.testbed.fixtures import GiteaClient, GiteaRepo

pytestmark = pytest.mark.testbed


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_gitea_push_starts_a_run(
    live: Live, gitea: GiteaClient, gitea_repo: GiteaRepo, pipeline_file: Callable[..., Path], tmp_path: Path
) -> None:
    secret = "gitea-hook-secret"
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "gitea-service",
                "url": gitea_repo.html_url,
                "forge": "gitea",
                "secret": secret,
                "pipeline": str(pipeline_file(BUILD)),
            },
        )
        assert r.status_code == 201, r.text
    gitea.request(
        "POST",
        f"/repos/{gitea_repo.owner}/{gitea_repo.name}/hooks",
        {
            "type": "gitea",
            "active": True,
            "events": ["push"],
            "config": {"url": f"{live.url}/hooks/gitea", "content_type": "json", "secret": secret},
        },
    )
    work = tmp_path / "work"
    git("init", "-b", "main", str(work), cwd=tmp_path)
    (work / "README.md").write_text("hello from the testbed\n")
    git("add", "README.md", cwd=work)
    git("commit", "-m", "first commit", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    git("push", gitea_repo.clone_url, "main", cwd=work)

    deadline = time.monotonic() + 60
    while True:
        found = httpx.get(live.url + "/api/v1/runs").json()["runs"]
        if found:
            break
        assert time.monotonic() < deadline, f"no run; deliveries: {live.server.state.list_deliveries()}"
        time.sleep(0.2)
    record = live.wait_run(found[0]["id"], {"succeeded", "failed"})
    assert record["status"] == "succeeded"
    assert record["params"]["branch"] == "main" and record["params"]["revision"] == sha
    assert record["trigger"]["forge"] == "gitea"
    assert record["trigger"]["repository"] == f"{gitea_repo.owner}/{gitea_repo.name}"
