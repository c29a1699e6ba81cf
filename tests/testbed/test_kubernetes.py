"""The Kubernetes control plane with kwok's nodes: Deployments roll out, RBAC holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shipline.testbed.configs import kubeconfig as render_kubeconfig

pytestmark = pytest.mark.testbed

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: 127.0.0.1:1/not-pulled:1.0
          ports: [{containerPort: 8080}]
"""


def _kubectl(
    kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, check=False, timeout=180
    )
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def test_deployment_rolls_out_on_kwok_nodes(kubectl: Path, kubeconfig: Path, namespace: str) -> None:
    _kubectl(kubectl, kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=DEPLOYMENT)
    _kubectl(kubectl, kubeconfig, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=150s")
    deployment = json.loads(_kubectl(kubectl, kubeconfig, "-n", namespace, "get", "deployment", "web", "-o", "json").stdout)
    assert deployment["status"]["availableReplicas"] == 2
    pods = json.loads(_kubectl(kubectl, kubeconfig, "-n", namespace, "get", "pods", "-l", "app=web", "-o", "json").stdout)[
        "items"
    ]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"].startswith("kwok-node-")
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"


def test_a_namespace_scoped_token_is_refused_elsewhere(kubectl: Path, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    other = f"{namespace}-other"
    _kubectl(kubectl, kubeconfig, "create", "namespace", other)
    try:
        _kubectl(kubectl, kubeconfig, "-n", namespace, "create", "serviceaccount", "deployer")
        _kubectl(
            kubectl,
            kubeconfig,
            "-n",
            namespace,
            "create",
            "rolebinding",
            "deployer-edit",
            "--clusterrole=edit",
            f"--serviceaccount={namespace}:deployer",
        )
        token = _kubectl(kubectl, kubeconfig, "-n", namespace, "create", "token", "deployer", "--duration=10m").stdout.strip()
        admin = json.loads(kubeconfig.read_text())
        cluster = admin["clusters"][0]["cluster"]
        import base64

        scoped = tmp_path / "deployer.kubeconfig"
        scoped.write_text(
            render_kubeconfig(
                server=cluster["server"],
                ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
                user="deployer",
                token=token,
                namespace=namespace,
            )
        )
        who = _kubectl(kubectl, scoped, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
        assert who == f"system:serviceaccount:{namespace}:deployer"
        _kubectl(kubectl, scoped, "-n", namespace, "create", "configmap", "allowed", "--from-literal=k=v")
        refused = _kubectl(kubectl, scoped, "-n", other, "create", "configmap", "refused", "--from-literal=k=v", check=False)
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower()
        denied_read = _kubectl(kubectl, scoped, "-n", other, "get", "configmaps", check=False)
        assert "forbidden" in denied_read.stderr.lower()
    finally:
        _kubectl(kubectl, kubeconfig, "delete", "namespace", other, "--wait=false", check=False)
