"""Engines on either executor: `local`, and `kubernetes` on the testbed's real node.

`kube_place` makes, once per session, a namespace with a workspace claim bound
to a hostPath volume (the testbed has one node; see README "Running on
Kubernetes" for what a cluster of several needs) and removes it at the end.
The kubernetes variants are skipped, saying why, only when the testbed's
real node is not built here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubeplace import KubePlace, claim_yaml, kube_settings

from shipline.domain.runs import RunRecord
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.base import Executor
from shipline.executors.kubernetes import KubernetesExecutor
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore
from shipline.testbed.building import is_built
from shipline.testbed.layout import layout_from_env


@pytest.fixture(scope="session")
def kube_place(request: pytest.FixtureRequest) -> Iterator[KubePlace]:
    layout = layout_from_env(os.environ, Path.home())
    missing = [part for part in ("kubernetes", "kubelet", "images") if not is_built(layout, part)]
    if missing:
        pytest.skip(f"the testbed's real node is not built here ({', '.join(missing)}): `shipline testbed build`")
    request.getfixturevalue("real_node")
    testbed = request.getfixturevalue("testbed")
    kubeconfig: Path = request.getfixturevalue("kubeconfig")
    kubectl: Path = request.getfixturevalue("kubectl")
    name = f"shipline-runs-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="shipline-kube-ws-"))
    place = KubePlace(name, kubeconfig, kubectl, testbed.env["SHIPLINE_RUNNER_IMAGE"], folder)
    place.run("create", "namespace", name)
    place.run("apply", "-f", "-", stdin=claim_yaml(name, name, folder))
    place.run("-n", name, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/shipline-workspace", "--timeout=60s")
    yield place
    place.run("delete", "namespace", name, "--wait=false", check=False)
    place.run("delete", "pv", name, "--wait=false", check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["local", pytest.param("kubernetes", marks=pytest.mark.testbed)])
def executor_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def any_engine(executor_kind: str, settings: Settings, store: SqlStore, request: pytest.FixtureRequest) -> Engine:
    """An engine on the executor of `executor_kind`."""
    executor: Executor
    if executor_kind == "kubernetes":
        place: KubePlace = request.getfixturevalue("kube_place")
        settings = kube_settings(settings, place)
        executor = KubernetesExecutor(settings, place.kubeconfig)
    else:
        executor = LocalExecutor.from_settings(settings)
    return Engine(settings, store, executor, EventBus())


@pytest.fixture
def run_on(any_engine: Engine, write: Callable[..., Path]) -> Callable[..., RunRecord]:
    """Load a definition (text), run it to the end on `any_engine`, return the record."""

    def _run(text: str, params: dict[str, str] | None = None) -> RunRecord:
        pipeline = load_pipeline(write(text))
        run_id = any_engine.submit(pipeline, params or {})
        return asyncio.run(any_engine.drive(run_id))

    return _run
