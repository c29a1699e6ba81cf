"""The kubernetes executor when things go wrong, on the testbed's real node: an image that does
not exist, a pod that no node takes, a pod deleted by hand, a namespace without RBAC (or
without `pods/attach`) or over its quota, the API server restarting and the node stopping
mid-task, an engine that dies mid-run.  Each time the task fails saying why, nothing but a
pod that no node takes (a node may yet come) waits for the timeout, and no pod or Secret
is left (listed)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REPO, Background
from kubeplace import KubePlace, claim_yaml, kube_settings

from shipline.domain.runs import RunRecord, RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.kubernetes import KubernetesExecutor
from shipline.settings import Settings
from shipline.store.sql import SqlStore
from shipline.testbed import running
from shipline.testbed.fixtures import Testbed

pytestmark = pytest.mark.testbed


def engine_in(settings: Settings, store: SqlStore, place: KubePlace, **update: object) -> Engine:
    kube = kube_settings(settings, place).model_copy(update=update)
    return Engine(kube, store, KubernetesExecutor(kube, place.kubeconfig), EventBus())


def run(engine: Engine, write: Callable[..., Path], text: str) -> RunRecord:
    run_id = engine.submit(load_pipeline(write(text)), {})
    return asyncio.run(engine.drive(run_id))


def left(engine: Engine, record: RunRecord) -> list[str]:
    executor = engine.executor
    assert isinstance(executor, KubernetesExecutor)
    found = executor.leftovers(record.id)
    for _ in range(60):
        if not found:
            break
        time.sleep(0.5)
        found = executor.leftovers(record.id)
    return found


def task_log(engine: Engine, run_id: int, task: str) -> str:
    return "".join(p.read_text() for p in (engine.settings.logs / str(run_id)).glob(f"{task}.*.log"))


def run_meanwhile(engine: Engine, path: Path, task: str, seen: str, meanwhile: Callable[[int], object]) -> RunRecord:
    """Run the pipeline at `path`; once `seen` is in `task`'s log, `meanwhile(run_id)` (in a
    thread, while the run goes on); the run's record at its end (within 3 minutes)."""

    async def scenario() -> RunRecord:
        run_id = engine.submit(load_pipeline(path), {})
        driving = asyncio.create_task(engine.drive(run_id))
        while seen not in task_log(engine, run_id, task):
            if driving.done():
                raise AssertionError(f"the run ended; {task}'s log never had {seen!r}: {task_log(engine, run_id, task)[-500:]!r}")
            await asyncio.sleep(0.05)
        await asyncio.to_thread(meanwhile, run_id)
        return await asyncio.wait_for(driving, 180)

    return asyncio.run(scenario())


@pytest.fixture
def other_namespace(kube_place: KubePlace) -> Iterator[str]:
    """A namespace of its own with a workspace claim (deleted after the test)."""
    name = f"shipline-fault-{uuid.uuid4().hex[:8]}"
    kube_place.run("create", "namespace", name)
    kube_place.run("apply", "-f", "-", stdin=claim_yaml(name, name, kube_place.workspace_dir / name))
    yield name
    kube_place.run("delete", "namespace", name, "--wait=false", check=False)
    kube_place.run("delete", "pv", name, "--wait=false", check=False)


def test_an_image_that_does_not_exist_fails_the_task_at_once(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    registry = kube_place.runner_image.split("/")[0]
    engine = engine_in(settings, store, kube_place)
    started = time.monotonic()
    record = run(
        engine,
        write,
        f"""
        name: noimage
        tasks:
          - name: build
            image: {registry}/shipline/does-not-exist:1
            timeout: 5m
            steps: [{{run: echo never}}]
        """,
    )
    took = time.monotonic() - started
    assert record.status == RunStatus.FAILED
    message = record.task("build").message
    assert "does-not-exist:1' could not be pulled" in message and re.search(r"ErrImagePull|ImagePullBackOff", message)
    assert took < 5 * 60, "the task waited for its timeout"
    assert left(engine, record) == []


def test_a_pod_deleted_by_hand_fails_its_task_with_that_reason(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    engine = engine_in(settings, store, kube_place)
    path = write("name: deleted\ntasks: [{name: long, timeout: 5m, steps: [{run: 'echo started-long; sleep 300'}]}]\n")

    def delete_pods(run_id: int) -> None:
        pods = kube_place.run("-n", kube_place.namespace, "get", "pods", "-l", f"shipline.dev/run={run_id}", "-o", "name")
        for pod in pods.stdout.split():
            kube_place.run("-n", kube_place.namespace, "delete", pod, "--wait=false")

    record = run_meanwhile(engine, path, "long", "started-long", delete_pods)
    assert record.status == RunStatus.FAILED
    assert "the pod was deleted (by hand, or evicted)" in record.task("long").message
    assert left(engine, record) == []


def test_a_namespace_where_the_account_may_not_create_pods(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], other_namespace: str, tmp_path: Path
) -> None:
    account = service_account_kubeconfig(kube_place, other_namespace, tmp_path)
    engine = engine_in(settings, store, kube_place, kube_namespace=other_namespace)
    engine.executor = KubernetesExecutor(engine.settings, account)
    record = run(engine, write, "name: norbac\ntasks: [{name: a, steps: [{run: echo hi}]}]\n")
    assert record.status == RunStatus.FAILED
    message = record.task("a").message
    assert f"the cluster refused to create the task's pod in namespace '{other_namespace}'" in message
    assert "needs the Role" in message
    admin = KubernetesExecutor(engine.settings, kube_place.kubeconfig)
    assert admin.leftovers() == []


def readme_rbac(namespace: str) -> str:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- kube-rbac -->", 1)[1].split("<!-- /kube-rbac -->", 1)[0]
    return block.strip().removeprefix("```yaml").removesuffix("```").replace("shipline-runs", namespace)


ATTACH_RULE = """  - apiGroups: [""]
    resources: [pods/attach]
    verbs: [create, get]
"""


def test_the_readme_role_is_all_the_executor_needs(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], other_namespace: str, tmp_path: Path
) -> None:
    kube_place.run("apply", "-f", "-", stdin=readme_rbac(other_namespace))
    account = service_account_kubeconfig(kube_place, other_namespace, tmp_path)
    engine = engine_in(settings, store, kube_place, kube_namespace=other_namespace)
    engine.executor = KubernetesExecutor(engine.settings, account)
    engine.secrets.set("token", "rbac-secret-value")
    record = run(
        engine,
        write,
        """
        name: withrbac
        tasks:
          - name: a
            env: {CONF: "${{ secret_files.token }}"}
            steps: [{run: 'echo "v=$(wc -c < $CONF)" >> $SHIPLINE_OUTPUT; echo ok'}]
            results: [v]
          - name: b
            timeout: 3s
            steps: [{run: 'sleep 60'}]
        """,
    )
    assert record.task("a").status.value == "succeeded", record.task("a").message
    assert record.task("a").results == {"v": str(len("rbac-secret-value"))}, "the secret file reached the pod"
    assert record.task("b").message == "timed out after 3s"
    assert left(engine, record) == []


def test_a_role_without_attach_still_runs_the_tasks_from_their_logs(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], other_namespace: str, tmp_path: Path
) -> None:
    # Least privilege: no `pods/attach`.  The executor asks once, and reads each container's log
    # instead (its pods do not wait for an attach that would never come).
    rbac = readme_rbac(other_namespace)
    assert ATTACH_RULE in rbac, "the README's Role gives pods/attach"
    kube_place.run("apply", "-f", "-", stdin=rbac.replace(ATTACH_RULE, ""))
    account = service_account_kubeconfig(kube_place, other_namespace, tmp_path)
    engine = engine_in(settings, store, kube_place, kube_namespace=other_namespace)
    engine.executor = KubernetesExecutor(engine.settings, account)
    record = run(
        engine,
        write,
        """
        name: noattach
        tasks:
          - name: a
            timeout: 2m
            steps: [{run: 'echo first-line; echo "v=7" >> $SHIPLINE_OUTPUT'}]
            results: [v]
          - name: b
            timeout: 2m
            needs: [a]
            steps: [{run: 'echo "got ${{ tasks.a.results.v }}"'}]
        """,
    )
    assert record.status == RunStatus.SUCCEEDED, [(t.name, t.message) for t in record.tasks]
    assert record.task("a").results == {"v": "7"}
    logs = engine.settings.logs / str(record.id)
    assert "first-line" in "".join(p.read_text() for p in logs.glob("a.*.log"))
    assert "got 7" in "".join(p.read_text() for p in logs.glob("b.*.log"))
    assert left(engine, record) == []


def test_the_api_server_restarting_mid_task_loses_no_line(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], testbed: Testbed
) -> None:
    engine = engine_in(settings, store, kube_place)
    step = 'for i in $(seq 1 40); do echo "line-$i"; sleep 0.5; done; echo "n=40" >> $SHIPLINE_OUTPUT'
    path = write(f"name: restart\ntasks: [{{name: count, timeout: 3m, results: [n], steps: [{{run: '{step}'}}]}}]\n")

    def restart_the_api_server(run_id: int) -> None:
        assert running.down(testbed.layout, report=lambda line: None, only={"kube-apiserver"}) == ["kube-apiserver"]
        time.sleep(2)  # the stream is cut; the step goes on printing on the node
        running.up(testbed.layout, os.environ, testbed.state.ports["registry"], report=lambda line: None)

    try:
        record = run_meanwhile(engine, path, "count", "line-3\n", restart_the_api_server)
    finally:
        # The controllers' caches may lag the restarted API server for a minute (a claim made
        # now would bind late): restarted too, so the tests after this one find it as it was.
        controllers = {"kube-controller-manager", "kube-scheduler"}
        running.down(testbed.layout, report=lambda line: None, only=controllers)
        running.up(testbed.layout, os.environ, testbed.state.ports["registry"], report=lambda line: None)
    assert record.status == RunStatus.SUCCEEDED, record.task("count").message
    assert record.task("count").results == {"n": "40"}
    timestamped = task_log(engine, record.id, "count").splitlines()
    lines = [line.split(" ", 1)[1] for line in timestamped if " line-" in line]
    assert lines == [f"line-{i}" for i in range(1, 41)], "every line once, in order, across the restart"
    assert left(engine, record) == []


def test_a_node_that_stops_answering_fails_its_task_with_that_reason(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], testbed: Testbed
) -> None:
    engine = engine_in(settings, store, kube_place)
    path = write("name: nodedown\ntasks: [{name: long, timeout: 10m, steps: [{run: 'echo started-long; sleep 600'}]}]\n")

    def stop_the_kubelet(run_id: int) -> None:
        # The node controller taints the node after its grace period (40 s by default).
        assert running.down(testbed.layout, report=lambda line: None, only={"kubelet"}) == ["kubelet"]

    try:
        record = run_meanwhile(engine, path, "long", "started-long", stop_the_kubelet)
    finally:
        running.up(testbed.layout, os.environ, testbed.state.ports["registry"], report=lambda line: None)
    assert record.status == RunStatus.FAILED
    message = record.task("long").message
    assert "the pod's node 'shipline-node' stopped answering: the cluster marked it unreachable" in message
    assert "stopped answering" in task_log(engine, record.id, "long"), "the step's log says why it ended"
    assert left(engine, record) == [], "the pod is deleted without waiting for its node"


def test_a_namespace_over_its_quota(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path], other_namespace: str
) -> None:
    kube_place.run("-n", other_namespace, "create", "quota", "no-pods", "--hard=pods=0")
    engine = engine_in(settings, store, kube_place, kube_namespace=other_namespace)
    record = run(engine, write, "name: quota\ntasks: [{name: a, steps: [{run: echo hi}]}]\n")
    assert record.status == RunStatus.FAILED
    assert "a ResourceQuota is exhausted" in record.task("a").message
    assert left(engine, record) == [], "the attempt's Secret must go when its pod is refused"


def test_a_missing_workspace_claim_fails_at_once_naming_the_fix(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    engine = engine_in(settings, store, kube_place, kube_workspace_claim="no-such-claim")
    record = run(engine, write, "name: noclaim\ntasks: [{name: a, timeout: 60s, steps: [{run: echo hi}]}]\n")
    assert record.status == RunStatus.FAILED
    message = record.task("a").message
    assert "create the workspace claim 'no-such-claim'" in message, message
    assert "timed out" not in message, "it fails when the scheduler says why, not at the timeout"
    assert left(engine, record) == []


def test_a_pod_that_no_node_takes_times_out_saying_why(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    # Waiting is right (a cluster autoscaler may add the node); waiting in silence is not.
    engine = engine_in(settings, store, kube_place, kube_node_selector="kubernetes.io/hostname=no-such-node")
    record = run(engine, write, "name: nonode\ntasks: [{name: a, timeout: 8s, steps: [{run: echo hi}]}]\n")
    assert record.status == RunStatus.FAILED
    message = record.task("a").message
    assert message.startswith("timed out after 8s (the pod was never scheduled: 0/"), message
    assert "didn't match Pod's node affinity/selector" in message
    assert "the pod was never scheduled" in task_log(engine, record.id, "a"), "the step's log says why"
    assert left(engine, record) == []


def test_a_pod_waiting_for_a_node_says_why_while_it_waits(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    """Not only at the timeout: the first step's log says what the scheduler said, as it waits."""
    engine = engine_in(settings, store, kube_place, kube_node_selector="kubernetes.io/hostname=no-such-node")
    path = write("name: waits\ntasks: [{name: a, timeout: 300s, steps: [{run: echo one}, {run: echo two}]}]\n")

    record = run_meanwhile(engine, path, "a", "shipline: waiting for a node: 0/", engine.cancel)

    assert record.status == RunStatus.CANCELLED
    steps = {s.name: s for s in record.task("a").steps}
    assert steps["echo one"].status == "cancelled" and "echo two" not in steps, "the first step waited, the second never began"
    log = task_log(engine, record.id, "a")
    assert "didn't match Pod's node affinity/selector" in log.split("shipline: waiting for a node: ", 1)[1]
    assert "the step's pod was deleted" in log
    assert left(engine, record) == []


def test_a_restarted_engine_ends_the_pods_a_dead_engine_left(
    settings: Settings, kube_place: KubePlace, write: Callable[..., Path], tmp_path: Path
) -> None:
    path = write("name: orphan\ntasks: [{name: long, steps: [{run: 'echo started-long; sleep 300'}]}]\n")
    kube = kube_settings(settings, kube_place)
    env = {
        **os.environ,
        "SHIPLINE_HOME": str(kube.home),
        "KUBECONFIG": str(kube_place.kubeconfig),
        "SHIPLINE_EXECUTOR": "kubernetes",
        "SHIPLINE_KUBE_NAMESPACE": kube.kube_namespace,
        "SHIPLINE_RUNNER_IMAGE": kube_place.runner_image,
        "SHIPLINE_KUBE_NODE_SELECTOR": kube.kube_node_selector,
        "SHIPLINE_KUBE_TOLERATIONS": kube.kube_tolerations,
    }
    cli = Background("run", str(path), output=tmp_path / "run.out", env=env)
    executor = KubernetesExecutor(kube, kube_place.kubeconfig)
    try:
        deadline = time.monotonic() + 120
        while "started-long" not in "".join(p.read_text() for p in (kube.logs / "1").glob("long.*.log")):
            assert time.monotonic() < deadline and cli.proc.poll() is None, f"the run's step did not start: {cli.why()}"
            time.sleep(0.1)
        cli.proc.send_signal(signal.SIGKILL)  # the engine dies; its pod runs on
        cli.proc.wait(10)
    finally:
        if cli.proc.poll() is None:
            cli.proc.kill()
    assert any(name.startswith("Pod/") for name in executor.leftovers(1)), "the dead engine's pod should still be there"
    store = SqlStore(kube.database)
    try:
        later = Engine(kube, store, executor, EventBus())
        assert later.recover() == [1]
        record = store.get_run(1)
    finally:
        store.close()
    assert record.status == RunStatus.FAILED and "interrupted" in record.message
    found = executor.leftovers(1)
    for _ in range(60):
        if not found:
            break
        time.sleep(0.5)
        found = executor.leftovers(1)
    assert found == []


def service_account_kubeconfig(place: KubePlace, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig of the ServiceAccount `shipline` in `namespace` (made if missing): a token, the cluster's CA."""
    place.run("-n", namespace, "create", "serviceaccount", "shipline", check=False)
    token = place.run("-n", namespace, "create", "token", "shipline", "--duration=1h").stdout.strip()
    admin = json.loads(place.run("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
        "current-context": "sa",
    }
    path = tmp_path / f"{namespace}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def test_steps_of_other_images_run_in_order_in_one_pod(
    settings: Settings, store: SqlStore, kube_place: KubePlace, write: Callable[..., Path]
) -> None:
    # The runner image by digest is another image reference: its step gets a container of its own.
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{kube_place.runner_image}"],
        capture_output=True,
        text=True,
        check=True,
    )
    by_digest = kube_place.runner_image.rsplit(":", 1)[0] + "@" + json.loads(inspected.stdout)["Digest"]
    engine = engine_in(settings, store, kube_place)
    record = run(
        engine,
        write,
        f"""
        name: images
        tasks:
          - name: mixed
            steps:
              - run: 'echo one > order; echo "a=1" >> "$SHIPLINE_OUTPUT"'
              - run: 'echo two >> order; echo "b=$(hostname)" >> "$SHIPLINE_OUTPUT"'
                image: {by_digest}
              - run: 'echo three >> order; echo "c=$(tr "\\n" , < order)" >> "$SHIPLINE_OUTPUT"'
            results: [a, b, c]
        """,
    )
    assert record.status == RunStatus.SUCCEEDED, record.message
    results = record.task("mixed").results
    assert results["a"] == "1" and results["c"] == "one,two,three,"
    assert results["b"].startswith(f"shipline-{record.id}-mixed-1-"), "all steps ran in the task's one pod"
    assert left(engine, record) == []
