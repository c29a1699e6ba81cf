"""Environment sync benchmarks on the testbed: apply + verify of N services.

    python bench/environments.py              # 20 and 200 services
    python bench/environments.py --sizes 20   # just 20

Each service is one Deployment (one replica) + one Service, in a namespace of
its own.  For each size, in the same run and on the same cluster:

  shipline   Cluster.load + apply + prune + verify (in process, as the
             env-apply/env-prune/env-verify steps do), until every Deployment
             rolled out; then the same with one service's image changed.
  floor      `kubectl apply --server-side` of the same files, then
             `kubectl wait --for=condition=Available` on every Deployment (initial)
             or `kubectl rollout status` of the changed one.

The floor is what the cluster itself takes (controller-manager and scheduler
with the testbed's settings); shipline's cost is the difference.  Prints a
table and writes bench/results/environments.json.  Not a test: nothing here
asserts a time.  Needs the testbed up (`shipline testbed up`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from gitops import service  # bench/ is on sys.path: one service manifest for both benchmarks

from shipline.integrations.clusterobjects import Target
from shipline.integrations.clusters import Cluster
from shipline.testbed.layout import layout_from_env
from shipline.testbed.parts import KUBERNETES


def manifests(directory: Path, count: int, changed: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for i in range(count):
        name = f"svc-{i:03d}"
        tag = "2.0" if i == changed else "1.0"
        (directory / f"{name}.yaml").write_text(service(name, tag))
    return directory


class Kubectl:
    def __init__(self, program: Path, kubeconfig: Path) -> None:
        self.program, self.kubeconfig = program, kubeconfig

    def __call__(self, *args: str, timeout: float = 900) -> None:
        subprocess.run(
            [str(self.program), f"--kubeconfig={self.kubeconfig}", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def drop(self, namespace: str) -> None:
        """Delete the namespace and wait until it is gone: its pods would hold kwok's pod slots."""
        self("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=600s", timeout=660)


def shipline_sync(cluster: Cluster, directory: Path, timeout: float) -> dict[str, float]:
    started = time.perf_counter()
    desired = cluster.load(directory)
    loaded = time.perf_counter()
    cluster.apply(desired)
    applied = time.perf_counter()
    cluster.prune(desired)
    pruned = time.perf_counter()
    verification = cluster.verify(desired, timeout)
    done = time.perf_counter()
    if not verification.ok:
        raise SystemExit(f"shipline verify failed: {[str(f) for f in verification.failures()[:3]]}")
    return {
        "total": done - started,
        "load": loaded - started,
        "apply": applied - loaded,
        "prune": pruned - applied,
        "verify": done - pruned,
    }


def floor_sync(kubectl: Kubectl, namespace: str, directory: Path, changed: str | None) -> float:
    started = time.perf_counter()
    kubectl("apply", "--server-side", "--field-manager=floor", "-n", namespace, "-f", str(directory))
    if changed:
        kubectl("rollout", "status", "-n", namespace, f"deployment/{changed}", "--timeout=600s")
    else:
        kubectl("wait", "-n", namespace, "--for=condition=Available", "deployment", "--all", "--timeout=600s")
    return time.perf_counter() - started


def run_size(count: int, kubectl: Kubectl, kubeconfig: Path, work: Path, reps: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {
        "floor initial": [],
        "floor one changed": [],
        "shipline initial": [],
        "shipline one changed": [],
    }
    phases: list[dict[str, float]] = []
    for rep in range(reps):
        tag = uuid.uuid4().hex[:6]
        base = manifests(work / f"{count}-{tag}-a", count)
        one = manifests(work / f"{count}-{tag}-b", count, changed=0)

        floor_ns = f"bench-floor-{count}-{tag}"
        kubectl("create", "namespace", floor_ns)
        try:
            rows["floor initial"].append(floor_sync(kubectl, floor_ns, base, None))
            rows["floor one changed"].append(floor_sync(kubectl, floor_ns, one, "svc-000"))
        finally:
            kubectl.drop(floor_ns)

        ns = f"bench-shipline-{count}-{tag}"
        cluster = Cluster.connect(kubeconfig, environment="bench", target=Target(ns))
        try:
            initial = shipline_sync(cluster, base, timeout=600)
            rows["shipline initial"].append(initial["total"])
            changed = shipline_sync(cluster, one, timeout=600)
            rows["shipline one changed"].append(changed["total"])
            phases += [{"case": "initial", **initial}, {"case": "one changed", **changed}]
        finally:
            kubectl.drop(ns)
        print(f"  {count} services, round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()), flush=True)
    return {
        "services": count,
        "rounds": reps,
        "median_seconds": {k: statistics.median(v) for k, v in rows.items()},
        "all_seconds": rows,
        "shipline_phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,200")
    parser.add_argument("--reps", type=int, default=0, help="rounds per size (default: 3 for <= 50 services, else 1)")
    args = parser.parse_args()
    layout = layout_from_env(os.environ, Path.home())
    kubeconfig = layout.kubeconfig
    kubectl = Kubectl(layout.program(KUBERNETES, "kubectl"), kubeconfig)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(s) for s in args.sizes.split(",")):
            reps = args.reps or (3 if count <= 50 else 1)
            results.append(run_size(count, kubectl, kubeconfig, Path(tmp), reps))

    print()
    print(f"{'services':>8}  {'case':<12}  {'kubectl floor':>13}  {'shipline':>9}  {'shipline - floor':>16}")
    for r in results:
        m = r["median_seconds"]
        for case in ("initial", "one changed"):
            floor, ours = m[f"floor {case}"], m[f"shipline {case}"]
            print(f"{r['services']:>8}  {case:<12}  {floor:>12.2f}s  {ours:>8.2f}s  {ours - floor:>+15.2f}s")
    print("(median seconds from start to every Deployment rolled out; shipline = load + validate + apply + prune + verify)")

    out = Path(__file__).parent / "results" / "environments.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
