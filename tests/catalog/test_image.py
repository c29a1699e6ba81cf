"""shipline/image against the testbed's registry and real extra registries: buildah builds, labels, pushes."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from artifactkit import extra_registry, inspect_image, log_text, tiny_context, write_auth_file
from helpers import RunFn

from shipline.domain.runs import RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore

pytestmark = pytest.mark.testbed


def _pipeline(context: Path, registry: str, name: str, *, extra: str = "") -> str:
    return f"""
        name: svc
        tasks:
          - name: prep
            steps: [{{run: 'cp -r "{context}" ctx'}}]
          - name: image
            uses: shipline/image
            with:
              version: 1.2.3
              {f"name: {name}" if name else ""}
              context: ctx
              {f'registry: "{registry}"' if registry else ""}
              source: https://git.example/org/svc.git
              revision: 0123456789abcdef0123456789abcdef01234567
              {extra}
        """


def test_builds_labels_and_pushes_to_the_registry_setting(
    registry: str, tmp_path: Path, settings: Settings, store: SqlStore, write: Callable[..., Path]
) -> None:
    # No `registry` input: the task uses the SHIPLINE_REGISTRY setting, which every step gets.
    engine = Engine(settings.model_copy(update={"registry": registry}), store, LocalExecutor(1.0), EventBus())
    name = f"img-{uuid.uuid4().hex[:8]}"
    pipeline = load_pipeline(write(textwrap.dedent(_pipeline(tiny_context(tmp_path / "ctx"), "", name))))
    record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
    assert record.status == RunStatus.SUCCEEDED, record.message + log_text(settings, record, "image")
    results = record.task("image").results
    assert results["image"] == f"{registry}/{name}:1.2.3"
    info = inspect_image(results["image"])
    assert info is not None
    assert info["Digest"] == results["image-digest"]
    labels = info["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://git.example/org/svc.git"
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert labels["org.opencontainers.image.version"] == "1.2.3"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    # buildah's store lived in the run's HOME and is gone: nothing piles up per build.
    scratch = settings.home / "step-homes" / str(record.id) / ".shipline-scratch"
    assert not any(scratch.iterdir())


def test_a_dockerfile_that_does_not_build_fails_and_pushes_nothing(
    run_pipeline: RunFn, registry: str, tmp_path: Path, settings: Settings
) -> None:
    name = f"img-{uuid.uuid4().hex[:8]}"
    context = tiny_context(tmp_path / "ctx", run="echo broken; exit 3")
    record = run_pipeline(_pipeline(context, registry, name))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "image")
    assert "the image build of ctx/Dockerfile failed (buildah exited 3)" in log
    assert "Check the Dockerfile" in log
    assert inspect_image(f"{registry}/{name}:1.2.3") is None


def test_a_registry_that_is_down_fails_before_building(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    from artifactkit import free_port

    down = f"127.0.0.1:{free_port()}"
    record = run_pipeline(_pipeline(tiny_context(tmp_path / "ctx"), down, "svc"))
    assert record.status == RunStatus.FAILED
    log = log_text(settings, record, "image")
    assert f"registry {down} is unreachable over HTTP" in log
    assert "check that it runs" in log
    assert "building" not in log


def test_a_read_only_registry_refuses_the_push(run_pipeline: RunFn, tmp_path: Path, settings: Settings) -> None:
    with extra_registry(tmp_path / "ro", readonly=True) as ro:
        # No `name`: the image is named after the pipeline (svc).
        record = run_pipeline(_pipeline(tiny_context(tmp_path / "ctx"), ro.host, ""))
        assert record.status == RunStatus.FAILED
        log = log_text(settings, record, "image")
        assert f"push of image {ro.host}/svc:1.2.3 to {ro.host} failed: HTTP 405" in log
        assert "read-only" in log
        assert inspect_image(f"{ro.host}/svc:1.2.3") is None


def test_a_registry_with_auth_needs_and_takes_the_auth_file(
    run_pipeline: RunFn, engine: Engine, tmp_path: Path, settings: Settings
) -> None:
    with extra_registry(tmp_path / "auth", users={"ci": "s3cret"}) as reg:
        context = tiny_context(tmp_path / "ctx")
        none = run_pipeline(_pipeline(context, reg.host, "svc"))
        assert none.status == RunStatus.FAILED
        assert f"registry {reg.host} wants credentials (HTTP 401)" in log_text(settings, none, "image")

        wrong = write_auth_file(tmp_path / "wrong.json", reg.host, "ci", "nope")
        bad = run_pipeline(_pipeline(context, reg.host, "svc", extra=f'auth-file: "{wrong}"'))
        assert bad.status == RunStatus.FAILED
        assert f"registry {reg.host} refused the credentials for user 'ci'" in log_text(settings, bad, "image")

        # The documented way: the auth file is a secret, handed to the task as a file.
        engine.secrets.set("registry-auth", write_auth_file(tmp_path / "good.json", reg.host, "ci", "s3cret").read_text())
        ok = run_pipeline(_pipeline(context, reg.host, "", extra='auth-file: "${{ secret_files.registry-auth }}"'))
        assert ok.status == RunStatus.SUCCEEDED, log_text(settings, ok, "image")
        assert ok.task("image").results["image"] == f"{reg.host}/svc:1.2.3"  # named after the pipeline
        assert ok.task("image").results["image-digest"].startswith("sha256:")
        assert "s3cret" not in log_text(settings, ok, "image")


def test_a_base_image_from_the_loopback_registry_is_pulled_over_http(
    run_pipeline: RunFn, registry: str, tmp_path: Path, settings: Settings
) -> None:
    base = f"base-{uuid.uuid4().hex[:8]}"
    first = run_pipeline(_pipeline(tiny_context(tmp_path / "base"), registry, base))
    assert first.status == RunStatus.SUCCEEDED, log_text(settings, first, "image")
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f'FROM {registry}/{base}:1.2.3 AS base\nRUN ["/bin/busybox", "sh", "-c", "echo app > /app"]\n'
    )
    name = f"app-{uuid.uuid4().hex[:8]}"
    second = run_pipeline(_pipeline(context, registry, name))
    assert second.status == RunStatus.SUCCEEDED, log_text(settings, second, "image")
    app, base_info = inspect_image(f"{registry}/{name}:1.2.3"), inspect_image(f"{registry}/{base}:1.2.3")
    assert app is not None and base_info is not None
    # The app is the base image plus its own layer: the base really came from the registry.
    assert app["Layers"][:-1] == base_info["Layers"] and len(app["Layers"]) == len(base_info["Layers"]) + 1
