"""When is a rollout done, failed, or still going: the rules verify applies to every watch event."""

from __future__ import annotations

from typing import Any

from shipline.domain.objects import applied_by_shipline, changed_paths, comparable, drift, settled, uncontained, with_tracking
from shipline.domain.rollouts import Health, assess, pod_trouble, worst


def deployment(image: str = "app:2", replicas: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": 3},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}},
        "status": {"observedGeneration": 3, **status},
    }


def test_a_deployment_is_healthy_when_every_replica_is_updated_and_available() -> None:
    live = deployment(updatedReplicas=2, availableReplicas=2)
    live["status"]["replicas"] = 2
    got = assess(deployment(), live)
    assert (got.health, got.reason) == (Health.HEALTHY, "RolledOut")


def test_a_deployment_is_progressing_until_the_controller_observed_its_generation() -> None:
    live = deployment(updatedReplicas=2, availableReplicas=2)
    live["status"]["observedGeneration"] = 2
    assert assess(deployment(), live).health is Health.PROGRESSING


def test_old_replicas_and_unavailable_new_ones_keep_it_progressing() -> None:
    old = deployment(updatedReplicas=2, availableReplicas=2)
    old["status"]["replicas"] = 3
    assert "old replicas" in assess(deployment(), old).message
    unavailable = deployment(updatedReplicas=2, availableReplicas=1)
    unavailable["status"]["replicas"] = 2
    got = assess(deployment(), unavailable)
    assert got.health is Health.PROGRESSING and got.message == "1 of 2 updated replicas available"


def test_progress_deadline_exceeded_is_a_failure_not_a_wait() -> None:
    live = deployment(
        updatedReplicas=1,
        availableReplicas=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "web-1" has timed out progressing.',
            },
        ],
    )
    live["spec"]["progressDeadlineSeconds"] = 30
    got = assess(deployment(), live)
    assert got.health is Health.DEGRADED and got.done
    assert "progressDeadlineSeconds=30" in got.message and "timed out progressing" in got.message


def test_a_live_template_with_other_images_is_degraded_but_a_pinned_digest_is_fine() -> None:
    changed = deployment(image="app:1", updatedReplicas=2, availableReplicas=2)
    got = assess(deployment(image="app:2"), changed)
    assert got.health is Health.DEGRADED and "app:1" in got.message and "app:2" in got.message
    pinned = deployment(image="app:2@sha256:" + "a" * 64, updatedReplicas=2, availableReplicas=2)
    assert assess(deployment(image="app:2"), pinned).health is Health.HEALTHY


def test_missing_objects_and_plain_objects() -> None:
    assert assess(deployment(), None).health is Health.MISSING
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    assert assess(service, service).health is Health.HEALTHY


def test_statefulsets_and_daemonsets() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 1},
        "spec": {"replicas": 2, "template": {"spec": {"containers": []}}},
    }
    going = {
        **sts,
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "currentRevision": "db-1",
            "updateRevision": "db-2",
            "updatedReplicas": 1,
        },
    }
    assert assess(sts, going).health is Health.PROGRESSING
    done = {**sts, "status": {**going["status"], "currentRevision": "db-2", "updatedReplicas": 2}}
    assert assess(sts, done).health is Health.HEALTHY
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "generation": 1},
        "spec": {"template": {"spec": {"containers": []}}},
    }
    partial = {
        **ds,
        "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2},
    }
    assert assess(ds, partial).message == "2 of 3 nodes' pods available"


def test_the_worst_health_wins() -> None:
    assert worst([Health.HEALTHY, Health.PROGRESSING]) is Health.PROGRESSING
    assert worst([Health.MISSING, Health.DEGRADED, Health.HEALTHY]) is Health.DEGRADED
    assert worst([]) is Health.HEALTHY


def test_only_objects_shipline_applied_for_the_environment_are_its_own() -> None:
    obj = with_tracking({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}}, "dev")
    assert obj["metadata"]["labels"] == {"a": "b", "app.kubernetes.io/managed-by": "shipline", "shipline.dev/environment": "dev"}
    applied = {**obj, "metadata": {**obj["metadata"], "managedFields": [{"manager": "shipline", "operation": "Apply"}]}}
    assert applied_by_shipline(applied, "dev")
    assert not applied_by_shipline(applied, "prod")
    by_hand = {**obj, "metadata": {**obj["metadata"], "managedFields": [{"manager": "kubectl-edit", "operation": "Update"}]}}
    assert not applied_by_shipline(by_hand, "dev")


def test_changed_paths_ignore_what_the_server_writes() -> None:
    live = deployment(image="app:1")
    live["metadata"].update(resourceVersion="9", managedFields=[{}], uid="u")
    want = deployment(image="app:2")
    assert changed_paths(comparable(live), comparable(want)) == ["spec.template.spec.containers[0].image"]


def test_an_object_is_settled_only_when_manifest_and_live_fields_are_as_shipline_left_them() -> None:
    desired = with_tracking(deployment(image="app:2"), "dev")
    live = {**desired, "metadata": {**desired["metadata"], "managedFields": [{"manager": "shipline", "operation": "Apply"}]}}
    live["spec"] = {**desired["spec"], "progressDeadlineSeconds": 600}  # defaults the server added
    assert settled(desired, live, "dev")
    edited = with_tracking(deployment(image="app:3"), "dev")  # the repository changed: another fingerprint
    assert not settled(edited, live, "dev")
    by_hand = {**live, "spec": {**live["spec"], "replicas": 5}}  # a field the manifest sets, edited live
    assert not settled(desired, by_hand, "dev")
    assert not settled(desired, None, "dev")
    removed = deployment(image="app:2")
    del removed["spec"]["replicas"]  # a field dropped from the manifest: SSA would remove it live
    assert not settled(with_tracking(removed, "dev"), live, "dev")


def test_pods_reasons_are_named_once_each() -> None:
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient cpu.",
    }
    pods = [{"metadata": {"name": f"web-{i}"}, "status": {"conditions": [unschedulable]}} for i in range(3)] + [
        {
            "metadata": {"name": "web-x"},
            "status": {
                "containerStatuses": [
                    {"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
                ]
            },
        }
    ]
    assert pod_trouble(pods) == (
        "pod web-0 and 2 more Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.; "
        "pod web-x container app ImagePullBackOff: not found"
    )
    assert pod_trouble([{"metadata": {"name": "ok"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]) == ""


def test_drift_names_the_fields_edited_by_hand() -> None:
    desired = with_tracking(deployment(image="app:2"), "dev")
    live = {**desired, "metadata": {**desired["metadata"], "managedFields": [{"manager": "shipline", "operation": "Apply"}]}}
    assert drift(desired, live, "dev") == ""
    edited = {**live, "spec": {**live["spec"], "replicas": 5, "paused": True}}
    assert drift(desired, edited, "dev") == "changed: spec.replicas"
    assert drift(desired, None, "dev") == "deleted"
    assert uncontained({"a": [1, 2], "b": {"c": 1}}, {"a": [1], "b": {"c": 2}}) == ["a", "b.c"]
