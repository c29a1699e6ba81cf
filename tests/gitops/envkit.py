"""Small Helm charts and environment repository layouts, written for tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

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


def write_chart(directory: Path, name: str, version: str, *, image: str = "registry.example/app", tag: str = "1.0.0",
                template: str = DEPLOYMENT, dependencies: str = "") -> Path:
    """A chart with one Deployment and one Service named after it (or `.Values.name`)."""
    chart = directory / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\n{dependencies}")
    (chart / "values.yaml").write_text(f"replicas: 1\nimage:\n  repository: {image}\n  tag: \"{tag}\"\n")
    (chart / "templates" / "app.yaml").write_text(template)
    return chart


def push_chart(helm: Path, chart: Path, registry: str, tmp: Path) -> str:
    """Package and push to oci://REGISTRY/charts; returns the oci:// repository of the chart."""
    out = tmp / "packages"
    out.mkdir(exist_ok=True)
    done = subprocess.run([str(helm), "package", str(chart), "-d", str(out)], check=True, capture_output=True, text=True)
    package = done.stdout.strip().rsplit(" ", 1)[-1]
    subprocess.run([str(helm), "push", package, f"oci://{registry}/charts", "--plain-http"], check=True, capture_output=True, text=True)
    return f"oci://{registry}/charts"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path
