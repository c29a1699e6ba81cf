"""`shipline testbed` as a person uses it, against the running testbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shipline.testbed.fixtures import Testbed

pytestmark = pytest.mark.testbed


def _shipline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", "testbed", *args], capture_output=True, text=True, check=False, timeout=120,
        env=os.environ.copy(),
    )


def test_status_json_shows_every_built_service_healthy(testbed: Testbed) -> None:
    proc = _shipline("status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    services = {s["name"]: s for s in json.loads(proc.stdout)}
    assert set(services) == {
        "registry", "gitea", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"
    }
    for name, service in services.items():
        if service["built"]:
            assert service["healthy"], f"{name}: {service}"
            assert service["port"] == testbed.state.ports[name]


def test_env_prints_exports_a_shell_can_eval(testbed: Testbed) -> None:
    proc = _shipline("env")
    assert proc.returncode == 0, proc.stderr
    shell = subprocess.run(
        ["sh", "-c", proc.stdout + 'printf "%s\\n%s\\n%s" "$KUBECONFIG" "$SHIPLINE_REGISTRY" "$SHIPLINE_GITEA_URL"'],
        capture_output=True, text=True, check=True,
    )
    kubeconfig, registry, gitea = shell.stdout.splitlines()
    assert kubeconfig == str(testbed.layout.kubeconfig)
    assert registry == f"127.0.0.1:{testbed.state.ports['registry']}"
    assert gitea == f"http://127.0.0.1:{testbed.state.ports['gitea']}"


def test_up_again_changes_nothing(testbed: Testbed) -> None:
    before = {s["name"]: s["pid"] for s in json.loads(_shipline("status", "--json").stdout)}
    proc = _shipline("up")
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stderr
    after = {s["name"]: s["pid"] for s in json.loads(_shipline("status", "--json").stdout)}
    assert after == before


def test_a_second_build_does_nothing(testbed: Testbed) -> None:
    proc = _shipline("build")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr
    assert "building" not in proc.stderr
