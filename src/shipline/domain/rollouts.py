"""Is a rollout done?  The health of one live Kubernetes object, from its status alone.

An environment's verify step asks this of every object it applied, each time a
watch reports a change.  The rules are kubectl's `rollout status` ones (the
controller has observed the newest generation, every replica runs the newest
pod template and is available) plus what kubectl leaves to a person: the pod
template must hold the images the environment repository asks for, and a
Deployment whose controller gave up (`ProgressDeadlineExceeded`, after its
`progressDeadlineSeconds`) has failed rather than still going.

Pure functions over the objects' JSON (plain mappings): no client, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NODE_GONE_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
"""The NoExecute taints Kubernetes's node controller puts on a node that stops answering: a
pod that does not tolerate them is evicted from it."""


class Health(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    MISSING = "Missing"


_SEVERITY = {Health.HEALTHY: 0, Health.PROGRESSING: 1, Health.MISSING: 2, Health.DEGRADED: 3}

WORKLOADS = frozenset({("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet")})
"""(group, kind) of the objects whose rollout verify waits for; any other object is healthy once it exists."""


@dataclass(frozen=True)
class Assessment:
    health: Health
    reason: str
    """One CamelCase word, as Kubernetes conditions have: RolledOut, ProgressDeadlineExceeded, ..."""
    message: str

    @property
    def done(self) -> bool:
        """Nothing more to wait for: healthy, or failed in a way that waiting cannot mend."""
        return self.health in (Health.HEALTHY, Health.DEGRADED)


def worst(healths: Iterable[Health]) -> Health:
    """The health of a set of objects: that of its least healthy member (Healthy when empty)."""
    return max(healths, key=_SEVERITY.__getitem__, default=Health.HEALTHY)


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def is_workload(obj: Mapping[str, Any]) -> bool:
    return (group_of(str(obj.get("apiVersion", ""))), obj.get("kind")) in WORKLOADS


def template_images(obj: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> image of a workload's pod template (init containers too)."""
    spec = _get(obj, "spec", "template", "spec")
    images: dict[str, str] = {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, Mapping) and "name" in container:
                images[str(container["name"])] = str(container.get("image", ""))
    return images


def assess(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> Assessment:
    """The health of the live counterpart of `desired` (None: it does not exist)."""
    kind = str(desired.get("kind", ""))
    if live is None:
        return Assessment(Health.MISSING, "NotFound", f"{kind} does not exist in the cluster")
    if not is_workload(desired):
        return Assessment(Health.HEALTHY, "Exists", f"{kind} exists")
    mismatch = _image_mismatch(desired, live)
    if mismatch:
        return Assessment(Health.DEGRADED, "ImageMismatch", mismatch)
    generation = int(_get(live, "metadata").get("generation") or 0)
    status = _get(live, "status")
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return Assessment(
            Health.PROGRESSING, "WaitingForController", f"generation {generation} not yet observed by the controller"
        )
    if kind == "Deployment":
        return _deployment(live, status)
    if kind == "StatefulSet":
        return _statefulset(live, status)
    return _daemonset(live, status)


def _deployment(live: Mapping[str, Any], status: Mapping[str, Any]) -> Assessment:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            deadline = _get(live, "spec").get("progressDeadlineSeconds", 600)
            return Assessment(
                Health.DEGRADED,
                "ProgressDeadlineExceeded",
                f"no progress within progressDeadlineSeconds={deadline}: {condition.get('message', '')}".rstrip(": "),
            )
    if _get(live, "spec").get("paused"):
        return Assessment(Health.PROGRESSING, "Paused", "the Deployment is paused")
    wanted = int(_get(live, "spec").get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{updated} of {wanted} replicas updated" + _failure(status))
    if total > updated:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{total - updated} old replicas pending termination")
    if available < updated:
        return Assessment(
            Health.PROGRESSING, "RollingOut", f"{available} of {updated} updated replicas available" + _failure(status)
        )
    return Assessment(Health.HEALTHY, "RolledOut", f"{available} of {wanted} replicas available")


def _failure(status: Mapping[str, Any]) -> str:
    """A ReplicaFailure condition (a quota, an admission refusal): why pods are not even created."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return f"; {condition.get('reason')}: {condition.get('message')}"
    return ""


def _statefulset(live: Mapping[str, Any], status: Mapping[str, Any]) -> Assessment:
    spec = _get(live, "spec")
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") == "OnDelete":
        return Assessment(Health.HEALTHY, "OnDelete", "updateStrategy OnDelete: pods change when deleted")
    if ready < wanted:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{ready} of {wanted} replicas ready")
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    if partition > 0:
        updated = int(status.get("updatedReplicas") or 0)
        if updated < wanted - partition:
            return Assessment(Health.PROGRESSING, "RollingOut", f"{updated} of {wanted - partition} replicas updated")
    elif status.get("updateRevision") != status.get("currentRevision"):
        updated = int(status.get("updatedReplicas") or 0)
        return Assessment(Health.PROGRESSING, "RollingOut", f"{updated} of {wanted} replicas updated")
    if available < wanted:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{available} of {wanted} replicas available")
    return Assessment(Health.HEALTHY, "RolledOut", f"{ready} of {wanted} replicas ready")


def _daemonset(live: Mapping[str, Any], status: Mapping[str, Any]) -> Assessment:
    strategy = _get(live, "spec").get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") == "OnDelete":
        return Assessment(Health.HEALTHY, "OnDelete", "updateStrategy OnDelete: pods change when deleted")
    wanted = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if updated < wanted:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{updated} of {wanted} nodes' pods updated")
    if available < wanted:
        return Assessment(Health.PROGRESSING, "RollingOut", f"{available} of {wanted} nodes' pods available")
    return Assessment(Health.HEALTHY, "RolledOut", f"{available} of {wanted} nodes' pods available")


def _image_mismatch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str:
    """Why the live pod template does not run the desired images ('' when it does).

    A live image may carry a digest the desired one lacks (an admission webhook
    pinning tags to digests): `app:1.2` is met by `app:1.2@sha256:...`.
    """
    have = template_images(live)
    for name, image in template_images(desired).items():
        got = have.get(name)
        if got is None:
            return f"container {name} is not in the live pod template"
        if got != image and not got.startswith(image + "@"):
            return f"container {name} runs {got}, not the desired {image} (changed by someone else?)"
    return ""


def _get(obj: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    here: Any = obj
    for key in path:
        here = here.get(key) if isinstance(here, Mapping) else None
    return here if isinstance(here, Mapping) else {}


def pod_trouble(pods: list[dict[str, Any]]) -> str:
    """Why a workload's pods do not run (unschedulable, image pull, crash loop), each reason once."""
    troubles: dict[str, list[str]] = {}
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name"))
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                why = f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".strip()
                troubles.setdefault(why, []).append(name)
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                why = f"container {container.get('name')} {waiting['reason']}: {waiting.get('message', '')}".strip()
                troubles.setdefault(why, []).append(name)
    parts = []
    for why, names in list(troubles.items())[:3]:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        parts.append(f"pod {names[0]}{more} {why}")
    return "; ".join(parts)
