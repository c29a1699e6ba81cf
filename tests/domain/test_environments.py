"""The environment declaration model and the desired-vs-live diff (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shipline.domain.environments import Environment, ObjectKey, apply_order, duplicates, key_of, place, plan


def deployment(name: str = "hello", image: str = "reg/hello:1.0.0", replicas: int = 1, ns: str = "dev") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def as_live(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: defaults filled in, server fields, status."""
    live = {
        **obj,
        "metadata": {
            **obj["metadata"],
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "shipline"}],
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        },
    }
    spec = dict(obj["spec"])
    spec["strategy"] = {"type": "RollingUpdate"}
    template = dict(spec["template"])
    pod = dict(template["spec"])
    pod["containers"] = [
        {
            **c,
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log",
            "ports": [{**p, "protocol": "TCP"} for p in c.get("ports", [])],
        }
        for c in pod["containers"]
    ]
    pod["restartPolicy"] = "Always"
    template["spec"] = pod
    spec["template"] = template
    live["spec"] = spec
    live["status"] = {"availableReplicas": 1}
    return live


def test_an_environment_takes_every_contract_key() -> None:
    env = Environment.model_validate(
        {
            "name": "dev",
            "repo": "http://127.0.0.1:3000/org/env-dev.git",
            "branch": "main",
            "namespace": "dev",
            "kubeconfig": "dev.kubeconfig",
            "sync": "auto",
            "self-heal": True,
            "verify-timeout": "5m",
            "services": ["hello"],
            "merge": "auto",
            "next": "staging",
        }
    )
    assert env.verify_timeout == 300.0
    assert env.self_heal is True
    assert env.declared()["verify-timeout"] == 300.0
    assert env.kubeconfig_secret == "env-dev-kubeconfig"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({}, "needs a target"),
        ({"namespace": "dev", "cluster": True}, "not both"),
        ({"namespace": "Dev_1"}, "should match pattern"),
        ({"namespace": "dev", "branch": "feature..x"}, "not a branch name"),
        ({"namespace": "dev", "repo": "--upload-pack=evil"}, "not a URL or path"),
        ({"namespace": "dev", "repo": "http://x/${{ secrets.k }}"}, "not allowed"),
        ({"namespace": "dev", "next": "dev"}, "names this environment itself"),
        ({"namespace": "dev", "sync": "sometimes"}, "'auto' or 'manual'"),
    ],
)
def test_bad_declarations_say_what_is_wrong(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Environment.model_validate({"name": "dev", "repo": "http://x/r.git", **extra})


def test_an_unchanged_object_is_not_a_change_despite_server_defaults() -> None:
    desired = [deployment()]
    result = plan(desired, [as_live(deployment())])
    assert result.in_sync
    assert result.unchanged == [key_of(desired[0])]


def test_a_new_image_is_a_change_with_a_readable_field_diff() -> None:
    result = plan([deployment(image="reg/hello:1.1.0")], [as_live(deployment())])
    assert [c.key.name for c in result.change] == ["hello"]
    lines = list(result.lines())
    assert lines[0] == "change Deployment dev/hello"
    assert lines[1].strip() == '~ spec.template.spec.containers[hello].image: "reg/hello:1.0.0" -> "reg/hello:1.1.0"'
    assert not any("managedFields" in line or "status" in line for line in lines)


def test_create_change_and_prune_together() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "dev"},
        "spec": {"ports": [{"port": 80}]},
    }
    result = plan([deployment("a"), deployment("b", replicas=2)], [as_live(deployment("b")), service])
    assert [str(k) for k in result.create] == ["Deployment dev/a"]
    assert [str(c.key) for c in result.change] == ["Deployment dev/b"]
    assert [str(c) for c in result.change[0].fields] == ["~ spec.replicas: 1 -> 2"]
    assert [str(k) for k in result.prune] == ["Service dev/web"]
    assert result.summary() == "1 to create, 1 to change, 1 to prune, 0 unchanged"


def test_added_and_removed_list_entries() -> None:
    want = deployment()
    want["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "reg/side:1"})
    live = deployment()
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    want["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "B", "value": "2"}]
    changes = [str(f) for f in plan([want], [as_live(live)]).change[0].fields]
    assert '- spec.template.spec.containers[hello].env[A]: {"name": "A", "value": "1"}' in changes
    assert '+ spec.template.spec.containers[hello].env[B]: {"name": "B", "value": "2"}' in changes
    assert '+ spec.template.spec.containers[sidecar]: {"image": "reg/side:1", "name": "sidecar"}' in changes


def test_a_port_given_as_text_equals_the_number_live() -> None:
    want = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "80"}]}}
    live = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    assert plan([want], [live]).in_sync


def test_keys_tell_apart_kinds_namespaces_and_api_versions() -> None:
    a = key_of(deployment(ns="a"))
    assert a == ObjectKey("apps/v1", "Deployment", "a", "hello")
    assert a != key_of(deployment(ns="b"))
    with pytest.raises(ValueError, match="metadata.name"):
        key_of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})


def test_place_sets_the_environment_namespace_and_orders_for_apply() -> None:
    objects = [
        deployment(ns="elsewhere"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r", "namespace": "x"}},
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}},
        },
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}},
    ]
    placed = apply_order(place(objects, "dev", force=True))
    by_name = {o["metadata"]["name"]: o["metadata"].get("namespace") for o in placed}
    assert by_name == {"hello": "dev", "c": "dev", "r": None, "widgets.example.com": None, "w": None, "g": "dev"}
    assert [o["kind"] for o in placed][:3] == ["ConfigMap", "CustomResourceDefinition", "ClusterRole"]
    assert objects[0]["metadata"]["namespace"] == "elsewhere", "place works on copies"
    kept = place(
        [deployment(ns="other"), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}], "default", force=False
    )
    assert [o["metadata"]["namespace"] for o in kept] == ["other", "default"]


def test_duplicates_are_found() -> None:
    assert [str(k) for k in duplicates([deployment(), deployment(image="x"), deployment("other")])] == ["Deployment dev/hello"]


# --- status -----------------------------------------------------------------------------

from datetime import UTC, datetime, timedelta  # noqa: E402

from shipline.domain.environments import HistoryEntry, Outcome, Retry, SyncState, retry_wait, status_of  # noqa: E402
from shipline.domain.rollouts import Health  # noqa: E402


def entry(outcome: Outcome, commit: str, applied: str, message: str = "m") -> HistoryEntry:
    return HistoryEntry(
        id=1,
        environment="dev",
        action="sync",
        run_id=1,
        commit=commit,
        applied_commit=applied,
        outcome=outcome,
        verified=outcome == Outcome.VERIFIED,
        rolled_back_to="",
        message=message,
        created_at=datetime.now(UTC),
    )


def test_status_is_synced_when_the_head_is_applied_and_nothing_drifted() -> None:
    ok = entry(Outcome.VERIFIED, "a", "a", "verified a")
    result = status_of("dev", head="a", last=ok, last_applied=ok)
    assert (result.sync, result.health, result.applied_commit, result.message) == (
        SyncState.SYNCED,
        Health.HEALTHY,
        "a",
        "verified a",
    )
    assert set(result.model_dump()) == {"name", "sync", "health", "commit", "applied_commit", "message"}
    assert status_of("dev", head="b", last=ok, last_applied=ok).sync == SyncState.OUT_OF_SYNC
    drifted = status_of("dev", head="a", last=ok, last_applied=ok, drift="Deployment dev/hello changed")
    assert drifted.sync == SyncState.OUT_OF_SYNC and drifted.message == "drifted: Deployment dev/hello changed"


def test_status_health_follows_history_unless_the_cluster_said() -> None:
    assert status_of("dev", head="a", last=None, last_applied=None).health == Health.MISSING
    ok = entry(Outcome.VERIFIED, "a", "a")
    assert status_of("dev", head="a", last=ok, last_applied=ok, running=7).health == Health.PROGRESSING
    broken = entry(Outcome.FAILED, "b", "b")
    assert status_of("dev", head="b", last=broken, last_applied=broken).health == Health.DEGRADED
    back = entry(Outcome.ROLLED_BACK, "b", "a", "rolled back to a")
    rolled = status_of("dev", head="b", last=back, last_applied=back)
    assert (rolled.sync, rolled.health, rolled.applied_commit) == (SyncState.OUT_OF_SYNC, Health.HEALTHY, "a")
    assert status_of("dev", head="a", last=ok, last_applied=ok, live_health=Health.DEGRADED).health == Health.DEGRADED


def test_status_says_when_health_comes_from_history() -> None:
    ok = entry(Outcome.VERIFIED, "a", "a", "verified a")
    result = status_of("dev", head="a", last=ok, last_applied=ok, live_error="cannot reach https://127.0.0.1:1")
    assert result.health == Health.HEALTHY
    assert result.message == "verified a (health from history: the cluster cannot be asked: cannot reach https://127.0.0.1:1)"


def test_status_says_when_a_failed_sync_is_tried_again() -> None:
    broken = entry(Outcome.FAILED, "b", "", "sync: task clone failed")
    waiting = status_of("dev", head="b", last=broken, last_applied=None, retrying=(42.4, 1, 3))
    assert waiting.message == "sync: task clone failed; tried again in 42s (retry 1 of 3)"
    due = status_of("dev", head="b", last=broken, last_applied=None, retrying=(0.0, 3, 3))
    assert due.message == "sync: task clone failed; tried again now (retry 3 of 3)"


def test_quantities_in_the_servers_spelling_are_not_changes() -> None:
    from shipline.domain.environments import diff_fields, quantity

    assert quantity("500m") == quantity("0.5") and quantity("1Gi") == quantity("1024Mi") and quantity("1e3") == quantity("1k")
    assert quantity("blue") is None
    want = {"resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"cpu": 1}}}
    live = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}}
    assert list(diff_fields(want, live)) == []
    assert [
        str(c) for c in diff_fields(want, {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1"}}})
    ] == ['~ resources.requests.cpu: "250m" -> "0.5"']


def test_a_failed_sync_of_the_head_is_tried_again_after_doubling_waits_up_to_the_limit() -> None:
    retry = Environment.model_validate(
        {"name": "dev", "repo": "r", "namespace": "dev", "retry": {"limit": 2, "backoff": "30s"}}
    ).retry
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def failed(commit: str, minutes: float, outcome: Outcome = Outcome.FAILED, action: str = "sync") -> HistoryEntry:
        return entry(outcome, commit, "").model_copy(update={"created_at": t0 + timedelta(minutes=minutes), "action": action})

    once = [failed("b", 0), failed("a", -5, Outcome.VERIFIED)]
    assert retry_wait(once, "b", retry, t0 + timedelta(seconds=10)) == 20.0
    assert retry_wait(once, "b", retry, t0 + timedelta(seconds=31)) == 0.0
    twice = [failed("b", 1), *once]
    assert retry_wait(twice, "b", retry, t0 + timedelta(minutes=1, seconds=30)) == 30.0, "the second retry waits 60s"
    thrice = [failed("b", 3, Outcome.ROLLED_BACK), *twice]
    assert retry_wait(thrice, "b", retry, t0 + timedelta(hours=1)) is None, "two retries, then a new commit is needed"
    # Nothing to try again: the head verified, a newer head, a rollback on top, no retry declared.
    assert retry_wait([failed("b", 0, Outcome.VERIFIED)], "b", retry, t0) is None
    assert retry_wait(once, "c", retry, t0) is None
    assert retry_wait([failed("a", 2, action="rollback"), *once], "b", retry, t0 + timedelta(hours=1)) is None
    assert retry_wait(once, "b", Retry(), t0 + timedelta(hours=1)) is None


def test_retry_is_shown_in_the_declaration_only_when_set() -> None:
    plain = Environment.model_validate({"name": "dev", "repo": "r", "namespace": "dev"})
    assert "retry" not in plain.declared()
    retried = Environment.model_validate({"name": "dev", "repo": "r", "namespace": "dev", "retry": {"limit": 3}})
    assert retried.declared()["retry"] == {"limit": 3, "backoff": 30.0}
    assert Environment.model_validate(retried.declared()) == retried
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        Environment.model_validate({"name": "dev", "repo": "r", "namespace": "dev", "retry": {"limit": 11}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Environment.model_validate({"name": "dev", "repo": "r", "namespace": "dev", "retry": {"times": 3}})
