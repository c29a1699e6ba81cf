"""Kubernetes executor benchmark: overhead per task, beside Tekton's published 5-6 s per TaskRun.

    python bench/kube.py              # 20-task sequential pipeline, 3 repetitions
    python bench/kube.py --quick      # 1 repetition

A 20-task sequential pipeline of trivial steps (`echo step`) runs on the
`kubernetes` executor (each task a pod on the testbed's real node) and on the
`local` executor; the overhead per task is (kubernetes - local) / 20
(BENCH_KUBE_TASKS=N for another count).  Beside it, the floors: a bare pod
(no volume, no Secret) from create to its first line, read from its log (the
kubelet serves a log only once its relist saw the container start) and read
from an attach (served as soon as the container runs: the executor's way), so
what the executor adds beyond a pod shows.  Needs
the testbed up (`shipline testbed up`, real node built): it reads KUBECONFIG
and SHIPLINE_RUNNER_IMAGE from `shipline testbed env` when they are not set.
It makes a namespace and a hostPath workspace volume of its own and deletes
them at the end.

Prints a table and writes bench/results/kube.json.  Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from shipline.domain.runs import RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.base import Executor
from shipline.executors.kubernetes import KubernetesExecutor
from shipline.executors.local import LocalExecutor
from shipline.settings import Settings, load_settings
from shipline.store.sql import SqlStore

TASKS = int(os.environ.get("BENCH_KUBE_TASKS", "20"))
TEKTON_SECONDS = (5.0, 6.0)
"""Tekton's published start-up cost per TaskRun (a pod per TaskRun, with its init containers)."""
TARGET_SECONDS = 1.0


def _testbed_env() -> dict[str, str]:
    if os.environ.get("KUBECONFIG") and os.environ.get("SHIPLINE_RUNNER_IMAGE"):
        return dict(os.environ)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "shipline"), "testbed", "env"], capture_output=True, text=True, check=True
    ).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def _kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    subprocess.run(["kubectl", *args], env=env, input=stdin, text=True, capture_output=True, check=True, timeout=120)


def _place(env: dict[str, str], namespace: str, folder: Path) -> None:
    _kubectl(env, "create", "namespace", namespace)
    _kubectl(
        env,
        "apply",
        "-f",
        "-",
        stdin=textwrap.dedent(
            f"""
            apiVersion: v1
            kind: PersistentVolume
            metadata: {{name: {namespace}}}
            spec:
              capacity: {{storage: 1Gi}}
              accessModes: [ReadWriteMany]
              storageClassName: ""
              hostPath: {{path: {folder}, type: DirectoryOrCreate}}
              claimRef: {{namespace: {namespace}, name: shipline-workspace}}
            ---
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {{name: shipline-workspace, namespace: {namespace}}}
            spec:
              accessModes: [ReadWriteMany]
              storageClassName: ""
              volumeName: {namespace}
              resources: {{requests: {{storage: 1Gi}}}}
            """
        ),
    )
    _kubectl(env, "-n", namespace, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/shipline-workspace", "--timeout=60s")


def _run(home: Path, settings: Settings, executor: Executor, pipeline_file: Path) -> float:
    store = SqlStore(settings.database)
    try:
        engine = Engine(settings, store, executor, EventBus())
        pipeline = load_pipeline(pipeline_file)
        run_id = engine.submit(pipeline, {})
        started = time.perf_counter()
        record = asyncio.run(engine.drive(run_id))
        took = time.perf_counter() - started
        if record.status != RunStatus.SUCCEEDED:
            raise SystemExit(f"the benchmark's run failed: {record.message}")
        return took
    finally:
        store.close()


def _bare_pod(namespace: str, name: str, image: str, attach: bool) -> Any:
    from lightkube.resources.core_v1 import Pod

    container: dict[str, Any] = {"name": "c", "image": image, "command": ["echo", "hi"]}
    if attach:
        container.update(command=["sh", "-c", "read -r go && echo hi"], stdin=True)
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "nodeSelector": {"kubernetes.io/hostname": "shipline-node"},
                "tolerations": [{"key": "shipline.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [container],
            },
        }
    )


async def _bare_pod_seconds(env: dict[str, str], namespace: str, count: int, attach: bool) -> list[float]:
    """The floor: a bare pod (no volumes, no Secret) from create to its first line, then deleted;
    the line read from its log (served once the kubelet's relist saw the container start), or
    from an attach (served as soon as the container runs; the container waits for it on stdin)."""
    from lightkube import ApiError, AsyncClient
    from lightkube.resources.core_v1 import Pod

    client = AsyncClient(namespace=namespace)
    times = []
    try:
        for i in range(count):
            name = f"bare-{i}-{uuid.uuid4().hex[:4]}"
            started = time.perf_counter()
            await client.create(_bare_pod(namespace, name, env["SHIPLINE_RUNNER_IMAGE"], attach))
            seen = False
            while not seen:
                try:
                    if attach:
                        seen = await _attach_line(client, namespace, name)
                    else:
                        seen = any(["hi" in line async for line in client.log(name, namespace=namespace)])
                except ApiError:
                    pass
                if not seen:
                    await asyncio.sleep(0.05)
            times.append(time.perf_counter() - started)
            await client.delete(Pod, name, namespace=namespace, grace_period=0)
    finally:
        await client.close()
    return times


async def _attach_line(client: Any, namespace: str, name: str) -> bool:
    inner = client._client._client
    path = f"/api/v1/namespaces/{namespace}/pods/{name}/attach"
    params = {"container": "c", "stdin": "true", "stdout": "true", "stderr": "true"}
    try:
        async with inner.websocket(path, subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"], params=params) as ws:
            await ws.send_bytes(b"\x00go\n")
            while True:
                message = await ws.receive_bytes()
                if message[0] == 1 and b"hi" in message:
                    return True
                if message[0] == 3:
                    return False
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    repetitions = 1 if args.quick else 3
    env = _testbed_env()
    os.environ["KUBECONFIG"] = env["KUBECONFIG"]
    if not shutil.which("kubectl", path=env.get("PATH")):
        raise SystemExit('kubectl is not on PATH: `eval "$(shipline testbed env)"` first')
    namespace = f"shipline-bench-{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="shipline-kube-bench-"))
    work = Path(tempfile.mkdtemp(prefix="shipline-kube-bench-home-"))
    body = "\n".join(f"  - name: t{i}\n    steps: [{{run: 'echo step {i}'}}]" for i in range(TASKS))
    pipeline_file = work / "seq.yaml"
    pipeline_file.write_text(f"name: seq\ntasks:\n{body}\n")
    local_times: list[float] = []
    kube_times: list[float] = []
    try:
        _place(env, namespace, folder)
        for rep in range(repetitions + 1):  # the first kubernetes run warms the node (image, volume): not counted
            home = work / f"home-{rep}"
            settings = load_settings({"SHIPLINE_HOME": str(home)})
            local = _run(home, settings, LocalExecutor.from_settings(settings), pipeline_file)
            kube_settings = settings.model_copy(
                update={
                    "executor": "kubernetes",
                    "kube_namespace": namespace,
                    "runner_image": env["SHIPLINE_RUNNER_IMAGE"],
                    "kube_node_selector": "kubernetes.io/hostname=shipline-node",
                    "kube_tolerations": "shipline.dev/real-node=true:NoSchedule",
                    "home": work / f"kube-home-{rep}",
                }
            )
            kube = _run(home, kube_settings, KubernetesExecutor(kube_settings, Path(env["KUBECONFIG"])), pipeline_file)
            if rep:
                local_times.append(local)
                kube_times.append(kube)
        bare_log = asyncio.run(_bare_pod_seconds(env, namespace, 10, attach=False))
        bare_attach = asyncio.run(_bare_pod_seconds(env, namespace, 10, attach=True))
    finally:
        subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], env=env, capture_output=True)
        subprocess.run(["kubectl", "delete", "pv", namespace, "--wait=false"], env=env, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    local_s = statistics.median(local_times)
    kube_s = statistics.median(kube_times)
    per_task = (kube_s - local_s) / TASKS
    bare = statistics.median(bare_attach)
    result: dict[str, Any] = {
        "bare_pod_log_seconds": round(statistics.median(bare_log), 3),
        "bare_pod_attach_seconds": round(bare, 3),
        "executor_beyond_bare_pod_seconds": round(per_task - bare, 3),
        "tasks": TASKS,
        "repetitions": repetitions,
        "local_seconds": round(local_s, 3),
        "kubernetes_seconds": round(kube_s, 3),
        "kubernetes_runs_seconds": [round(t, 3) for t in kube_times],
        "overhead_per_task_seconds": round(per_task, 3),
        "tekton_per_taskrun_seconds": list(TEKTON_SECONDS),
        "target_per_task_seconds": TARGET_SECONDS,
        "meets_target": per_task < TARGET_SECONDS,
    }
    print(f"{'':32} {'seconds':>10}")
    print(f"{f'local, {TASKS} tasks':32} {local_s:10.2f}")
    print(f"{f'kubernetes, {TASKS} tasks':32} {kube_s:10.2f}   (runs: {', '.join(f'{t:.2f}' for t in kube_times)})")
    print(f"{'overhead per task (kubernetes)':32} {per_task:10.2f}")
    print(f"{'bare pod: first line, log':32} {statistics.median(bare_log):10.2f}")
    print(f"{'bare pod: first line, attach':32} {bare:10.2f}")
    print(f"{'executor beyond the bare pod':32} {per_task - bare:10.2f}")
    print(f"{'Tekton, per TaskRun (published)':32} {'5-6':>10}")
    print(f"{'target':32} {'< 1':>10}")
    out = Path(__file__).parent / "results" / "kube.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
