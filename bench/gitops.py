"""GitOps with the server running: from a commit on the environment repository to "verified".

    python bench/gitops.py                 # 20 and 200 services
    python bench/gitops.py --sizes 20

For each size, a fresh environment (a bare git repository on this machine, a
namespace of its own, `sync: auto`) is registered with `shipline env apply`
and a real `shipline serve` runs beside it.  Each service is one Deployment
(one replica) + one Service.  Timed, per size:

  initial       commit N services, send the signed push webhook, until the
                server's history says the commit was applied and verified
  one changed   change one service's image in the same way
  floor         in the same run: `kubectl apply --server-side` of the same
                files + `kubectl wait` (initial) / `rollout status` (one
                changed): what the cluster itself takes

and the server's memory (VmRSS / VmHWM of the `shipline serve` process; its
steps are processes of their own).  Prints a table and writes
bench/results/gitops.json.  Not a test: nothing here asserts a time.  Needs the
testbed up (`shipline testbed up`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from shipline.testbed.layout import layout_from_env
from shipline.testbed.parts import HELM, KUBERNETES

HERE = Path(__file__).resolve().parent
SECRET = "bench-hook-" + uuid.uuid4().hex


def service(name: str, tag: str) -> str:
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
      containers: [{{name: app, image: "127.0.0.1:1/{name}:{tag}", resources: {{requests: {{cpu: 10m}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def write_services(directory: Path, count: int, changed: int | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"svc-{i:03d}"
        (directory / f"{name}.yaml").write_text(service(name, "2.0" if i == changed else "1.0"))


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


class Bench:
    def __init__(self, work: Path, env: dict[str, str], kubectl: Path, kubeconfig: Path) -> None:
        self.work, self.env, self.kubectl, self.kubeconfig = work, env, kubectl, kubeconfig
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def shipline(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "shipline", *args], check=True, capture_output=True, text=True, env=self.env, timeout=600
        )

    def kube(self, *args: str, timeout: float = 900) -> None:
        subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def drop(self, namespace: str) -> None:
        self.kube("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=600s", timeout=660)

    def serve(self) -> subprocess.Popen[bytes]:
        log = open(self.work / "serve.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "shipline", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not become ready: see serve.log")

    def push_hook(self, repo: Path) -> None:
        payload = json.loads((HERE.parent / "tests" / "triggers" / "payloads" / "gitea_push.json").read_text())
        payload["ref"] = "refs/heads/main"
        payload["repository"].update(clone_url=str(repo), html_url=str(repo), default_branch="main")
        body = json.dumps(payload).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            self.url + "/hooks/gitea",
            content=body,
            timeout=30,
            headers={
                "Content-Type": "application/json",
                "X-Gitea-Event": "push",
                "X-Gitea-Delivery": str(uuid.uuid4()),
                "X-Gitea-Signature": signature,
            },
        )
        if answer.status_code != 202:
            raise SystemExit(f"webhook refused: {answer.status_code} {answer.text}")

    def until_verified(self, name: str, commit: str, timeout: float = 900) -> int:
        """Wait for the history entry of `commit`; the id of its run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = httpx.get(f"{self.url}/api/v1/environments/{name}/history?limit=1", timeout=30).json()
            if entries and entries[0]["commit"] == commit:
                if entries[0]["outcome"] != "verified":
                    raise SystemExit(f"{name} at {commit[:12]}: {entries[0]['message']}")
                return int(entries[0]["run_id"])
            time.sleep(0.05)
        raise SystemExit(f"{name} at {commit[:12]}: not verified within {timeout:.0f}s")

    def task_seconds(self, run_id: int) -> dict[str, float]:
        """Where the run's time went, task by task (validate and diff run side by side)."""
        record = httpx.get(f"{self.url}/api/v1/runs/{run_id}", timeout=30).json()
        seconds: dict[str, float] = {}
        for task in record["tasks"]:
            if task["started_at"] and task["finished_at"]:
                seconds[task["name"]] = round(_seconds(task["finished_at"]) - _seconds(task["started_at"]), 2)
        seconds["run"] = round(_seconds(record["finished_at"]) - _seconds(record["started_at"]), 2)
        return seconds

    def floor(self, namespace: str, directory: Path, changed: str | None) -> float:
        started = time.perf_counter()
        self.kube("apply", "--server-side", "--field-manager=floor", "-n", namespace, "-f", str(directory))
        if changed:
            self.kube("rollout", "status", "-n", namespace, f"deployment/{changed}", "--timeout=600s")
        else:
            self.kube("wait", "-n", namespace, "--for=condition=Available", "deployment", "--all", "--timeout=600s")
        return time.perf_counter() - started

    def size(self, count: int, server: subprocess.Popen[bytes]) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:6]
        name, namespace = f"bench-{count}-{tag}", f"bench-gitops-{count}-{tag}"
        floor_ns = f"bench-floor-{count}-{tag}"
        row: dict[str, Any] = {"services": count}
        files = self.work / f"floor-{tag}"
        write_services(files, count)
        self.kube("create", "namespace", floor_ns)
        try:
            row["floor initial"] = self.floor(floor_ns, files, None)
            write_services(files, count, changed=0)
            row["floor one changed"] = self.floor(floor_ns, files, "svc-000")
        finally:
            self.drop(floor_ns)

        checkout, bare = self.work / f"env-{tag}", self.work / f"env-{tag}.git"
        checkout.mkdir()
        git(checkout, "init", "-q", "-b", "main")
        git(checkout, "config", "user.email", "bench@example.com")
        git(checkout, "config", "user.name", "bench")
        write_services(checkout / "manifests", count)
        git(checkout, "add", "-A")
        git(checkout, "commit", "-q", "-m", f"{count} services")
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        declaration = self.work / f"{name}.yaml"
        declaration.write_text(
            json.dumps(
                {
                    "environments": [
                        {
                            "name": name,
                            "repo": str(bare),
                            "namespace": namespace,
                            "kubeconfig": str(self.kubeconfig),
                            "sync": "auto",
                            "verify-timeout": "10m",
                        }
                    ]
                }
            )
        )
        self.shipline("env", "apply", str(declaration))
        self.shipline("secrets", "set", f"env-{name}-webhook", "--from-env", "BENCH_HOOK_SECRET")
        try:
            for case, changed in (("shipline initial", None), ("shipline one changed", 0)):
                if changed is not None:
                    write_services(checkout / "manifests", count, changed=changed)
                    git(checkout, "commit", "-q", "-am", "one service changed")
                git(checkout, "push", "-q", str(bare), "HEAD:main")
                commit = git(checkout, "rev-parse", "HEAD")
                started = time.perf_counter()
                self.push_hook(bare)
                run_id = self.until_verified(name, commit)
                row[case] = time.perf_counter() - started
                row[f"{case} tasks"] = self.task_seconds(run_id)
            row["server MiB"] = memory(server.pid)
        finally:
            self.drop(namespace)
        print(f"  {count} services: " + ", ".join(f"{k} {v:.1f}s" for k, v in row.items() if isinstance(v, float)), flush=True)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    args = parser.parse_args()
    layout = layout_from_env(os.environ, Path.home())
    kubectl, helm = layout.program(KUBERNETES, "kubectl"), layout.program(HELM, "helm")
    with tempfile.TemporaryDirectory(prefix="shipline-bench-gitops-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "SHIPLINE_HOME": str(work / "home"),
            "SHIPLINE_ENV_POLL_SECONDS": "3600",
            "SHIPLINE_LOG_LEVEL": "warning",
            "BENCH_HOOK_SECRET": SECRET,
            "PATH": os.pathsep.join([str(kubectl.parent), str(helm.parent), os.environ.get("PATH", "")]),
        }
        env.pop("SHIPLINE_DATABASE_URL", None)
        bench = Bench(work, env, kubectl, layout.kubeconfig)
        server = bench.serve()
        try:
            rows = [bench.size(count, server) for count in args.sizes]
        finally:
            server.terminate()
            server.wait(60)
    print(
        f"\n{'services':>8}  {'shipline initial':>16}  {'floor initial':>13}  {'shipline one changed':>20}  "
        f"{'floor one changed':>17}  server RSS / peak"
    )
    for r in rows:
        mem = r["server MiB"]
        print(
            f"{r['services']:>8}  {r['shipline initial']:>15.1f}s  {r['floor initial']:>12.1f}s  "
            f"{r['shipline one changed']:>19.1f}s  {r['floor one changed']:>16.1f}s  {mem['VmRSS']} / {mem['VmHWM']} MiB"
        )
    out = HERE / "results" / "gitops.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "trigger": "signed push webhook",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    for r in rows:
        for case in ("shipline initial", "shipline one changed"):
            print(f"{r['services']} services, {case}: " + ", ".join(f"{k} {v}s" for k, v in r[f"{case} tasks"].items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
