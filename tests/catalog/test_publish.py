"""shipline/publish: build outputs pushed as one OCI artifact with oras, to the testbed's registry."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from artifactkit import extra_registry, log_text, skopeo
from helpers import RunFn

from shipline.domain.runs import RunStatus
from shipline.settings import Settings

pytestmark = pytest.mark.testbed


def _pipeline(registry: str, name: str, make: str, *, extra: str = "") -> str:
    return f"""
        name: svc
        tasks:
          - name: build
            steps: [{{run: '{make}'}}]
          - name: publish
            uses: shipline/publish
            with:
              version: 2.0.0
              name: {name}
              registry: "{registry}"
              revision: abc123
              {extra}
        """


def test_pushes_the_files_as_an_oci_artifact(run_pipeline: RunFn, registry: str, settings: Settings) -> None:
    name = f"pub-{uuid.uuid4().hex[:8]}"
    record = run_pipeline(
        _pipeline(registry, name, "mkdir -p dist && echo one > dist/a.txt && echo two > dist/b.bin && mkdir dist/sub")
    )
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "publish")
    results = record.task("publish").results
    assert results["artifact"] == f"{registry}/{name}-artifacts:2.0.0"
    assert results["files"] == "a.txt,b.bin"

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{results['artifact']}")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == results["artifact-digest"]
    manifest = json.loads(raw.stdout)
    titles = [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]]
    assert titles == ["a.txt", "b.bin"]
    assert [layer["size"] for layer in manifest["layers"]] == [4, 4]
    assert manifest["annotations"]["org.opencontainers.image.version"] == "2.0.0"
    assert manifest["annotations"]["org.opencontainers.image.revision"] == "abc123"
    assert manifest["config"]["mediaType"] == "application/vnd.shipline.artifacts.config.v1+json"


def test_nothing_to_publish_skips_by_default_or_fails_when_asked(run_pipeline: RunFn, registry: str, settings: Settings) -> None:
    skipped = run_pipeline(_pipeline(registry, "svc", "mkdir -p dist"))
    assert skipped.status == RunStatus.SUCCEEDED
    assert skipped.task("publish").results == {"artifact": "", "artifact-digest": "", "files": ""}
    assert "nothing to publish: no file matches 'dist/*'; skipped" in log_text(settings, skipped, "publish")

    failed = run_pipeline(_pipeline(registry, "svc", "mkdir -p dist", extra="if-empty: fail"))
    assert failed.status == RunStatus.FAILED
    assert "nothing to publish: no file matches 'dist/*' (if-empty: fail)" in log_text(settings, failed, "publish")


def test_files_outside_the_workspace_are_refused(run_pipeline: RunFn, registry: str, settings: Settings) -> None:
    record = run_pipeline(_pipeline(registry, "svc", "true", extra='files: "../../* /etc/passwd"'))
    assert record.status == RunStatus.FAILED
    assert "must be a relative path inside the run's workspace" in log_text(settings, record, "publish")


def test_a_read_only_registry_refuses_the_artifact(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    with extra_registry(tmp_path / "ro", readonly=True) as ro:
        record = run_pipeline(_pipeline(ro.host, "svc", "mkdir -p dist && echo x > dist/x"))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "publish")
    assert f"push of {ro.host}/svc-artifacts:2.0.0 to {ro.host} failed: HTTP 405" in log
    assert "read-only" in log


def test_pushes_with_credentials_from_an_auth_file(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    from artifactkit import write_auth_file

    with extra_registry(tmp_path / "auth", users={"ci": "s3cret"}) as reg:
        auth = write_auth_file(tmp_path / "auth.json", reg.host, "ci", "s3cret")
        record = run_pipeline(_pipeline(reg.host, "svc", "mkdir -p dist && echo x > dist/x", extra=f'auth-file: "{auth}"'))
        assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "publish")
        raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "ci:s3cret", f"docker://{reg.host}/svc-artifacts:2.0.0")
        assert raw.returncode == 0, raw.stderr
        assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == record.task("publish").results["artifact-digest"]


def test_a_loopback_registry_is_not_reached_through_the_proxy(
    run_pipeline: RunFn, registry: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from artifactkit import free_port

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a proxy that is down
    record = run_pipeline(_pipeline(registry, f"pub-{uuid.uuid4().hex[:8]}", "mkdir -p dist && echo x > dist/x"))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "publish")
