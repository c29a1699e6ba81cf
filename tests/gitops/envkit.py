"""Small Helm charts and environment repository layouts, written for tests."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from helpers import shipline

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Values.name | default .Chart.Name }}
  labels: {app: {{ .Values.name | default .Chart.Name }}}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Values.name | default .Chart.Name }}}
  template:
    metadata:
      labels: {app: {{ .Values.name | default .Chart.Name }}}
    spec:
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Values.name | default .Chart.Name }}
spec:
  selector: {app: {{ .Values.name | default .Chart.Name }}}
  ports: [{port: 80, targetPort: 8080}]
"""


def write_chart(
    directory: Path,
    name: str,
    version: str,
    *,
    image: str = "registry.example/app",
    tag: str = "1.0.0",
    template: str = DEPLOYMENT,
    dependencies: str = "",
) -> Path:
    """A chart with one Deployment and one Service named after it (or `.Values.name`)."""
    chart = directory / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        f'apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: "{version}"\n{dependencies}'
    )
    (chart / "values.yaml").write_text(f'replicas: 1\nimage:\n  repository: {image}\n  tag: "{tag}"\n')
    (chart / "templates" / "app.yaml").write_text(template)
    return chart


def push_chart(helm: Path, chart: Path, registry: str, tmp: Path) -> str:
    """Package and push to oci://REGISTRY/charts; returns the oci:// repository of the chart."""
    out = tmp / "packages"
    out.mkdir(exist_ok=True)
    done = subprocess.run([str(helm), "package", str(chart), "-d", str(out)], check=True, capture_output=True, text=True)
    package = done.stdout.strip().rsplit(" ", 1)[-1]
    subprocess.run(
        [str(helm), "push", package, f"oci://{registry}/charts", "--plain-http"], check=True, capture_output=True, text=True
    )
    return f"oci://{registry}/charts"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def deployment(name: str, image: str, *, cpu: str | None = None) -> str:
    resources = f'\n          resources: {{requests: {{cpu: "{cpu}"}}}}' if cpu else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: app
          image: "{image}"{resources}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


class EnvRepo:
    """A working copy of the environment repository, pushed to Gitea on each commit."""

    def __init__(self, path: Path, remote: str) -> None:
        self.path = path
        self.remote = remote
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "ops@example.com")
        self.git("config", "user.name", "ops")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True).stdout.strip()

    def write(self, name: str, text: str) -> None:
        write(self.path / name, text)

    def remove(self, name: str) -> None:
        self.git("rm", "-q", name)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", self.remote, "HEAD:main")
        return self.git("rev-parse", "HEAD")


class Kube:
    def __init__(self, kubectl: Path, kubeconfig: Path, namespace: str) -> None:
        self.kubectl, self.kubeconfig, self.namespace = kubectl, kubeconfig, namespace

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def get(self, kind: str) -> list[dict[str, Any]]:
        return list(json.loads(self.run("get", kind, "-o", "json").stdout)["items"])

    def images(self) -> dict[str, str]:
        return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"] for d in self.get("deployments")}

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.get(kind)}


def env_cmd(cli_env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`shipline env ARGS` in a subprocess, with the testbed's tools."""
    return shipline("env", *args, env=cli_env, timeout=timeout)
