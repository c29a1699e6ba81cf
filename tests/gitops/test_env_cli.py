"""`shipline env ...` end to end: a Gitea repository, the testbed's kube-apiserver with kwok nodes, real helm.

Each test commits an environment repository, registers it, syncs it with the
real CLI in a subprocess and looks at the cluster with kubectl.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from envkit import EnvRepo, Kube, deployment, env_cmd, push_chart, write, write_chart

from shipline.testbed.fixtures import GiteaRepo

pytestmark = pytest.mark.testbed


def declare(tmp_path: Path, gitea_repo: GiteaRepo, namespace: str, kubeconfig: Path, **extra: str) -> Path:
    env = {
        "name": "dev",
        "repo": f"{gitea_repo.html_url}.git",
        "branch": "main",
        "namespace": namespace,
        "kubeconfig": str(kubeconfig),
        "verify-timeout": "60s",
        **extra,
    }
    path = tmp_path / "environments.yaml"
    path.write_text(json.dumps({"environments": [env]}, indent=2))
    return path


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
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
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
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
    helm: Path,
    registry: str,
) -> None:
    name = f"api-{uuid.uuid4().hex[:6]}"
    repo = push_chart(
        helm, write_chart(tmp_path / "charts", name, "1.4.0", image="reg.example/api", tag="1.4.0"), registry, tmp_path
    )
    env_repo.write(
        "Chart.yaml",
        f"""
        apiVersion: v2
        name: dev
        version: 0.1.0
        dependencies:
          - {{name: {name}, version: 1.4.0, repository: "{repo}"}}
    """,
    )
    env_repo.write("values.yaml", f"{name}:\n  replicas: 2\n")
    head = env_repo.commit("api 1.4.0")
    assert env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0
    synced(cli_env)
    assert kube.images() == {name: "reg.example/api:1.4.0"}
    assert kube.get("deployments")[0]["status"]["availableReplicas"] == 2
    now = status(cli_env)
    assert (now["sync"], now["health"], now["applied_commit"]) == ("Synced", "Healthy", head)


def test_a_helmfile_sync(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
    helm: Path,
    registry: str,
) -> None:
    name = f"hello-{uuid.uuid4().hex[:6]}"
    repo = push_chart(
        helm, write_chart(tmp_path / "charts", name, "2.0.0", image="reg.example/hello", tag="2.0.0"), registry, tmp_path
    )
    env_repo.write(
        "helmfile.yaml",
        f"""
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
    """,
    )
    env_repo.write("values/hello.yaml", "name: hello\n")
    head = env_repo.commit("hello and web")
    assert env_cmd(cli_env, "apply", str(declare(tmp_path, gitea_repo, namespace, kubeconfig))).returncode == 0
    synced(cli_env)
    assert kube.images() == {"hello": "reg.example/hello:2.0.0", "web": "reg.example/hello:2.0.1"}
    now = status(cli_env)
    assert (now["sync"], now["health"], now["applied_commit"]) == ("Synced", "Healthy", head)

    # `env diff` says what a sync would change, and changes nothing.
    env_repo.write("helmfile.yaml", (env_repo.path / "helmfile.yaml").read_text().replace('"2.0.1"', '"2.0.2"'))
    env_repo.commit("web 2.0.2")
    diff = env_cmd(cli_env, "diff", "dev")
    assert diff.returncode == 0, diff.stderr
    assert f"Deployment/web in namespace {namespace} update: spec.template.spec.containers" in diff.stdout
    assert "+      - image: reg.example/hello:2.0.2" in diff.stdout
    assert kube.images()["web"] == "reg.example/hello:2.0.1"
    assert status(cli_env)["applied_commit"] == head


# --- bad input: a clear reason, exit 2, nothing applied ----------------------------------------


@pytest.mark.parametrize(
    "files, reason",
    [
        (
            {"manifests/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n"},
            "manifests/app.yaml:5:1: not valid YAML",
        ),
        ({"manifests/app.yaml": "apiVersion: widgets.example.com/v1\nkind: Widget\nmetadata: {name: w}\n"}, "Widget"),
        (
            {
                "Chart.yaml": "apiVersion: v2\nname: env\nversion: 0.1.0\n",
                "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.name }}\n",
            },
            "the umbrella chart 'env' does not render",
        ),
    ],
)
def test_bad_input_fails_with_the_reason_and_applies_nothing(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
    files: dict[str, str],
    reason: str,
) -> None:
    for name, text in files.items():
        env_repo.write(name, text)
    env_repo.write(
        "manifests/good.yaml" if "manifests/app.yaml" in files else "templates/good.yaml",
        deployment("good", "reg.example/good:1.0.0"),
    )
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
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    namespace: str,
    kubeconfig: Path,
    cli_env: dict[str, str],
    kube: Kube,
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


def test_a_cluster_environment_applies_namespaces_and_what_is_in_them(
    tmp_path: Path,
    env_repo: EnvRepo,
    gitea_repo: GiteaRepo,
    kubeconfig: Path,
    kubectl: Path,
    cli_env: dict[str, str],
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    env_repo.write(
        "manifests/team.yaml",
        f"""
        apiVersion: v1
        kind: Namespace
        metadata: {{name: {team}}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: settings, namespace: {team}}}
        data: {{colour: blue}}
    """,
    )
    env_repo.write(
        "manifests/app.yaml",
        deployment("app", "reg.example/app:1.0.0").replace(
            "metadata: {name: app}", f"metadata: {{name: app, namespace: {team}}}"
        ),
    )
    head = env_repo.commit("team namespace")
    path = tmp_path / "environments.yaml"
    path.write_text(
        json.dumps(
            {
                "environments": [
                    {
                        "name": "ops",
                        "repo": f"{gitea_repo.html_url}.git",
                        "cluster": True,
                        "kubeconfig": str(kubeconfig),
                        "verify-timeout": "60s",
                    }
                ]
            }
        )
    )
    assert env_cmd(cli_env, "apply", str(path)).returncode == 0
    kube = Kube(kubectl, kubeconfig, team)
    try:
        done = env_cmd(cli_env, "sync", "ops")
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        assert kube.images() == {"app": "reg.example/app:1.0.0"}
        assert kube.names("configmaps") >= {"settings"}
        state = json.loads(env_cmd(cli_env, "status", "ops", "--json").stdout)
        assert (state["sync"], state["health"], state["applied_commit"]) == ("Synced", "Healthy", head)
    finally:
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace", team, "--wait=false"],
            capture_output=True,
            check=False,
        )


def test_env_apply_reports_every_problem_and_stores_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    path = write(
        tmp_path / "environments.yaml",
        """
        environments:
          - name: dev
            repo: http://127.0.0.1:1/org/env.git
            namespace: dev
            kubeconfig: missing.kubeconfig
            sync: always
    """,
    )
    done = env_cmd(cli_env, "apply", str(path))
    assert done.returncode == 2
    assert f"{path}:6:11: environments.0.sync: Input should be 'auto' or 'manual'" in done.stderr
    assert env_cmd(cli_env, "list", "--json").stdout.strip() == "[]"
    unknown = env_cmd(cli_env, "sync", "nope")
    assert unknown.returncode == 2 and "no environment 'nope'" in unknown.stderr
