"""Helm: a chart packaged, pushed to the OCI registry and installed from it into the cluster."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.testbed

CHART = """apiVersion: v2
name: probe
description: A chart the testbed's tests push and install
type: application
version: 0.3.0
appVersion: "1.0.0"
"""

TEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-probe
  labels: {app: {{ .Release.Name }}-probe}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-probe}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-probe}
    spec:
      containers:
        - name: probe
          image: "{{ .Values.image }}"
"""


def test_package_push_and_install_from_the_registry(
    helm: Path, kubectl: Path, kubeconfig: Path, registry: str, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART)
    (chart / "values.yaml").write_text(f"replicas: 2\nimage: {registry}/testbed/probe:1.0.0\n")
    (chart / "templates" / "deployment.yaml").write_text(TEMPLATE)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
        "HELM_DATA_HOME": str(tmp_path / "helm-data"),
    }

    def run(*args: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, check=False, env=env, cwd=tmp_path, timeout=240)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr

    run(str(helm), "package", str(chart), "--destination", str(tmp_path))
    package = tmp_path / "probe-0.3.0.tgz"
    assert package.is_file()
    pushed = run(str(helm), "push", str(package), f"oci://{registry}/charts", "--plain-http")
    assert "Digest: sha256:" in pushed

    run(
        str(helm),
        "install",
        "probe",
        f"oci://{registry}/charts/probe",
        "--version",
        "0.3.0",
        "--plain-http",
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "150s",
    )
    releases = json.loads(run(str(helm), "list", "--namespace", namespace, "-o", "json"))
    assert [(r["name"], r["status"], r["chart"]) for r in releases] == [("probe", "deployed", "probe-0.3.0")]
    deployment = json.loads(
        run(str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "deployment", "probe-probe", "-o", "json")
    )
    assert deployment["status"]["availableReplicas"] == 2
