"""The GitOps controller in `shipline serve`: `sync: auto` follows the branch, drift is seen and healed.

A real server (uvicorn in a thread) with the testbed's Gitea and kube-apiserver.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envkit import EnvRepo, Kube, deployment, env_cmd
from helpers import shipline
from serverkit import gitea_push, signed_gitea, start_server

from shipline.settings import Settings
from shipline.store.repositories import Role
from shipline.testbed.fixtures import GiteaRepo

pytestmark = pytest.mark.testbed


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


@pytest.fixture
def server(settings: Settings, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(url, operator token) of a server that polls environment branches every second."""
    monkeypatch.setenv("PATH", cli_env["PATH"])  # the server's steps need the testbed's helm and kubectl
    settings = settings.model_copy(update={"queue_poll_seconds": 0.05, "poll_tick_seconds": 0.2, "env_poll_seconds": 1.0})
    uv, thread, app_server, url = start_server(settings)
    _, operator = app_server.state.create_token("tests", Role.OPERATOR)
    try:
        yield url, operator
    finally:
        uv.should_exit = True
        thread.join(60)


def declaration(tmp_path: Path, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, **extra: Any) -> Path:
    env = {
        "name": "dev",
        "repo": f"{gitea_repo.html_url}.git",
        "namespace": namespace,
        "kubeconfig": str(kubeconfig),
        "sync": "auto",
        "verify-timeout": "60s",
        **extra,
    }
    path = tmp_path / "environments.yaml"
    path.write_text(json.dumps({"environments": [env]}))
    return path


def environment(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/v1/environments/dev", timeout=30).json())


def test_auto_sync_follows_the_branch_and_drift_is_seen_then_healed(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
    server: tuple[str, str],
) -> None:
    url, operator = server
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.0.0"))
    first = env_repo.commit("hello 1.0.0")
    assert env_cmd(cli_env, "apply", str(declaration(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0

    wait_for("the first commit applied", lambda: environment(url)["status"]["applied_commit"] == first)
    assert kube.images() == {"hello": "reg.example/hello:1.0.0"}

    # cpu 0.5 reads back as 500m: a value the server normalises is not drift.
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.1.0", cpu="0.5"))
    second = env_repo.commit("hello 1.1.0")
    wait_for("the new commit applied", lambda: environment(url)["status"]["applied_commit"] == second)
    time.sleep(3)  # the drift watch has seen the applied objects by now
    state = environment(url)
    assert state["drift"] == ""
    assert (state["status"]["sync"], state["status"]["health"]) == ("Synced", "Healthy")
    assert kube.images() == {"hello": "reg.example/hello:1.1.0"}
    assert [h["commit"] for h in state["history"]] == [second, first]

    # A hand edit: without self-heal it is only reported.
    kube.run("scale", "deployment/hello", "--replicas=3")
    drifted = wait_for("drift reported", lambda: (s := environment(url)["status"])["sync"] == "OutOfSync" and s)
    assert "Deployment" in drifted["message"] and "spec.replicas: 1 -> 3" in drifted["message"]
    assert "cpu" not in drifted["message"]
    assert kube.get("deployments")[0]["spec"]["replicas"] == 3

    # With self-heal, the next edit is undone by applying the same commit again.
    healing = declaration(tmp_path, gitea_repo, namespace, kubeconfig, **{"self-heal": True})
    assert env_cmd(cli_env, "apply", str(healing)).returncode == 0
    kube.run("scale", "deployment/hello", "--replicas=4")
    wait_for("healed", lambda: kube.get("deployments")[0]["spec"]["replicas"] == 1)
    healed = wait_for("synced again", lambda: (s := environment(url))["status"]["sync"] == "Synced" and s)
    assert healed["status"]["applied_commit"] == second
    assert healed["history"][0]["commit"] == second and healed["history"][0]["outcome"] == "verified"
    assert healed["drift"] == ""


def test_a_signed_webhook_makes_the_server_look_at_once(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    server: tuple[str, str],
) -> None:
    url, _ = server
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.0.0"))
    env_repo.commit("hello")
    assert env_cmd(cli_env, "apply", str(declaration(tmp_path, gitea_repo, namespace, kubeconfig, sync="manual"))).returncode == 0
    secret = "hook-" + uuid.uuid4().hex
    done = shipline_secret(cli_env, "env-dev-webhook", secret)
    assert done == 0
    payload = gitea_push(f"{gitea_repo.html_url}.git", gitea_repo.html_url, full_name=f"{gitea_repo.owner}/{gitea_repo.name}")
    body, headers = signed_gitea(secret, payload)
    bad = httpx.post(f"{url}/hooks/gitea", content=body, headers={**headers, "X-Gitea-Signature": "0" * 64}, timeout=30)
    assert bad.status_code == 401
    good = httpx.post(f"{url}/hooks/gitea", content=body, headers=headers, timeout=30)
    assert good.status_code == 202, good.text
    assert good.json()["environments"] == ["dev"]


def shipline_secret(cli_env: dict[str, str], name: str, value: str) -> int:
    return shipline("secrets", "set", name, "--from-env", "HOOK_SECRET", env={**cli_env, "HOOK_SECRET": value}).returncode
