"""`shipline demo` end to end on the testbed: repositories, server, release, the chain, run again, stop.

The demo runs as a user runs it (`python -m shipline demo`), in a fresh
SHIPLINE_HOME and with its own Gitea organisation, service name and
namespaces, so it never touches a user's demo.  It is slow (a Go build with an
empty cache, then a second release); nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipline.testbed.fixtures import GiteaClient, GiteaError

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(1500)]

ENVIRONMENTS = ("dev", "staging", "prod")


def promotion_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("shipline.gitops.promoting") is not None


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", "demo", *args], env=env, capture_output=True, text=True, timeout=1400, check=False
    )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().count(b"serve") > 0
    except OSError:
        return False


def stage(result: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in result["stages"] if s["stage"] == name]
    assert found, f"no stage {name!r} in {[s['stage'] for s in result['stages']]}"
    return found[0]


def test_demo_builds_the_chain_runs_again_and_stops(
    home: Path, gitea: GiteaClient, kubectl: Path, kubeconfig: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    org, service = f"demo-t{tag}", f"hello-t{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLINE_") or k.startswith("SHIPLINE_TESTBED")}
    env["SHIPLINE_HOME"] = str(home)
    args = ("--org", org, "--service", service, "--json", "--timeout", "600")
    pid = 0
    try:
        first = demo(env, *args)
        assert first.returncode == 0, first.stderr[-3000:]
        result = json.loads(first.stdout)
        pid = result["server"]["pid"]

        # The four repositories, in the demo's organisation.
        for name in (service, "env-dev", "env-staging", "env-prod"):
            assert gitea.request("GET", f"/repos/{org}/{name}")["default_branch"] == "main"
        # The server runs in the background and answers.
        url = result["server"]["url"]
        assert alive(pid) and httpx.get(url + "/readyz", timeout=5).status_code == 200
        # The environments were declared and synced at their first commit before the push.
        envs = {e["environment"]["name"]: e for e in httpx.get(url + "/api/v1/environments", timeout=30).json()}
        assert {n: envs[n]["environment"]["namespace"] for n in ENVIRONMENTS} == {n: f"{org}-{n}" for n in ENVIRONMENTS}
        assert envs["prod"]["environment"]["merge"] == "manual" and envs["dev"]["environment"]["next"] == "staging"
        assert "environments synced" in stage(result, "environments")["message"]
        # The Go build cache the service's runs share was filled once, before the push.
        assert result["go_cache_filled_seconds"] is not None and any((home / "demo" / "go-build").iterdir())

        # The push ran the service's own pipeline, which released 0.1.0 and tagged the commit.
        released = stage(result, "released")
        assert released["version"] == "0.1.0" and released["image"].endswith(f"/{service}:0.1.0")
        run = httpx.get(f"{url}/api/v1/runs/{released['run']}", timeout=30).json()
        assert run["status"] == "succeeded" and run["params"]["revision"] == result["commit"]
        assert gitea.request("GET", f"/repos/{org}/{service}/tags/v0.1.0")["commit"]["sha"] == result["commit"]

        if promotion_available():
            assert result["stopped_at"] == "prod pull request, waiting for a person", result["stopped_at"]
            dev = gitea.request("GET", f"/repos/{org}/env-dev/pulls?state=all")
            assert [(p["title"], p["merged"]) for p in dev] == [(f"Promote {service} to 0.1.0", True)]
            verified = stage(result, "verified-dev")
            history = httpx.get(f"{url}/api/v1/environments/dev/history", timeout=30).json()
            assert history[0]["outcome"] == "verified" and history[0]["commit"] == verified["commit"]
            assert result["latency_seconds"] == verified["seconds"]
            staging = gitea.request("GET", f"/repos/{org}/env-staging/pulls?state=all")
            assert [p["title"] for p in staging] == [f"Promote {service} to 0.1.0"]
            prod = gitea.request("GET", f"/repos/{org}/env-prod/pulls?state=open")
            assert [(p["title"], p["merged"]) for p in prod] == [(f"Promote {service} to 0.1.0", False)]
        else:
            # Without promotion the demo says plainly where the chain stops.
            assert result["stopped_at"] == "promotion" and "no promotion" in result["note"]
            assert "the chain stops here" in first.stderr

        # Again: everything is reused (no "already exists"), the same server, and a new release.
        second = demo(env, *args)
        assert second.returncode == 0, second.stderr[-3000:]
        again = json.loads(second.stdout)
        assert again["server"]["pid"] == pid and "server: reused" in second.stderr
        assert stage(again, "released")["version"] == "0.2.0"
        assert again["go_cache_filled_seconds"] is None and "go: filling" not in second.stderr
        assert f"gitea: {org}/{service} reused" in second.stderr and "created" not in second.stderr

        # --stop leaves no server process.
        stopped = demo(env, "--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped (pid {pid})" in stopped.stderr
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pid)
        assert not (home / "demo" / "server.json").exists()
        assert "none was running" in demo(env, "--stop").stderr
    finally:
        if pid and alive(pid):
            demo(env, "--stop")
        for name in (service, "env-dev", "env-staging", "env-prod"):
            try:
                gitea.request("DELETE", f"/repos/{org}/{name}")
            except GiteaError:
                pass
        try:
            gitea.request("DELETE", f"/orgs/{org}")
        except GiteaError:
            pass
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace", *(f"{org}-{e}" for e in ENVIRONMENTS)]
            + ["--ignore-not-found", "--wait=false"],
            capture_output=True,
            timeout=60,
            check=False,
        )
