"""The poller notices a commit pushed to a bare repository (no webhook, no clone)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from serverkit import BUILD, Live


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


def runs(live: Live) -> list[dict[str, object]]:
    result: list[dict[str, object]] = httpx.get(live.url + "/api/v1/runs").json()["runs"]
    return result


def test_poller_picks_up_a_pushed_commit(live: Live, pipeline_file: Callable[..., Path], tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    git("init", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "polled",
                "url": str(bare),
                "forge": "git",
                "pipeline": str(pipeline_file(BUILD)),
                "poll_seconds": 1,
            },
        )
        assert r.status_code == 201, r.text
    # Wait for the first look (the baseline), which starts nothing.
    deadline = time.monotonic() + 30
    while live.server.state.load_refs(r.json()["repository"]["id"]) is None:
        assert time.monotonic() < deadline, "the poller never looked at the repository"
        time.sleep(0.1)
    assert runs(live) == []

    work = tmp_path / "work"
    git("init", "-b", "main", str(work), cwd=tmp_path)
    (work / "README.md").write_text("hello\n")
    git("add", "README.md", cwd=work)
    git("commit", "-m", "first", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    git("push", str(bare), "main", cwd=work)

    deadline = time.monotonic() + 30
    while not runs(live):
        assert time.monotonic() < deadline, "no run started after the push"
        time.sleep(0.1)
    (run,) = runs(live)
    record = live.wait_run(int(str(run["id"])), {"succeeded", "failed"})
    assert record["status"] == "succeeded"
    assert record["params"] == {"branch": "main", "revision": sha, "event": "push"}
    assert record["trigger"]["source"] == "poll"

    # A push to another branch is seen too, and the default rule ignores it.
    git("push", str(bare), "main:feature", cwd=work)
    deadline = time.monotonic() + 30
    while not any(d.source == "poll" and d.result == "ignored" for d in live.server.state.list_deliveries()):
        assert time.monotonic() < deadline, "the push to feature was not seen"
        time.sleep(0.1)
    assert len(runs(live)) == 1
