"""shipline/chart against the testbed's registry and Helm: stamp a copy, lint, package, push; failures name the cause."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from artifactkit import extra_registry, log_text, tiny_chart, write_auth_file
from helpers import RunFn

from shipline.domain.runs import RunStatus
from shipline.settings import Settings

pytestmark = pytest.mark.testbed


@pytest.fixture
def helm_on_path(helm: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{helm.parent}{os.pathsep}{os.environ['PATH']}")
    return helm


def _pipeline(chart: Path, registry: str, *, extra: str = "") -> str:
    return f"""
        name: svc
        tasks:
          - name: prep
            steps: [{{run: 'cp -r "{chart}" chart'}}]
          - name: chart
            uses: shipline/chart
            with:
              version: 1.2.3-feature-x.4
              image: "{registry}/svc:1.2.3-feature-x.4"
              registry: "{registry}"
              {extra}
        """


def _helm_pull(helm: Path, url: str, version: str, into: Path, home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(helm), "pull", url, "--version", version, "--plain-http", "--untar", "-d", str(into)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )


def test_stamps_packages_and_pushes(
    run_pipeline: RunFn, registry: str, helm_on_path: Path, tmp_path: Path, settings: Settings
) -> None:
    name = f"chart-{uuid.uuid4().hex[:8]}"
    source = tiny_chart(tmp_path / "chart", name)
    original = (source / "values.yaml").read_text()
    record = run_pipeline(_pipeline(source, registry))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "chart")
    results = record.task("chart").results
    assert results["chart"] == f"oci://{registry}/charts/{name}"
    assert results["chart-version"] == "1.2.3-feature-x.4"

    pulled = _helm_pull(helm_on_path, results["chart"], "1.2.3-feature-x.4", tmp_path / "pulled", tmp_path / "helm-home")
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {results['chart-digest']}" in pulled.stdout + pulled.stderr
    chart_yaml = (tmp_path / "pulled" / name / "Chart.yaml").read_text()
    assert "version: 1.2.3-feature-x.4" in chart_yaml and "appVersion: 1.2.3-feature-x.4" in chart_yaml
    values = (tmp_path / "pulled" / name / "values.yaml").read_text()
    assert re.search(rf"\n  repository: {re.escape(registry)}/svc +# set by the release\n", values)
    assert "  tag: 1.2.3-feature-x.4\n" in values
    assert values.startswith("# Values of the tiny chart.\n")  # comments survive the edit
    assert "ports:\n  - 8080\n" in values  # and the author's indentation
    assert (source / "values.yaml").read_text() == original  # the repo's chart is not touched


def test_a_chart_that_does_not_lint_fails_and_pushes_nothing(
    run_pipeline: RunFn, registry: str, helm_on_path: Path, tmp_path: Path, settings: Settings
) -> None:
    name = f"chart-{uuid.uuid4().hex[:8]}"
    source = tiny_chart(tmp_path / "chart", name, template="kind: ConfigMap\nname: {{ .Values.image.repository \n")
    record = run_pipeline(_pipeline(source, registry))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "chart")
    assert "helm lint of the chart chart failed: [ERROR] templates/" in log
    assert "pushing" not in log and "checking registry" not in log
    pulled = _helm_pull(helm_on_path, f"oci://{registry}/charts/{name}", "1.2.3-feature-x.4", tmp_path / "p", tmp_path / "h")
    assert pulled.returncode != 0


def test_a_read_only_registry_refuses_the_chart(
    run_pipeline: RunFn, helm_on_path: Path, tmp_path: Path, settings: Settings
) -> None:
    with extra_registry(tmp_path / "ro", readonly=True) as ro:
        record = run_pipeline(_pipeline(tiny_chart(tmp_path / "chart"), ro.host))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "chart")
    assert f"helm push of hello-1.2.3-feature-x.4.tgz to {ro.host} failed: HTTP 405" in log
    assert "read-only" in log


def test_pushes_with_credentials_from_an_auth_file(
    run_pipeline: RunFn, helm_on_path: Path, tmp_path: Path, settings: Settings
) -> None:
    with extra_registry(tmp_path / "auth", users={"ci": "s3cret"}) as reg:
        auth = write_auth_file(tmp_path / "auth.json", reg.host, "ci", "s3cret")
        record = run_pipeline(_pipeline(tiny_chart(tmp_path / "chart"), reg.host, extra=f'auth-file: "{auth}"'))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "chart")
    assert record.task("chart").results["chart-digest"].startswith("sha256:")


def test_without_helm_the_task_says_so(
    run_pipeline: RunFn, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    record = run_pipeline(_pipeline(tiny_chart(tmp_path / "chart"), "127.0.0.1:1"))
    assert record.status == RunStatus.FAILED
    assert "'helm' is not installed or not on PATH; the chart task needs it" in log_text(settings, record, "chart")


def test_a_registry_that_is_down_fails_the_push_with_its_address(
    run_pipeline: RunFn, helm_on_path: Path, tmp_path: Path, settings: Settings
) -> None:
    from artifactkit import free_port

    down = f"127.0.0.1:{free_port()}"
    record = run_pipeline(_pipeline(tiny_chart(tmp_path / "chart"), down))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "chart")
    assert f"registry {down} is unreachable over HTTP" in log and "check that it runs" in log
    assert "Successfully packaged" in log  # lint and package ran; only the push could not
