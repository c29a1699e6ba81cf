"""What `Cluster` takes and answers: the types of its interface, and no I/O.

An environment's `Target`, the `Kind`s the API server serves, the `Desired`
objects read from manifests, and the results of validating, applying,
pruning (`Applied`, `Outcome`), diffing (`Change`), verifying
(`ResourceHealth`, `Verification`) and watching for drift (`Drift`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shipline.domain.objects import ObjectRef
from shipline.domain.rollouts import Assessment, Health, worst
from shipline.exceptions import UsageError


@dataclass(frozen=True)
class Target:
    """Where an environment lives: one namespace, or (cluster_wide) the whole cluster.

    A cluster-wide environment may hold cluster-scoped objects and objects in any
    namespace; `namespace`, when given, is then the one for objects that name none.
    """

    namespace: str | None = None
    cluster_wide: bool = False

    def __post_init__(self) -> None:
        if not self.cluster_wide and not self.namespace:
            raise UsageError("an environment needs a target: a namespace (--namespace NS) or the whole cluster (--cluster)")


@dataclass(frozen=True)
class Kind:
    """A resource type as the API server serves it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def crd_kinds(body: Mapping[str, Any]) -> list[Kind]:
    """The kinds a CustomResourceDefinition defines, one per version ([] for any other object)."""
    if body.get("kind") != "CustomResourceDefinition" or not str(body.get("apiVersion", "")).startswith("apiextensions.k8s.io/"):
        return []
    spec = body.get("spec") or {}
    names = spec.get("names") or {}
    if not spec.get("group") or not names.get("kind") or not names.get("plural"):
        return []
    return [
        Kind(
            spec["group"],
            v["name"],
            names["kind"],
            names["plural"],
            spec.get("scope") == "Namespaced",
            frozenset({"get", "list", "watch", "create", "update", "patch", "delete"}),
        )
        for v in spec.get("versions") or []
        if isinstance(v, Mapping) and v.get("name")
    ]


@dataclass(frozen=True)
class Desired:
    """One object the environment should hold, as it will be sent (tracking labels, namespace set)."""

    ref: ObjectRef
    kind: Kind
    body: dict[str, Any]
    source: str


class Outcome(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    KEPT = "kept"
    """Removed from the manifests but not deleted (a Namespace or a CRD: see applying.NEVER_PRUNED)."""


@dataclass(frozen=True)
class Applied:
    ref: ObjectRef
    outcome: Outcome

    def __str__(self) -> str:
        return f"{self.ref} {self.outcome}"


@dataclass(frozen=True)
class Change:
    """What applying would do to one object: the live object and the API server's dry-run result."""

    ref: ObjectRef
    action: str
    """create | update | unchanged | prune"""
    live: dict[str, Any] | None
    desired: dict[str, Any] | None


@dataclass(frozen=True)
class ResourceHealth:
    ref: ObjectRef
    assessment: Assessment

    def __str__(self) -> str:
        a = self.assessment
        return f"{self.ref}: {a.health} ({a.reason}): {a.message}"


@dataclass(frozen=True)
class Verification:
    resources: list[ResourceHealth]
    timed_out: bool
    seconds: float

    @property
    def health(self) -> Health:
        return worst(r.assessment.health for r in self.resources)

    @property
    def ok(self) -> bool:
        return self.health is Health.HEALTHY

    def failures(self) -> list[ResourceHealth]:
        return [r for r in self.resources if r.assessment.health is not Health.HEALTHY]


@dataclass(frozen=True)
class Drift:
    """A live object that is no longer what shipline applied: edited by hand, deleted, relabelled."""

    ref: ObjectRef
    reason: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.reason}"


@dataclass
class Validation:
    dry_runs: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)
    """The API server's answer for each object it could check."""
    deferred: list[Desired] = field(default_factory=list)
    """Objects in a namespace, or of a kind, that the same manifests create: checked once those exist."""
