"""The real node: a kubelet, containerd and kube-proxy on this machine, pods that run.

These tests share the session's testbed and its node; the last one stops the node,
checks that the host is as it was, and starts it again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from shipline.testbed import node, nodeconfigs, running
from shipline.testbed.fixtures import Testbed

pytestmark = pytest.mark.testbed

TOLERATE = {"key": nodeconfigs.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
ON_REAL_NODE = {"nodeSelector": {"kubernetes.io/hostname": nodeconfigs.NODE_NAME}, "tolerations": [TOLERATE]}


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def _http_image(registry: str, tmp_path: Path, text: str) -> str:
    """A busybox-static httpd image, FROM scratch, pushed to the testbed registry."""
    (tmp_path / "index.html").write_text(text)
    storage = ["--root", str(tmp_path / "storage"), "--runroot", str(tmp_path / "run"), "--storage-driver", "vfs"]

    def buildah(*args: str) -> str:
        proc = subprocess.run(["buildah", *storage, *args], capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr}"
        return proc.stdout.strip()

    image = f"{registry}/node-test/web:{uuid.uuid4().hex[:8]}"
    container = buildah("from", "scratch").splitlines()[-1]
    buildah("copy", container, "/bin/busybox", "/bin/busybox")
    buildah("copy", container, str(tmp_path / "index.html"), "/www/index.html")
    buildah("config", "--entrypoint", '["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]', container)
    buildah("commit", "--format", "oci", "--rm", "--tls-verify=false", container, f"docker://{image}")
    subprocess.run(["rm", "-rf", str(tmp_path / "storage")], check=False)
    return image


def _get(url: str, within: float = 60.0) -> str:
    """The body at url, retried while kube-proxy or the pod catch up."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return str(response.read().decode())
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer: {exc}") from exc
            time.sleep(0.5)


def test_the_real_node_is_ready_tainted_and_beside_kwok(
    kubectl: Path, kubeconfig: Path, real_node: str, testbed: Testbed
) -> None:
    nodes = json.loads(_kubectl(kubectl, kubeconfig, "get", "nodes", "-o", "json"))["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert real_node in by_name and sum(1 for n in nodes if n["metadata"]["labels"].get("type") == "kwok") == 3
    real = by_name[real_node]
    ready = {c["type"]: c["status"] for c in real["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert real["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {t["key"] for t in real["spec"]["taints"]} == {nodeconfigs.REAL_NODE_TAINT}
    address = [a["address"] for a in real["status"]["addresses"] if a["type"] == "InternalIP"]
    assert address == [nodeconfigs.node_ip(testbed.state.ports["registry"])]
    rows = {s.name: s for s in running.status(testbed.layout)}
    assert rows[f"node/{real_node}"].healthy and rows[f"node/{real_node}"].detail.startswith("Ready v1.34.4")


def test_a_deployment_of_a_pushed_image_answers_http_from_the_host(
    kubectl: Path, kubeconfig: Path, real_node: str, registry: str, namespace: str, tmp_path: Path
) -> None:
    image = _http_image(registry, tmp_path, "hello from the real node\n")
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            **ON_REAL_NODE,
                            "containers": [
                                {
                                    "name": "web",
                                    "image": image,
                                    "ports": [{"containerPort": 8080}],
                                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                                }
                            ],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        ],
    }
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=json.dumps(manifest))
    _kubectl(kubectl, kubeconfig, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s")
    pod = json.loads(_kubectl(kubectl, kubeconfig, "-n", namespace, "get", "pods", "-l", "app=web", "-o", "json"))["items"][0]
    assert pod["spec"]["nodeName"] == real_node
    assert _get(f"http://{pod['status']['podIP']}:8080/") == "hello from the real node\n"
    cluster_ip = _kubectl(kubectl, kubeconfig, "-n", namespace, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
    assert _get(f"http://{cluster_ip}/") == "hello from the real node\n"
    # Logs and exec go through the API server to the kubelet (its client certificate, Webhook authorization).
    logs = _kubectl(kubectl, kubeconfig, "-n", namespace, "logs", "deployment/web")
    assert "response:200" in logs
    out = _kubectl(kubectl, kubeconfig, "-n", namespace, "exec", "deployment/web", "--", "/bin/busybox", "cat", "/www/index.html")
    assert out == "hello from the real node\n"


def test_pods_of_the_runner_image_reach_the_api_server_and_services(
    kubectl: Path, kubeconfig: Path, real_node: str, testbed: Testbed, namespace: str
) -> None:
    runner = testbed.env["SHIPLINE_RUNNER_IMAGE"]
    script = 'git --version; exec 3<>"/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT" && echo api-reachable'
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runner", "namespace": namespace},
        "spec": {
            **ON_REAL_NODE,
            "restartPolicy": "Never",
            "containers": [{"name": "run", "image": runner, "command": ["bash", "-c", script]}],
        },
    }
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=json.dumps(pod))
    _kubectl(
        kubectl,
        kubeconfig,
        "-n",
        namespace,
        "wait",
        "pod/runner",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=120s",
    )
    logs = _kubectl(kubectl, kubeconfig, "-n", namespace, "logs", "runner")
    assert logs.startswith("git version 2.") and "api-reachable" in logs


def _chains() -> dict[str, list[str]]:
    return node._all_chains()


def _processes(names: tuple[str, ...]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if Path(argv0).name in names:
                found.append(f"{entry.name} {argv0}")
    return found


def test_down_puts_the_host_back_and_up_brings_the_node_again(
    kubectl: Path, kubeconfig: Path, real_node: str, testbed: Testbed
) -> None:
    before = json.loads((node.node_dir(testbed.layout) / "host-before.json").read_text())
    running.down(testbed.layout, only=node.NODE_SERVICES, report=lambda line: None)
    try:
        left = _processes(("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2"))
        assert left == [], f"still running after down: {left}"
        assert _chains() == before["chains"]
        assert {name: node._sysctl(name) for name in before["sysctls"]} == before["sysctls"]
        assert subprocess.run(["ip", "link", "show", nodeconfigs.BRIDGE], capture_output=True, check=False).returncode != 0
        address = nodeconfigs.node_ip(testbed.state.ports["registry"])
        assert address not in subprocess.run(["ip", "addr", "show", "lo"], capture_output=True, text=True, check=True).stdout
    finally:
        running.up(testbed.layout, os.environ, testbed.state.ports["registry"], report=lambda line: None)
    ready = _kubectl(
        kubectl, kubeconfig, "get", "node", real_node, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    assert ready == "True"


def test_pods_resolve_service_names_through_the_cluster_dns(
    kubectl: Path, kubeconfig: Path, real_node: str, testbed: Testbed, namespace: str
) -> None:
    testbed.require("coredns")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "named", "namespace": namespace},
        "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]},
    }
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=json.dumps(service))
    cluster_ip = _kubectl(kubectl, kubeconfig, "-n", namespace, "get", "service", "named", "-o", "jsonpath={.spec.clusterIP}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "resolver", "namespace": namespace},
        "spec": {
            **ON_REAL_NODE,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "run",
                    "image": testbed.env["SHIPLINE_RUNNER_IMAGE"],
                    "command": ["bash", "-c", "getent hosts named; getent hosts kubernetes.default"],
                }
            ],
        },
    }
    _kubectl(kubectl, kubeconfig, "apply", "-f", "-", stdin=json.dumps(pod))
    _kubectl(
        kubectl,
        kubeconfig,
        "-n",
        namespace,
        "wait",
        "pod/resolver",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=120s",
    )
    lines = [line.split() for line in _kubectl(kubectl, kubeconfig, "-n", namespace, "logs", "resolver").splitlines()]
    assert [line[0] for line in lines] == [cluster_ip, nodeconfigs.API_SERVICE_IP]
    assert lines[0][1] == f"named.{namespace}.svc.cluster.local"
