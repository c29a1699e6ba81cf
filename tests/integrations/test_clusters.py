"""An environment's cluster side against the testbed's real kube-apiserver (kwok nodes).

Validate -> apply -> prune -> verify, and rollback as the same steps on the
previous rendered state; refusals (a rejected object, credentials without the
right, an unreachable server) fail with the object and the cause named, and
nothing half-applied.
"""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipline.cli.envs import credentials
from shipline.domain.rollouts import Health
from shipline.exceptions import ClusterError, ManifestError
from shipline.integrations.clusteraccess import issue_credentials
from shipline.integrations.clusterobjects import Outcome, Target
from shipline.integrations.clusters import Cluster, load_kubeconfig
from shipline.integrations.watching import ObjectWatch

pytestmark = pytest.mark.testbed

SHIPLINE = [sys.executable, "-m", "shipline"]


def service(name: str, image: str = "127.0.0.1:1/app:1.0", cpu: str = "10m", deadline: int | None = None) -> str:
    extra = f"progressDeadlineSeconds: {deadline}" if deadline else ""
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
        spec:
          {extra}
          replicas: 1
          selector:
            matchLabels: {{app: {name}}}
          template:
            metadata:
              labels: {{app: {name}}}
            spec:
              containers:
                - name: app
                  image: {image}
                  resources: {{requests: {{cpu: "{cpu}"}}}}
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: {name}
        spec:
          selector: {{app: {name}}}
          ports: [{{port: 80, targetPort: 8080}}]
        """)


def rendered(root: Path, **files: str) -> Path:
    """A directory of rendered manifests, as `shipline step env-render` leaves one."""
    directory = root / f"rendered-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(text)
    return directory


def kubectl_json(kubectl: Path, kubeconfig: Path, *args: str) -> Any:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args, "-o", "json"], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(proc.stdout)


def exists(kubectl: Path, kubeconfig: Path, *args: str) -> bool:
    proc = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "get", *args], capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


def test_apply_marks_objects_and_a_second_apply_changes_nothing(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    desired = cluster.load(rendered(tmp_path, web=service("web"), api=service("api")))

    first = cluster.apply(desired)
    assert sorted((a.ref.kind, a.ref.name, a.outcome) for a in first) == [
        ("Deployment", "api", Outcome.CREATED),
        ("Deployment", "web", Outcome.CREATED),
        ("Service", "api", Outcome.CREATED),
        ("Service", "web", Outcome.CREATED),
    ]
    live = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", "deployment", "web", "--show-managed-fields")
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "shipline"
    assert live["metadata"]["labels"]["shipline.dev/environment"] == "dev"
    assert {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]} >= {("shipline", "Apply")}

    again = cluster.apply(cluster.load(rendered(tmp_path, web=service("web"), api=service("api"))))
    assert {a.outcome for a in again} == {Outcome.UNCHANGED}
    after = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", "deployment", "web", "--show-managed-fields")
    assert after["metadata"]["generation"] == live["metadata"]["generation"]

    def mine(obj: Any) -> list[Any]:
        return [m for m in obj["metadata"]["managedFields"] if m["manager"] == "shipline"]

    assert mine(after) == mine(live)  # not even the time of shipline's apply moved

    changed = cluster.apply(cluster.load(rendered(tmp_path, web=service("web", image="127.0.0.1:1/app:2.0"), api=service("api"))))
    assert {(a.ref.kind, a.ref.name) for a in changed if a.outcome is Outcome.CONFIGURED} == {("Deployment", "web")}

    # A hand edit of a field the manifest sets is drift: the next apply puts it back.
    subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "-n",
            namespace,
            "set",
            "image",
            "deployment/api",
            "app=127.0.0.1:1/hand-made:9",
        ],
        check=True,
        capture_output=True,
    )
    healed = cluster.apply(cluster.load(rendered(tmp_path, web=service("web", image="127.0.0.1:1/app:2.0"), api=service("api"))))
    assert {(a.ref.kind, a.ref.name) for a in healed if a.outcome is not Outcome.UNCHANGED} == {("Deployment", "api")}
    api = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", "deployment", "api")
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "127.0.0.1:1/app:1.0"


def test_validate_and_diff_send_only_what_changed(kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path) -> None:
    # A one-service change to a large environment must not dry-run every object again.
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    cluster.apply(cluster.load(rendered(tmp_path, web=service("web"), api=service("api"))))
    desired = cluster.load(rendered(tmp_path, web=service("web", image="127.0.0.1:1/app:2.0"), api=service("api")))
    assert {(r.kind, r.name) for r in cluster.validate(desired).dry_runs} == {("Deployment", "web")}
    changes = {(c.ref.kind, c.ref.name): c.action for c in cluster.diff(desired)}
    assert changes == {
        ("Deployment", "web"): "update",
        ("Service", "web"): "unchanged",
        ("Deployment", "api"): "unchanged",
        ("Service", "api"): "unchanged",
    }
    # A hand edit makes an object unsettled again: it is validated and shown as a change.
    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "set", "image", "deployment/api", "app=127.0.0.1:1/hand:9"],
        check=True,
        capture_output=True,
    )
    assert ("Deployment", "api") in {(r.kind, r.name) for r in cluster.validate(desired).dry_runs}
    assert {(c.ref.kind, c.ref.name): c.action for c in cluster.diff(desired)}[("Deployment", "api")] == "update"


def test_prune_deletes_only_what_shipline_applied_for_the_environment(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    cluster.apply(cluster.load(rendered(tmp_path, web=service("web"), api=service("api"))))
    # Made by hand, even with the environment's labels: not shipline's to delete.
    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "create", "configmap", "by-hand"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "-n",
            namespace,
            "label",
            "configmap",
            "by-hand",
            "app.kubernetes.io/managed-by=shipline",
            "shipline.dev/environment=dev",
        ],
        check=True,
        capture_output=True,
    )
    # Applied by shipline for another environment in the same namespace: not this one's.
    other = Cluster.connect(kubeconfig, environment="other", target=Target(namespace))
    other.apply(other.load(rendered(tmp_path, cm="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: others}\n")))

    smaller = cluster.load(rendered(tmp_path, web=service("web")))
    assert {c.action for c in cluster.diff(smaller) if c.ref.name == "api"} == {"prune"}
    pruned = cluster.prune(smaller)
    assert sorted((p.ref.kind, p.ref.name, p.outcome) for p in pruned) == [
        ("Deployment", "api", Outcome.PRUNED),
        ("Service", "api", Outcome.PRUNED),
    ]
    assert not exists(kubectl, kubeconfig, "-n", namespace, "service", "api")
    assert exists(kubectl, kubeconfig, "-n", namespace, "deployment", "web")
    assert exists(kubectl, kubeconfig, "-n", namespace, "configmap", "by-hand")
    assert exists(kubectl, kubeconfig, "-n", namespace, "configmap", "others")
    assert cluster.prune(smaller) == []


@pytest.mark.parametrize(
    "bad, why",
    [
        ("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gadget}\n", "has no kind Widget"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: gadget}\nspec: {ports: [{port: 80}], typo: 1}\n", "typo"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: gadget}\nspec: {ports: [{port: 99999}]}\n", "99999"),
    ],
)
def test_an_object_the_api_server_rejects_stops_everything(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path, bad: str, why: str
) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    directory = rendered(tmp_path, web=service("web"), zz_bad=bad)
    with pytest.raises(ManifestError) as caught:
        cluster.apply(cluster.load(directory))
    message = str(caught.value)
    assert "zz_bad.yaml" in message and "gadget" in message and why in message
    assert "nothing applied" in message
    assert not exists(kubectl, kubeconfig, "-n", namespace, "deployment", "web")


def test_an_unschedulable_rollout_fails_verify_and_the_previous_state_comes_back(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    good = rendered(tmp_path, web=service("web", image="127.0.0.1:1/app:1.0"), api=service("api"))
    cluster.apply(cluster.load(good))
    verified = cluster.verify(cluster.load(good), timeout=120)
    assert verified.ok, [str(r) for r in verified.failures()]

    # A CPU request no kwok node has: the new pod never schedules, the rollout never completes.
    bad = rendered(tmp_path, web=service("web", image="127.0.0.1:1/app:2.0", cpu="1000"), api=service("api"))
    cluster.apply(cluster.load(bad))
    lines: list[str] = []
    failed = cluster.verify(cluster.load(bad), timeout=15, report=lambda r: lines.append(str(r)))
    assert not failed.ok and failed.timed_out and failed.health is Health.DEGRADED
    [failure] = failed.failures()
    assert (failure.ref.kind, failure.ref.name) == ("Deployment", "web")
    assert failure.assessment.reason == "VerifyTimeout"
    assert "Insufficient cpu" in failure.assessment.message
    assert any("Deployment/web" in line and "Progressing" in line for line in lines)

    # Rollback: the previous rendered state, applied and verified the same way.
    changes, back = cluster.sync(cluster.load(good), timeout=120)
    assert [(c.ref.kind, c.ref.name, c.outcome) for c in changes if c.outcome is not Outcome.UNCHANGED] == [
        ("Deployment", "web", Outcome.CONFIGURED)
    ]
    assert back.ok, [str(r) for r in back.failures()]
    live = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", "deployment", "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "127.0.0.1:1/app:1.0"


def test_verify_honours_progress_deadline_seconds(kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    stuck = rendered(tmp_path, web=service("web", cpu="1000", deadline=3))
    cluster.apply(cluster.load(stuck))
    result = cluster.verify(cluster.load(stuck), timeout=240)
    assert not result.ok and not result.timed_out  # the Deployment controller's verdict, not our timeout
    [failure] = result.failures()
    assert failure.assessment.reason == "ProgressDeadlineExceeded"
    assert "progressDeadlineSeconds=3" in failure.assessment.message


def test_the_steps_log_each_object_write_results_and_exit_1_on_a_failed_verify(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    output = tmp_path / "output"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "SHIPLINE_OUTPUT": str(output)}
    good = rendered(tmp_path, web=service("web"))
    args = ["--dir", str(good), "--environment", "dev", "--namespace", namespace]

    applied = subprocess.run([*SHIPLINE, "step", "env-apply", *args], env=env, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    assert f"Deployment/web in namespace {namespace} created" in applied.stdout
    assert "created=2" in output.read_text()

    verified = subprocess.run(
        [*SHIPLINE, "step", "env-verify", *args, "--timeout", "2m"], env=env, capture_output=True, text=True, timeout=180
    )
    assert verified.returncode == 0, verified.stderr
    assert "health=Healthy" in output.read_text()

    bad = rendered(tmp_path, web=service("web", cpu="1000"))
    bad_args = ["--dir", str(bad), "--environment", "dev", "--namespace", namespace]
    diff = subprocess.run([*SHIPLINE, "step", "env-diff", *bad_args], env=env, capture_output=True, text=True, timeout=120)
    assert diff.returncode == 0, diff.stderr
    assert "Deployment/web" in diff.stdout and "resources.requests.cpu" in diff.stdout
    assert any(line.startswith("+") and "cpu: 1k" in line for line in diff.stdout.splitlines()), diff.stdout
    subprocess.run([*SHIPLINE, "step", "env-apply", *bad_args], env=env, check=True, capture_output=True, timeout=120)
    failed = subprocess.run(
        [*SHIPLINE, "step", "env-verify", *bad_args, "--timeout", "5s"], env=env, capture_output=True, text=True, timeout=180
    )
    assert failed.returncode == 1
    assert "Deployment/web" in failed.stderr and "Insufficient cpu" in failed.stderr


@pytest.fixture
def two_namespaces(kubeconfig: Path, kubectl: Path) -> Iterator[tuple[str, str]]:
    names = (f"staging-{uuid.uuid4().hex[:6]}", f"production-{uuid.uuid4().hex[:6]}")
    yield names
    for name in names:
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace", name, "--wait=false"], capture_output=True
        )


def test_scoped_credentials_change_their_namespace_only(
    kubeconfig: Path, kubectl: Path, two_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    staging, production = two_namespaces
    admin = load_kubeconfig(kubeconfig)
    out = tmp_path / "staging.kubeconfig"
    result = CliRunner().invoke(
        credentials, ["staging", "--namespace", staging, "--kubeconfig", str(kubeconfig), "--out", str(out), "--duration", "1h"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "token expires" in result.output
    issue_credentials(admin, "production", namespace=production, cluster_wide=False, seconds=3600)

    staging_env = Cluster.connect(out, environment="staging", target=Target(staging))
    applied = staging_env.apply(staging_env.load(rendered(tmp_path, web=service("web"))))
    assert {a.outcome for a in applied} == {Outcome.CREATED}
    assert staging_env.verify(staging_env.load(rendered(tmp_path, web=service("web"))), timeout=120).ok

    wrong = Cluster.connect(out, environment="production", target=Target(production))
    with pytest.raises(ClusterError) as caught:
        wrong.apply(wrong.load(rendered(tmp_path, web=service("web"))))
    message = str(caught.value)
    assert "forbidden" in message.lower() and "nothing applied" in message
    assert "may not" in message and f"objects in namespace {production}" in message
    assert not exists(kubectl, kubeconfig, "-n", production, "deployment", "web")


def test_cluster_wide_credentials_run_a_cluster_environment(
    kubeconfig: Path, kubectl: Path, two_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    one, two = two_namespaces
    admin = load_kubeconfig(kubeconfig)
    env_name = f"platform-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "platform.kubeconfig"
    issued = issue_credentials(admin, env_name, namespace="shipline-system", cluster_wide=True, seconds=3600)
    out.write_text(issued.kubeconfig)
    role = f"{env_name}-reader"
    objects = textwrap.dedent(f"""\
        apiVersion: v1
        kind: Namespace
        metadata: {{name: {one}}}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {{name: {two}}}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {{name: {role}}}
        rules: [{{apiGroups: [""], resources: [pods], verbs: [get]}}]
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: settings, namespace: {two}}}
        data: {{a: b}}
        """)
    try:
        cluster = Cluster.connect(out, environment=env_name, target=Target(cluster_wide=True))
        first = rendered(
            tmp_path, platform=objects, web=service("web").replace("name: web\n", f"name: web\n  namespace: {one}\n", 2)
        )
        applied = cluster.apply(cluster.load(first))
        assert {a.outcome for a in applied} == {Outcome.CREATED} and len(applied) == 6
        assert exists(kubectl, kubeconfig, "clusterrole", role)
        assert exists(kubectl, kubeconfig, "-n", two, "configmap", "settings")
        assert cluster.verify(cluster.load(first), timeout=120).ok

        # Dropped from the manifests: the ClusterRole and ConfigMap go; a Namespace is kept (it holds more).
        second = rendered(
            tmp_path,
            web=service("web").replace("name: web\n", f"name: web\n  namespace: {one}\n", 2),
            ns=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {one}}}\n",
        )
        pruned = {(p.ref.kind, p.ref.name): p.outcome for p in cluster.prune(cluster.load(second))}
        assert pruned == {
            ("ClusterRole", role): Outcome.PRUNED,
            ("ConfigMap", "settings"): Outcome.PRUNED,
            ("Namespace", two): Outcome.KEPT,
        }
        assert not exists(kubectl, kubeconfig, "clusterrole", role)
    finally:
        for args in (
            ["clusterrole", role],
            ["clusterrolebinding", f"shipline-env-{env_name}"],
            ["-n", "shipline-system", "serviceaccount", f"shipline-env-{env_name}"],
        ):
            subprocess.run(
                [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", *args, "--ignore-not-found"], capture_output=True
            )


def test_an_unreachable_api_server_is_a_clear_error(kubeconfig: Path, tmp_path: Path) -> None:
    config = json.loads(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens
    closed = tmp_path / "closed.kubeconfig"
    closed.write_text(json.dumps(config))
    cluster = Cluster.connect(closed, environment="dev", target=Target("dev"))
    with pytest.raises(ClusterError) as caught:
        cluster.load(rendered(tmp_path, web=service("web")))
    assert "cannot reach the Kubernetes API server at https://127.0.0.1:9" in str(caught.value)
    assert str(closed) in str(caught.value)
    proc = subprocess.run(
        [
            *SHIPLINE,
            "step",
            "env-apply",
            "--dir",
            str(rendered(tmp_path, web=service("web"))),
            "--environment",
            "dev",
            "--namespace",
            "dev",
        ],
        env={**os.environ, "KUBECONFIG": str(closed)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot reach the Kubernetes API server" in proc.stderr


def test_a_crd_and_its_custom_resources_apply_together(kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    crd = textwrap.dedent(f"""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {{name: widgets.{group}}}
        spec:
          group: {group}
          scope: Namespaced
          names: {{plural: widgets, singular: widget, kind: Widget}}
          versions:
            - name: v1
              served: true
              storage: true
              schema:
                openAPIV3Schema:
                  type: object
                  properties:
                    spec: {{type: object, properties: {{size: {{type: integer}}}}}}
        """)
    widget = f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: gadget, namespace: {namespace}}}\nspec: {{size: 3}}\n"
    cluster = Cluster.connect(kubeconfig, environment=f"crd-{uuid.uuid4().hex[:6]}", target=Target(cluster_wide=True))
    try:
        directory = rendered(tmp_path, crd=crd, widget=widget)
        validation = cluster.validate(cluster.load(directory))
        assert [d.ref.kind for d in validation.deferred] == ["Widget"]  # its kind exists once the CRD is applied
        applied = cluster.apply(cluster.load(directory))
        assert {(a.ref.kind, a.outcome) for a in applied} == {
            ("CustomResourceDefinition", Outcome.CREATED),
            ("Widget", Outcome.CREATED),
        }
        live = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", f"widgets.{group}", "gadget")
        assert live["spec"] == {"size": 3}
        pruned = cluster.prune(cluster.load(rendered(tmp_path)))
        assert {(p.ref.kind, p.outcome) for p in pruned} == {
            ("Widget", Outcome.PRUNED),
            ("CustomResourceDefinition", Outcome.KEPT),
        }
    finally:
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "crd", f"widgets.{group}", "--ignore-not-found"],
            capture_output=True,
        )


def test_objects_outside_a_namespace_environment_are_refused_before_anything_is_sent(
    kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    directory = rendered(
        tmp_path,
        elsewhere="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: production}\n",
        wide="apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules: []\n",
    )
    with pytest.raises(ManifestError) as caught:
        cluster.load(directory)
    assert caught.value.problems == [
        f"elsewhere.yaml: ConfigMap/c: is in namespace production, but environment dev targets namespace {namespace} "
        "(remove metadata.namespace, or declare the environment with `cluster: true`)",
        f"wide.yaml: ClusterRole/r: ClusterRole is cluster-scoped and environment dev targets namespace {namespace}: "
        "declare the environment with `cluster: true` to hold it",
    ]


def test_a_hand_edit_is_drift_noticed_by_a_watch_and_healed_by_apply(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    import threading

    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    desired = cluster.load(rendered(tmp_path, web=service("web", cpu="100m"), api=service("api")))
    cluster.apply(desired)
    assert cluster.drifted(desired) == []
    assert cluster.wait_for_drift(desired, timeout=1) == []

    seen: list[Any] = []
    watcher = threading.Thread(target=lambda: seen.extend(cluster.wait_for_drift(desired, timeout=60)))
    watcher.start()
    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "scale", "deployment/web", "--replicas=3"],
        check=True,
        capture_output=True,
    )
    watcher.join(timeout=90)
    assert [(d.ref.kind, d.ref.name) for d in seen] == [("Deployment", "web")]
    assert "spec.replicas" in seen[0].reason

    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "delete", "service", "api"], check=True, capture_output=True
    )
    assert sorted((str(d.ref.kind), d.reason.split(":")[0]) for d in cluster.drifted(desired)) == [
        ("Deployment", "changed"),
        ("Service", "deleted"),
    ]
    healed = cluster.apply(desired)
    assert {(a.ref.kind, a.ref.name) for a in healed if a.outcome is not Outcome.UNCHANGED} == {
        ("Deployment", "web"),
        ("Service", "api"),
    }
    assert cluster.drifted(desired) == []


def test_a_value_the_server_normalises_is_not_drift(kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    desired = cluster.load(rendered(tmp_path, web=service("web", cpu="1000m")))  # reads back as cpu: "1"
    cluster.apply(desired)
    assert cluster.drifted(desired) == []
    assert {a.outcome for a in cluster.apply(desired)} == {Outcome.UNCHANGED}


def test_the_cluster_s_key_is_never_written_to_a_temporary_file(
    kubeconfig: Path, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lightkube writes inline certificates and keys to temporary files while it makes each
    client; one left by a process stopped at that moment was the cluster's key in TMPDIR.
    They are read from memory instead, and the cluster is reached the same."""
    import lightkube.config.models

    written: list[str] = []
    real = lightkube.config.models.tempfile.NamedTemporaryFile

    def recorded(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)
        written.append(made.name)
        return made

    monkeypatch.setattr(lightkube.config.models.tempfile, "NamedTemporaryFile", recorded)
    assert '"client-key-data"' in kubeconfig.read_text()  # the testbed's admin: a client certificate, inline
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    assert cluster.config.user is not None and cluster.config.user.client_key_data is None
    assert str(cluster.config.user.client_key).startswith("/proc/self/fd/")
    cluster.apply(cluster.load(rendered(tmp_path, web=service("web"))))
    assert {(c.ref.kind, c.ref.name) for c in cluster.diff(cluster.load(rendered(tmp_path, web=service("web"))))} == {
        ("Deployment", "web"),
        ("Service", "web"),
    }
    assert written == [], "lightkube wrote a certificate or key to a temporary file"


def test_an_object_watch_hears_this_environments_objects_and_stops_twice_quietly(
    kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    """What the reconciler watches for drift: objects applied for this environment, as they change;
    another environment's in the same namespace are not its business."""
    cluster = Cluster.connect(kubeconfig, environment="dev", target=Target(namespace))
    desired = cluster.load(rendered(tmp_path, cm="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: '1'}\n"))
    cluster.apply(desired)
    heard: queue.Queue[tuple[str, str, str]] = queue.Queue()
    watch = ObjectWatch(
        cluster,
        [d.kind for d in desired],
        lambda kind, obj: heard.put((kind, obj["metadata"]["name"], (obj.get("data") or {}).get("a", ""))),
    )
    watch.start()
    try:
        assert heard.get(timeout=30) == ("ADDED", "settings", "1")  # a watch starts with what is there
        other = Cluster.connect(kubeconfig, environment="other", target=Target(namespace))
        other.apply(other.load(rendered(tmp_path, cm="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: others}\n")))
        subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                "-n",
                namespace,
                "patch",
                "configmap",
                "settings",
                "-p",
                '{"data":{"a":"2"}}',
            ],
            check=True,
            capture_output=True,
        )
        assert heard.get(timeout=30) == ("MODIFIED", "settings", "2"), "a hand edit is heard, the other environment's not"
    finally:
        watch.stop()
    watch.stop()  # the reconciler may stop a watch whose loop has ended: not an error
    assert heard.empty()
