"""Environments: what a declaration file may say, and the desired-vs-live diff.

An environment is a namespace (or a whole cluster) whose state lives in one
git repository.  `Environment` is the contract's declaration, checked for
shape; `plan` compares what the repository renders to what the cluster holds
and says what a sync would create, change and prune.  No I/O here: the
renderer and the cluster client hand objects in as plain mappings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from shipline.domain.pipelines import Duration
from shipline.domain.rollouts import Health

ENV_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$"
"""Environment names: DNS labels short enough that `env-NAME` is still a pipeline name."""

DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
SERVICE_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|([\s~^:?*\[\\]|@\{)|(/$)|(\.lock$)|(^$)")


def _no_template(value: Any) -> Any:
    # A declaration becomes `with:` values of a generated pipeline, where `${{ }}` is live.
    if isinstance(value, str) and "${{" in value:
        raise ValueError("`${{` is not allowed in an environment declaration")
    return value


Plain = Annotated[str, BeforeValidator(_no_template)]


class Retry(BaseModel):
    """`retry:` of an environment: a failed sync of the branch head is tried again, each time after twice the wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(default=0, ge=0, le=10)
    """Syncs of one commit after its first failed, at most (0: none, a new commit is needed)."""
    backoff: Duration = 30.0
    """The wait before the first of them; each next one waits twice as long as the one before."""


class Environment(BaseModel):
    """One environment of a declaration file (`environments:` list); the keys are contract."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
    """Lower-case letters, digits and '-', at most 50: it names runs (`env-NAME`) and secrets."""
    repo: Plain
    """The environment repository: a URL or path git can clone."""
    branch: Plain = "main"
    namespace: Annotated[str, Field(pattern=DNS_LABEL)] | None = None
    """The target namespace (created if missing)."""
    cluster: bool = False
    """`true`: the environment is the whole cluster; objects keep the namespaces they name."""
    kubeconfig: Plain | None = None
    """A kubeconfig file (relative to the declaration file); its credentials are all a run uses."""
    sync: Literal["auto", "manual"] = "auto"
    """auto: each new commit is applied; manual: only `shipline env sync`."""
    self_heal: bool = Field(default=False, alias="self-heal")
    """Re-apply when the live state drifts from the repository."""
    verify_timeout: Duration = Field(default=300.0, alias="verify-timeout")
    """How long rollouts may take before the sync counts as failed and is rolled back."""
    retry: Retry = Retry()
    """How often the controller tries a failed sync of the branch head again (by default never)."""
    services: list[Annotated[str, Field(pattern=SERVICE_PATTERN)]] = []
    """Services whose released versions are proposed to this environment (promotion)."""
    merge: Literal["auto", "manual"] = "manual"
    """auto: merge a promotion pull request once its checks pass; manual: a person does."""
    next: Annotated[str, Field(pattern=ENV_NAME_PATTERN)] | None = None
    """After a verified deploy, propose the same versions to this environment."""

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        value = value.strip()
        if not value or value.startswith("-"):
            raise ValueError(f"{value!r} is not a URL or path git can clone")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if _BRANCH_BAD.search(value) or len(value) > 255:
            raise ValueError(f"{value!r} is not a branch name git accepts")
        return value

    @model_validator(mode="after")
    def _target(self) -> Environment:
        if self.cluster and self.namespace:
            raise ValueError("give either `namespace:` or `cluster: true`, not both")
        if not self.cluster and not self.namespace:
            raise ValueError("an environment needs a target: `namespace: NAME` or `cluster: true`")
        if self.next == self.name:
            raise ValueError(f"`next: {self.next}` names this environment itself")
        return self

    @property
    def pipeline_name(self) -> str:
        return f"env-{self.name}"

    @property
    def kubeconfig_secret(self) -> str:
        """The secret that holds this environment's kubeconfig (set by `shipline env apply`)."""
        return f"env-{self.name}-kubeconfig"

    def declared(self) -> dict[str, Any]:
        """The declaration as written (hyphenated keys), for storing and showing; `retry:` only when it is set."""
        return self.model_dump(mode="json", by_alias=True, exclude={"retry"} if self.retry == Retry() else None)


class EnvironmentsFile(BaseModel):
    """A declaration file: `environments:` and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environments: list[Environment] = Field(min_length=1)


# --- objects --------------------------------------------------------------------------

CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)
"""Built-in kinds that live outside namespaces (custom ones are found from their CRDs)."""

_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]
"""Helm's install order: what others refer to goes first."""
_RANK = {kind: i for i, kind in enumerate(_ORDER)}


@dataclass(frozen=True, order=True)
class ObjectKey:
    """What identifies an object in a cluster (namespace is '' for cluster-scoped ones)."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


class ObjectError(ValueError):
    """An object without the fields every Kubernetes object has."""


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    missing = [
        k for k, v in (("apiVersion", api_version), ("kind", kind), ("metadata.name", name)) if not isinstance(v, str) or not v
    ]
    if missing:
        raise ObjectError(f"an object needs {', '.join(missing)}")
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    return ObjectKey(str(api_version), str(kind), str(namespace or ""), str(name))


def cluster_scoped_kinds(objects: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(group, kind) of custom kinds that these objects' CRDs declare cluster-scoped."""
    found: set[tuple[str, str]] = set()
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        if isinstance(spec, Mapping) and spec.get("scope") == "Cluster":
            names = spec.get("names") or {}
            if isinstance(names, Mapping):
                found.add((str(spec.get("group", "")), str(names.get("kind", ""))))
    return found


def is_namespaced(obj: Mapping[str, Any], custom_cluster_kinds: Collection[tuple[str, str]] = frozenset()) -> bool:
    kind = str(obj.get("kind", ""))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return kind not in CLUSTER_SCOPED and (group, kind) not in custom_cluster_kinds


def place(objects: Sequence[Mapping[str, Any]], namespace: str, *, force: bool) -> list[dict[str, Any]]:
    """Give namespaced objects a namespace: `namespace` always when `force` (an environment that
    is one namespace), else only where the object names none (`cluster: true`).
    Cluster-scoped objects lose any namespace they name.  Returns copies, in the same order."""
    custom = cluster_scoped_kinds(objects)
    placed: list[dict[str, Any]] = []
    for obj in objects:
        copy = json.loads(json.dumps(obj))
        meta = copy.setdefault("metadata", {})
        if is_namespaced(copy, custom):
            if force or not meta.get("namespace"):
                meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        placed.append(copy)
    return placed


def apply_rank(obj: Mapping[str, Any]) -> int:
    """Where an object goes in apply order (lower first); sort stably by it."""
    return _RANK.get(str(obj.get("kind")), len(_RANK))


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=apply_rank)


def duplicates(objects: Iterable[Mapping[str, Any]]) -> list[ObjectKey]:
    """Keys that appear more than once (the later one would silently win)."""
    seen: set[ObjectKey] = set()
    dups: list[ObjectKey] = []
    for obj in objects:
        key = key_of(obj)
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    return dups


# --- the diff ---------------------------------------------------------------------------

SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")


def clean(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A live object without what the server manages (status, managedFields, uid, ...)."""
    copy: dict[str, Any] = json.loads(json.dumps(obj))
    copy.pop("status", None)
    meta = copy.get("metadata")
    if isinstance(meta, dict):
        for name in SERVER_FIELDS:
            meta.pop(name, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            for name in SERVER_ANNOTATIONS:
                annotations.pop(name, None)
            if not annotations:
                meta.pop("annotations")
    return copy


_ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        if self.old is _ABSENT:
            return f"+ {self.path}: {_short(self.new)}"
        if self.new is _ABSENT:
            return f"- {self.path}: {_short(self.old)}"
        return f"~ {self.path}: {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ObjectChange:
    key: ObjectKey
    fields: list[FieldChange]


@dataclass
class Plan:
    """What a sync would do, each list sorted by key."""

    create: list[ObjectKey] = field(default_factory=list)
    change: list[ObjectChange] = field(default_factory=list)
    unchanged: list[ObjectKey] = field(default_factory=list)
    prune: list[ObjectKey] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not (self.create or self.change or self.prune)

    def summary(self) -> str:
        return (
            f"{len(self.create)} to create, {len(self.change)} to change, "
            f"{len(self.prune)} to prune, {len(self.unchanged)} unchanged"
        )

    def lines(self) -> Iterator[str]:
        """A readable diff: one line per object, then its changed fields."""
        for key in self.create:
            yield f"create {key}"
        for change in self.change:
            yield f"change {change.key}"
            for fc in change.fields:
                yield f"    {fc}"
        for key in self.prune:
            yield f"prune  {key}"


def plan(desired: Sequence[Mapping[str, Any]], live: Sequence[Mapping[str, Any]]) -> Plan:
    """Compare the rendered objects with the live ones.

    `live` holds what the cluster has of the desired objects and every object
    shipline applied for this environment before: a live object that the
    desired state lacks is to be pruned.  A desired object is unchanged when
    every field it sets has the same value live (fields the server defaults or
    other managers own are not differences), as server-side apply sees it.
    """
    want = {key_of(obj): obj for obj in desired}
    have = {key_of(obj): clean(obj) for obj in live}
    result = Plan()
    for key in sorted(want):
        if key not in have:
            result.create.append(key)
            continue
        changes = list(diff_fields(clean(want[key]), have[key]))
        if changes:
            result.change.append(ObjectChange(key, changes))
        else:
            result.unchanged.append(key)
    result.prune = sorted(k for k in have if k not in want)
    return result


def diff_fields(desired: Any, live: Any, path: str = "") -> Iterator[FieldChange]:
    """Fields that `desired` sets to something other than `live` has."""
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        for name, value in desired.items():
            sub = f"{path}.{name}" if path else str(name)
            if name not in live:
                if value not in (None, {}, []):
                    yield FieldChange(sub, _ABSENT, value)
            else:
                yield from diff_fields(value, live[name], sub)
        return
    if isinstance(desired, list) and isinstance(live, list):
        yield from _diff_lists(desired, live, path)
        return
    if not _same_scalar(desired, live):
        yield FieldChange(path, live, desired)


def _diff_lists(desired: list[Any], live: list[Any], path: str) -> Iterator[FieldChange]:
    if _keyed(desired) and _keyed(live):
        have = {item["name"]: item for item in live}
        want = {item["name"]: item for item in desired}
        for name, item in want.items():
            sub = f"{path}[{name}]"
            if name in have:
                yield from diff_fields(item, have[name], sub)
            else:
                yield FieldChange(sub, _ABSENT, item)
        for name, item in have.items():
            if name not in want:
                yield FieldChange(f"{path}[{name}]", item, _ABSENT)
        return
    if len(desired) != len(live):
        yield FieldChange(path, live, desired)
        return
    for i, (a, b) in enumerate(zip(desired, live, strict=True)):
        yield from diff_fields(a, b, f"{path}[{i}]")


def _keyed(items: list[Any]) -> bool:
    """Lists like containers, env and volumes: maps with a unique `name` each."""
    names = [item.get("name") for item in items if isinstance(item, Mapping)]
    return bool(items) and len(names) == len(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _same_scalar(a: Any, b: Any) -> bool:
    if a == b and type(a) is type(b):
        return True
    # Ports and quantities may come back as the other of int and text ("8080" vs 8080),
    # and quantities in the server's own spelling (cpu: 0.5 -> "500m", memory: 1Gi -> "1Gi").
    if (
        isinstance(a, (int, float, str))
        and isinstance(b, (int, float, str))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        if str(a) == str(b):
            return True
        qa, qb = quantity(str(a)), quantity(str(b))
        return qa is not None and qa == qb
    return False


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SUFFIX = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity's value ("500m" -> 0.5, "1Gi" -> 1073741824); None when it is not one."""
    match = _QUANTITY.match(text.strip())
    if not match:
        return None
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIX[suffix]


# --- status and history -----------------------------------------------------------------


class Outcome(StrEnum):
    """How a sync or rollback ended."""

    VERIFIED = "verified"
    """Applied, and every rollout became available in time."""
    ROLLED_BACK = "rolled-back"
    """Applied, verify failed, and the last verified commit's state was applied again."""
    FAILED = "failed"
    """Stopped before or during apply, or verify failed with nothing to roll back to."""


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    environment: str
    action: str
    """sync or rollback."""
    run_id: int | None
    commit: str
    """The commit the run was asked to apply."""
    applied_commit: str
    """The commit whose state the cluster was left in ("" when the run applied nothing)."""
    outcome: Outcome
    verified: bool
    rolled_back_to: str
    message: str
    created_at: datetime


def failed_in_a_row(history: Sequence[HistoryEntry], head: str) -> int:
    """How many syncs of `head` failed in a row at the top of `history` (newest first)."""
    failed = 0
    for entry in history:
        if entry.action != "sync" or entry.commit != head or entry.outcome == Outcome.VERIFIED:
            break
        failed += 1
    return failed


def retry_wait(history: Sequence[HistoryEntry], head: str, retry: Retry, now: datetime) -> float | None:
    """Seconds until the controller syncs `head` again after its sync failed (0: now), or None: not again.

    `history` is the environment's newest entries, newest first (`retry.limit + 1` are enough).  The
    syncs of `head` that failed in a row at its top are the first try and the retries so far; each
    retry waits `backoff`, then twice that, and so on, from the end of the failed sync before it."""
    failed = failed_in_a_row(history, head)
    if failed == 0 or failed > retry.limit:
        return None
    waited = (now - history[0].created_at).total_seconds()
    return max(0.0, retry.backoff * 2.0 ** (failed - 1) - waited)


class SyncState(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"


class EnvironmentStatus(BaseModel):
    """`shipline env status NAME --json`: exactly these keys (contract)."""

    model_config = ConfigDict(frozen=True)

    name: str
    sync: SyncState
    health: Health
    commit: str
    """The head of the environment's branch, as the repository has it now."""
    applied_commit: str
    message: str


def status_of(
    name: str,
    *,
    head: str,
    last: HistoryEntry | None,
    last_applied: HistoryEntry | None,
    drift: str = "",
    running: int | None = None,
    live_health: Health | None = None,
    live_detail: str = "",
    live_error: str = "",
    head_error: str = "",
    retrying: tuple[float, int, int] | None = None,
) -> EnvironmentStatus:
    """An environment's status from its newest history entries, its branch head and what is live.

    `running` is the id of a sync run under way; `live_health`, when the cluster
    was asked, wins over what the history implies (`live_detail` says what is
    not healthy; `live_error` why the cluster could not be asked).  `retrying`:
    the failed sync of the head is tried again in so many seconds, the retry's
    number and `retry.limit` (`retry_wait`).
    """
    applied = last_applied.applied_commit if last_applied else ""
    in_sync = bool(applied) and applied == head and not drift
    if live_health is not None:
        health = live_health
    elif running is not None:
        health = Health.PROGRESSING
    elif last_applied is None:
        health = Health.MISSING
    elif last is not None and last.outcome == Outcome.FAILED and last.applied_commit:
        health = Health.DEGRADED
    else:
        health = Health.HEALTHY
    if running is not None:
        message = f"a sync is running (run {running})"
    elif drift:
        message = f"drifted: {drift}"
    elif head_error:
        message = f"cannot read the branch head: {head_error}"
    elif last is not None:
        message = last.message
        if live_detail and live_health not in (None, Health.HEALTHY):
            message = f"{live_detail}; {message}"
        if retrying is not None:
            seconds, number, limit = retrying
            message = f"{message}; tried again {f'in {seconds:.0f}s' if seconds >= 1 else 'now'} (retry {number} of {limit})"
    else:
        message = "never synced: run `shipline env sync " + name + "`"
    if live_error and running is None:
        message = f"{message} (health from history: the cluster cannot be asked: {live_error})"
    return EnvironmentStatus(
        name=name,
        sync=SyncState.SYNCED if in_sync else SyncState.OUT_OF_SYNC,
        health=health,
        commit=head,
        applied_commit=applied,
        message=message,
    )
