"""`shipline testbed` as a person uses it, against the running testbed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipline.testbed.fixtures import Testbed
from shipline.testbed.processes import is_alive

pytestmark = pytest.mark.testbed


def _shipline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", "testbed", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=os.environ.copy(),
    )


def test_status_json_shows_every_built_service_healthy(testbed: Testbed) -> None:
    proc = _shipline("status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    services = {s["name"]: s for s in json.loads(proc.stdout)}
    assert set(services) == {
        "registry",
        "gitea",
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        # The real node: its services, and the node as the API server sees it.
        "containerd",
        "kubelet",
        "kube-proxy",
        "node/shipline-node",
        "coredns",
    }
    assert services["node/shipline-node"]["detail"].startswith("Ready v1.34.4")
    for name, service in services.items():
        if service["built"]:
            assert service["healthy"], f"{name}: {service}"
            port_of = "kubelet" if name == "node/shipline-node" else "kubelet-healthz" if name == "kubelet" else name
            assert service["port"] == testbed.state.ports[port_of]


def test_env_prints_exports_a_shell_can_eval(testbed: Testbed) -> None:
    proc = _shipline("env")
    assert proc.returncode == 0, proc.stderr
    shell = subprocess.run(
        ["sh", "-c", proc.stdout + 'printf "%s\\n%s\\n%s" "$KUBECONFIG" "$SHIPLINE_REGISTRY" "$SHIPLINE_GITEA_URL"'],
        capture_output=True,
        text=True,
        check=True,
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


def test_up_in_one_process_and_down_in_another_leave_nothing_running(tmp_path: Path) -> None:
    """A second, private testbed (own home, own ports): up, status, down --purge."""
    from shipline.testbed.ports import find_taken, plan_ports

    base = 28600
    ports = plan_ports(base)
    if find_taken(ports):
        pytest.skip(f"ports {base}.. are in use on this machine")
    env = {**os.environ, "SHIPLINE_TESTBED_HOME": str(tmp_path / "home"), "SHIPLINE_TESTBED_PORT_BASE": str(base)}

    def shipline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shipline", "testbed", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=240,
            env=env,
        )

    try:
        up = shipline("up")
        assert up.returncode == 0, up.stderr
        services = json.loads(shipline("status", "--json").stdout)
        pids = [s["pid"] for s in services if s["built"]]
        assert all(pids) and len(pids) == len([s for s in services if s["built"]])
        assert {s["port"] for s in services} <= set(ports.values())
    finally:
        down = shipline("down", "--purge")
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert not is_alive(pid), f"pid {pid} still runs after down"
    assert not find_taken(ports)
    assert not (tmp_path / "home").exists()
