"""Pipelines as code, webhook registration and commit statuses, end to end on the testbed's real Gitea.

`shipline repos add` (no --pipeline) registers the hook on Gitea pointing at a
real `shipline serve` on 127.0.0.1; a git push then runs the repository's own
.shipline/pipeline.yaml as it is at the pushed commit, and a pull request gets
its run's result as the commit status `shipline/NAME`, which branch protection
uses to refuse the merge of a failing pull request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import free_port

from shipline.testbed.fixtures import GiteaClient, GiteaRepo

pytestmark = pytest.mark.testbed

PIPELINE = """\
name: hello-code
params:
  url: {default: ""}
  revision: {default: ""}
  branch: {default: ""}
  pr: {default: ""}
tasks:
  - name: check
    steps:
      - run: echo "checking $BRANCH at $REV (pr '$PR')"; exit %(code)d
    env:
      BRANCH: ${{ params.branch }}
      REV: ${{ params.revision }}
      PR: ${{ params.pr }}
"""


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


def commit_pipeline(work: Path, code: int, message: str) -> str:
    (work / ".shipline").mkdir(exist_ok=True)
    (work / ".shipline" / "pipeline.yaml").write_text(PIPELINE % {"code": code})
    (work / "CHANGES").write_text(message + "\n")
    git("add", ".", cwd=work)
    git("commit", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def env(home: Path, gitea: GiteaClient) -> dict[str, str]:
    port = free_port()
    return {
        **os.environ,
        "SHIPLINE_HOME": str(home),
        "SHIPLINE_PORT": str(port),
        "SHIPLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SHIPLINE_GITEA_URL": gitea.url,
        "SHIPLINE_GITEA_TOKEN": gitea.token,
        "SHIPLINE_LOG_FORMAT": "text",
    }


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    url = env["SHIPLINE_PUBLIC_URL"]
    with (tmp_path / "serve.log").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shipline", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def shipline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def wait_run(server: str, pipeline: str, revision: str, timeout: float = 60) -> dict[str, Any]:
    """The run of `pipeline` at commit `revision`, once it has ended."""
    deadline = time.monotonic() + timeout
    while True:
        runs = httpx.get(f"{server}/api/v1/runs", params={"pipeline": pipeline}).json()["runs"]
        mine = [r for r in runs if r["params"].get("revision") == revision]
        if mine and mine[0]["status"] in ("succeeded", "failed", "cancelled"):
            return httpx.get(f"{server}/api/v1/runs/{mine[0]['id']}").json()  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no ended run of {pipeline} at {revision}: {runs}"
        time.sleep(0.2)


def statuses(gitea: GiteaClient, repo: GiteaRepo, sha: str, want: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every status posted on `sha`, oldest first, once one is `want`."""
    deadline = time.monotonic() + timeout
    while True:
        items = gitea.request("GET", f"/repos/{repo.owner}/{repo.name}/statuses/{sha}?sort=oldest")
        if any(s["status"] == want for s in items):
            return sorted(items, key=lambda s: s["id"])  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no {want} status on {sha}: {items}"
        time.sleep(0.2)


def test_repos_add_registers_the_hook_and_runs_the_repositorys_pipeline(
    env: dict[str, str], server: str, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    slug = f"/repos/{gitea_repo.owner}/{gitea_repo.name}"
    work = tmp_path / "work"
    git("init", "-b", "main", str(work), cwd=tmp_path)
    commit_pipeline(work, 0, "first commit")
    git("push", gitea_repo.clone_url, "main", cwd=work)

    added = shipline(env, "repos", "add", "svc", gitea_repo.html_url, "--forge", "gitea")
    assert added.returncode == 0, added.stderr
    assert "webhook: registered" in added.stdout and f"{server}/hooks/gitea" in added.stdout
    hooks_before = gitea.request("GET", f"{slug}/hooks")
    again = shipline(env, "repos", "add", "svc", gitea_repo.html_url, "--forge", "gitea")
    assert again.returncode == 1 and "already registered" in again.stderr
    other = shipline(env, "repos", "add", "svc-too", gitea_repo.html_url + ".git", "--forge", "gitea", "--json")
    assert other.returncode == 0, other.stderr
    hook = json.loads(other.stdout)["webhook"]
    assert hook["url"] == f"{server}/hooks/gitea" and not hook["created"] and hooks_before
    assert shipline(env, "repos", "remove", "svc-too").returncode == 0
    hooks = gitea.request("GET", f"{slug}/hooks")
    assert [(h["id"], h["config"]["url"]) for h in hooks] == [(hook["id"], f"{server}/hooks/gitea")]

    # A push runs the pipeline the repository has at that commit.
    second = commit_pipeline(work, 0, "second commit")
    git("push", gitea_repo.clone_url, "main", cwd=work)
    run = wait_run(server, "hello-code", second)
    assert run["status"] == "succeeded", run
    assert run["params"] == {"url": gitea_repo.html_url, "revision": second, "branch": "main", "pr": ""}
    assert gitea.request("GET", f"{slug}/statuses/{second}") == []  # a push is no pull request: no status

    # Pull requests: their run's result is the head's commit status, which protection requires.
    assert shipline(env, "repos", "trigger", "add", "svc", "--on", "pull_request").returncode == 0
    gitea.request(
        "POST",
        f"{slug}/branch_protections",
        {
            "rule_name": "main",
            "enable_status_check": True,
            "status_check_contexts": ["shipline/hello-code"],
        },
    )
    git("checkout", "-b", "feature", cwd=work)
    failing = commit_pipeline(work, 3, "feat: breaks the check")
    git("push", gitea_repo.clone_url, "feature", cwd=work)
    pr = gitea.open_pull_request(slug.removeprefix("/repos/"), "feature", "main", "feat: more")
    run = wait_run(server, "hello-code", failing)
    assert run["status"] == "failed"
    assert run["params"] == {"url": gitea_repo.html_url, "revision": failing, "branch": "feature", "pr": str(pr["number"])}
    seen = statuses(gitea, gitea_repo, failing, "failure")
    assert [s["status"] for s in seen][0] == "pending" and seen[-1]["status"] == "failure"
    assert {s["context"] for s in seen} == {"shipline/hello-code"}
    assert seen[-1]["target_url"] == f"{server}/#/runs/{run['id']}"

    with pytest.raises(Exception, match="HTTP 405"):
        gitea.request("POST", f"{slug}/pulls/{pr['number']}/merge", {"Do": "merge"})

    # A new commit on the pull request fixes its pipeline: success, and the merge goes through.
    fixed = commit_pipeline(work, 0, "fix: the check passes")
    git("push", gitea_repo.clone_url, "feature", cwd=work)
    run = wait_run(server, "hello-code", fixed)
    assert run["status"] == "succeeded" and run["trigger"]["event"] == "pull_request"
    seen = statuses(gitea, gitea_repo, fixed, "success")
    assert [s["status"] for s in seen] in (["pending", "pending", "success"], ["pending", "success"])
    deadline = time.monotonic() + 30
    while True:
        try:
            gitea.request("POST", f"{slug}/pulls/{pr['number']}/merge", {"Do": "merge"})
            break
        except Exception as exc:  # Gitea checks mergeability in the background after a push
            assert "try again" in str(exc).lower() and time.monotonic() < deadline, exc
            time.sleep(0.3)
    assert gitea.request("GET", f"{slug}/pulls/{pr['number']}")["merged"] is True


SECRET_PIPELINE = """\
name: hello-fork
params:
  revision: {default: ""}
tasks:
  - name: deploy
    env: {KEY: "${{ secrets.deploy-key }}"}
    steps:
      - run: echo "deploying with a key of ${#KEY} characters"
"""


def test_a_pull_request_from_a_fork_gets_no_secrets(
    env: dict[str, str], server: str, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    slug = f"/repos/{gitea_repo.owner}/{gitea_repo.name}"
    work = tmp_path / "work"
    git("init", "-b", "main", str(work), cwd=tmp_path)
    (work / ".shipline").mkdir()
    (work / ".shipline" / "pipeline.yaml").write_text(SECRET_PIPELINE)
    git("add", ".", cwd=work)
    git("commit", "-m", "first commit", cwd=work)
    git("push", gitea_repo.clone_url, "main", cwd=work)
    set_secret = subprocess.run(
        [sys.executable, "-m", "shipline", "secrets", "set", "deploy-key"],
        env=env,
        input="the-deploy-key",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert set_secret.returncode == 0, set_secret.stderr
    assert shipline(env, "repos", "add", "svc", gitea_repo.html_url, "--forge", "gitea").returncode == 0
    assert shipline(env, "repos", "trigger", "add", "svc", "--on", "pull_request").returncode == 0

    # Someone forks the repository and proposes a change from their fork.
    fork_org = f"fork-{gitea_repo.owner}"
    gitea.request("POST", "/orgs", {"username": fork_org, "visibility": "public"})
    gitea.request("POST", f"{slug}/forks", {"organization": fork_org})
    git("checkout", "-b", "feature", cwd=work)
    (work / "CHANGES").write_text("from a fork\n")
    git("add", ".", cwd=work)
    git("commit", "-m", "feat: from a fork", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    git("push", gitea.authed_url(f"{fork_org}/{gitea_repo.name}.git"), "feature", cwd=work)
    pr = gitea.open_pull_request(slug.removeprefix("/repos/"), f"{fork_org}:feature", "main", "from a fork")

    run = wait_run(server, "hello-fork", head)
    assert run["status"] == "failed"
    assert run["trigger"]["fork"] is True and run["trigger"]["pr_number"] == pr["number"]
    assert "pull request from a fork" in run["message"] and "deploy-key" in run["message"]
    assert [t["status"] for t in run["tasks"]] == ["skipped"]
    seen = statuses(gitea, gitea_repo, head, "failure")
    assert seen[-1]["context"] == "shipline/hello-fork"


def test_repos_add_registers_nothing_when_the_forge_refuses(env: dict[str, str], gitea_repo: GiteaRepo) -> None:
    bad = {**env, "SHIPLINE_GITEA_TOKEN": "revoked-token"}
    refused = shipline(bad, "repos", "add", "svc", gitea_repo.html_url, "--forge", "gitea")
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "check SHIPLINE_GITEA_TOKEN" in refused.stderr
    assert "revoked-token" not in refused.stderr + refused.stdout
    listed = shipline(env, "repos", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    # A plain git remote has no API to read the pipeline through.
    no_api = shipline(env, "repos", "add", "infra", "/srv/git/infra.git", "--forge", "git")
    assert no_api.returncode == 2 and "needs --pipeline FILE" in no_api.stderr
