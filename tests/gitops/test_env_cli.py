"""`shipline env ...` end to end: a Gitea repository, the testbed's kube-apiserver with kwok nodes, real helm.

Each test commits an environment repository, registers it, syncs it with the
real CLI in a subprocess and looks at the cluster with kubectl.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from envkit import push_chart, write, write_chart
from helpers import shipline

from shipline.testbed.fixtures import GiteaRepo, Testbed

pytestmark = pytest.mark.testbed


def deployment(name: str, image: str, *, cpu: str | None = None) -> str:
    resources = f"\n          resources: {{requests: {{cpu: \"{cpu}\"}}}}" if cpu else ""
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


@pytest.fixture
def env_repo(tmp_path: Path, gitea_repo: GiteaRepo) -> EnvRepo:
    return EnvRepo(tmp_path / "env-repo", gitea_repo.clone_url)


@pytest.fixture
def cli_env(home: Path, testbed: Testbed, helm: Path, kubectl: Path) -> dict[str, str]:
    """What the CLI gets: the testbed's variables and its helm and kubectl on PATH."""
    path = os.pathsep.join([str(helm.parent), str(kubectl.parent), os.environ.get("PATH", "")])
    return {**testbed.env, "PATH": path, "SHIPLINE_HOME": str(home)}


class Kube:
    def __init__(self, kubectl: Path, kubeconfig: Path, namespace: str) -> None:
        self.kubectl, self.kubeconfig, self.namespace = kubectl, kubeconfig, namespace

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
            capture_output=True, text=True, timeout=120, check=False,
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


@pytest.fixture
def kube(kubectl: Path, kubeconfig: Path, namespace: str) -> Kube:
    return Kube(kubectl, kubeconfig, namespace)


def declare(tmp_path: Path, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, **extra: str) -> Path:
    env = {"name": "dev", "repo": f"{gitea_repo.html_url}.git", "branch": "main", "namespace": namespace,
           "kubeconfig": str(kubeconfig), "verify-timeout": "60s", **extra}
    path = tmp_path / "environments.yaml"
    path.write_text(json.dumps({"environments": [env]}, indent=2))
    return path


def env_cmd(cli_env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return shipline("env", *args, env=cli_env, timeout=timeout)


def status(cli_env: dict[str, str]) -> dict[str, str]:
    done = env_cmd(cli_env, "status", "dev", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def synced(cli_env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    done = env_cmd(cli_env, "sync", "dev", *extra)
    assert done.returncode == 0, f"sync failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


# --- the three layouts ----------------------------------------------------------------------


def test_manifests_sync_prune_and_leave_hand_made_objects_alone(
    tmp_path: Path, env_repo: EnvRepo, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, cli_env: dict[str, str], kube: Kube,
) -> None:
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.0.0"))
    env_repo.write("manifests/worker.yaml", deployment("worker", "reg.example/worker:2.0.0"))
    first = env_repo.commit("hello and worker")
    applied = env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig)))
    assert applied.returncode == 0, applied.stderr
    assert "dev: registered" in applied.stdout

    before = status(cli_env)
    assert (before["sync"], before["health"], before["commit"], before["applied_commit"]) == ("OutOfSync", "Missing", first, "")

    synced(cli_env)
    assert kube.images() == {"hello": "reg.example/hello:1.0.0", "worker": "reg.example/worker:2.0.0"}
    assert kube.names("services") == {"hello", "worker"}
    now = status(cli_env)
    assert now == {**now, "name": "dev", "sync": "Synced", "health": "Healthy", "commit": first, "applied_commit": first}

    kube.run("create", "configmap", "made-by-hand", "--from-literal=a=b")
    env_repo.remove("manifests/worker.yaml")
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.1.0"))
    second = env_repo.commit("drop worker, hello 1.1.0")
    assert status(cli_env)["sync"] == "OutOfSync", "a new commit on the branch is not applied yet"

    synced(cli_env)
    assert kube.images() == {"hello": "reg.example/hello:1.1.0"}
    assert kube.names("services") == {"hello"}
    assert "made-by-hand" in kube.names("configmaps"), "prune touches only what shipline applied"
    assert status(cli_env)["applied_commit"] == second

    history = json.loads(env_cmd(cli_env, "history", "dev", "--json").stdout)
    assert [(h["commit"], h["outcome"]) for h in history] == [(second, "verified"), (first, "verified")]
    listed = env_cmd(cli_env, "list").stdout
    assert "dev" in listed and second[:12] in listed


def test_an_umbrella_chart_sync(
    tmp_path: Path, env_repo: EnvRepo, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, cli_env: dict[str, str],
    kube: Kube, helm: Path, registry: str,
) -> None:
    name = f"api-{uuid.uuid4().hex[:6]}"
    repo = push_chart(helm, write_chart(tmp_path / "charts", name, "1.4.0", image="reg.example/api", tag="1.4.0"), registry, tmp_path)
    env_repo.write("Chart.yaml", f"""
        apiVersion: v2
        name: dev
        version: 0.1.0
        dependencies:
          - {{name: {name}, version: 1.4.0, repository: "{repo}"}}
    """)
    env_repo.write("values.yaml", f"{name}:\n  replicas: 2\n")
    head = env_repo.commit("api 1.4.0")
    assert env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0
    synced(cli_env)
    assert kube.images() == {name: "reg.example/api:1.4.0"}
    assert kube.get("deployments")[0]["status"]["availableReplicas"] == 2
    now = status(cli_env)
    assert (now["sync"], now["health"], now["applied_commit"]) == ("Synced", "Healthy", head)


def test_a_helmfile_sync(
    tmp_path: Path, env_repo: EnvRepo, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, cli_env: dict[str, str],
    kube: Kube, helm: Path, registry: str,
) -> None:
    name = f"hello-{uuid.uuid4().hex[:6]}"
    repo = push_chart(helm, write_chart(tmp_path / "charts", name, "2.0.0", image="reg.example/hello", tag="2.0.0"), registry, tmp_path)
    env_repo.write("helmfile.yaml", f"""
        releases:
          - name: hello
            chart: {repo}/{name}
            version: 2.0.0
            values:
              - values/hello.yaml
          - name: web
            chart: {repo}/{name}
            version: 2.0.0
            values:
              - name: web
                image: {{tag: "2.0.1"}}
    """)
    env_repo.write("values/hello.yaml", "name: hello\n")
    head = env_repo.commit("hello and web")
    assert env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0
    synced(cli_env)
    assert kube.images() == {"hello": "reg.example/hello:2.0.0", "web": "reg.example/hello:2.0.1"}
    now = status(cli_env)
    assert (now["sync"], now["health"], now["applied_commit"]) == ("Synced", "Healthy", head)


# --- bad input: a clear reason, exit 2, nothing applied ----------------------------------------


@pytest.mark.parametrize("files, reason", [
    ({"manifests/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n"},
     "manifests/app.yaml:5:1: not valid YAML"),
    ({"manifests/app.yaml": "apiVersion: widgets.example.com/v1\nkind: Widget\nmetadata: {name: w}\n"},
     "Widget"),
    ({"Chart.yaml": "apiVersion: v2\nname: env\nversion: 0.1.0\n",
      "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.name }}\n"},
     "the umbrella chart 'env' does not render"),
])
def test_bad_input_fails_with_the_reason_and_applies_nothing(
    tmp_path: Path, env_repo: EnvRepo, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, cli_env: dict[str, str],
    kube: Kube, files: dict[str, str], reason: str,
) -> None:
    for name, text in files.items():
        env_repo.write(name, text)
    env_repo.write("manifests/good.yaml" if "manifests/app.yaml" in files else "templates/good.yaml",
                   deployment("good", "reg.example/good:1.0.0"))
    env_repo.commit("broken")
    assert env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0
    done = env_cmd(cli_env, "sync", "dev")
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert reason in done.stdout + done.stderr
    assert kube.get("deployments") == [], "nothing is applied when any object is bad"
    now = status(cli_env)
    assert (now["sync"], now["health"], now["applied_commit"]) == ("OutOfSync", "Missing", "")
    assert "not applied" in now["message"]


# --- a rollout that never completes: rolled back, exit 1 ----------------------------------------


def test_a_failed_verify_rolls_back_and_rollback_to_goes_back_further(
    tmp_path: Path, env_repo: EnvRepo, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, cli_env: dict[str, str], kube: Kube,
) -> None:
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.0.0"))
    first = env_repo.commit("hello 1.0.0")
    declaration = declare(tmp_path, gitea_repo, namespace, kubeconfig, **{"verify-timeout": "15s"})
    assert env_cmd(cli_env, "apply", str(declaration)).returncode == 0
    synced(cli_env)
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.1.0"))
    second = env_repo.commit("hello 1.1.0")
    synced(cli_env)

    # No node has 500 CPUs: the new pods stay Pending and the rollout never completes.
    env_repo.write("manifests/hello.yaml", deployment("hello", "reg.example/hello:1.2.0", cpu="500"))
    third = env_repo.commit("hello 1.2.0, far too big")
    done = env_cmd(cli_env, "sync", "dev")
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    assert f"rolled back to {second[:12]}" in done.stdout
    assert kube.images() == {"hello": "reg.example/hello:1.1.0"}
    now = status(cli_env)
    assert (now["sync"], now["commit"], now["applied_commit"]) == ("OutOfSync", third, second)
    assert "rolled back" in now["message"]
    history = json.loads(env_cmd(cli_env, "history", "dev", "--json").stdout)
    assert (history[0]["commit"], history[0]["outcome"], history[0]["rolled_back_to"]) == (third, "rolled-back", second)

    back = env_cmd(cli_env, "rollback", "dev", "--to", first)
    assert back.returncode == 0, f"{back.stdout}\n{back.stderr}"
    assert kube.images() == {"hello": "reg.example/hello:1.0.0"}
    assert status(cli_env)["applied_commit"] == first
    again = env_cmd(cli_env, "rollback", "dev")
    assert again.returncode == 0, again.stderr
    assert status(cli_env)["applied_commit"] == second, "without --to: the verified commit before the applied one"


def test_env_apply_reports_every_problem_and_stores_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = write(tmp_path / "environments.yaml", """
        environments:
          - name: dev
            repo: http://127.0.0.1:1/org/env.git
            namespace: dev
            kubeconfig: missing.kubeconfig
            sync: always
    """)
    done = env_cmd(cli_env, "apply", str(path))
    assert done.returncode == 2
    assert f"{path}:6:11: environments.0.sync: Input should be 'auto' or 'manual'" in done.stderr
    assert env_cmd(cli_env, "list", "--json").stdout.strip() == "[]"
    unknown = env_cmd(cli_env, "sync", "nope")
    assert unknown.returncode == 2 and "no environment 'nope'" in unknown.stderr
