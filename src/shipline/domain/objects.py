"""Kubernetes objects as an environment tracks them: who they are, whose they are.

shipline marks every object it applies for an environment with two labels and
applies it under one field manager.  Prune deletes only objects that carry both
labels for that environment *and* whose fields that manager owns, so an object
made by hand in the same namespace, or one applied by another tool or for
another environment, is never touched.

Pure data and functions: no client, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipline.exceptions import UsageError

FIELD_MANAGER = "shipline"
MANAGED_BY = "app.kubernetes.io/managed-by"
ENVIRONMENT = "shipline.dev/environment"
FINGERPRINT = "shipline.dev/fingerprint"
"""Annotation: a hash of the manifest as shipline last applied it (see `settled`)."""

CREDENTIALS_SECONDS = 90 * 24 * 3600
"""The lifetime asked for an environment's credentials (`shipline env credentials`) unless told otherwise."""

_LABEL_VALUE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One object's identity across API versions: `apps/v1` and `apps/v1beta2` name the same Deployment."""

    group: str
    kind: str
    namespace: str
    """'' for a cluster-scoped object."""
    name: str

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where}"


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(
        str(obj.get("apiVersion", "")).rpartition("/")[0],
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
    )


def check_environment_name(name: str) -> str:
    """The name becomes a label value: lower case, digits, '-', '.', '_', at most 63."""
    if not _LABEL_VALUE.match(name):
        raise UsageError(
            f"environment name {name!r} cannot be a Kubernetes label value: "
            "use lower-case letters, digits and '-' (at most 63 characters)"
        )
    return name


def selector(environment: str) -> dict[str, str]:
    """The labels every object shipline applied for `environment` carries."""
    return {MANAGED_BY: FIELD_MANAGER, ENVIRONMENT: environment}


def with_tracking(obj: Mapping[str, Any], environment: str) -> dict[str, Any]:
    """A copy of obj carrying the tracking labels and its fingerprint (the manifest itself is not changed)."""
    meta = dict(obj.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), **selector(environment)}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != FINGERPRINT}
    labelled = {**obj, "metadata": {**meta, "annotations": annotations}}
    meta["annotations"] = {**annotations, FINGERPRINT: fingerprint(labelled)}
    return {**obj, "metadata": meta}


def fingerprint(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def settled(desired: Mapping[str, Any], live: Mapping[str, Any] | None, environment: str) -> bool:
    """True when applying desired again would change nothing, without asking the API server.

    Two facts make it safe: the live object carries the fingerprint of this very
    manifest (so no field was added, changed or removed in the repository since
    shipline applied it), and every field the manifest sets still has its value
    live (so nobody edited those fields by hand since).  Anything else, including
    a value the server normalises (`cpu: 1000m` reads back as `1`), answers False
    and the object takes the full way: dry-run, compare, apply.
    """
    if live is None or not applied_by_shipline(live, environment):
        return False
    mine = ((desired.get("metadata") or {}).get("annotations") or {}).get(FINGERPRINT)
    theirs = ((live.get("metadata") or {}).get("annotations") or {}).get(FINGERPRINT)
    return bool(mine) and mine == theirs and contained(desired, live)


def drift(desired: Mapping[str, Any], live: Mapping[str, Any] | None, environment: str) -> str:
    """How live differs from what shipline applied of desired ('' when it does not: settled)."""
    if live is None:
        return "deleted"
    if not applied_by_shipline(live, environment):
        return "no longer carries shipline's labels or field manager"
    paths = uncontained(desired, live)
    if paths:
        return "changed: " + ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    if not settled(desired, live, environment):
        return f"applied from other manifests (annotation {FINGERPRINT} differs)"
    return ""


def uncontained(part: Any, whole: Any, prefix: str = "") -> list[str]:
    """The paths of part's fields that whole lacks or holds with another value."""
    if isinstance(part, Mapping):
        if not isinstance(whole, Mapping):
            return [prefix or "."]
        return [
            p
            for k, v in part.items()
            for p in (
                [f"{prefix}.{k}" if prefix else str(k)]
                if k not in whole
                else uncontained(v, whole[k], f"{prefix}.{k}" if prefix else str(k))
            )
        ]
    if isinstance(part, list):
        if not isinstance(whole, list) or len(part) != len(whole):
            return [prefix or "."]
        return [p for i, (a, b) in enumerate(zip(part, whole, strict=False)) for p in uncontained(a, b, f"{prefix}[{i}]")]
    return [] if part == whole else [prefix or "."]


def contained(part: Any, whole: Any) -> bool:
    """Every field of part is in whole with the same value (lists: same length, item by item)."""
    if isinstance(part, Mapping):
        return isinstance(whole, Mapping) and all(k in whole and contained(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(part) == len(whole)
            and all(contained(p, w) for p, w in zip(part, whole, strict=False))
        )
    return bool(part == whole)


def applied_by_shipline(live: Mapping[str, Any], environment: str) -> bool:
    """True when live carries the environment's labels and shipline's field manager applied it."""
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in selector(environment).items()):
        return False
    return any(
        entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" for entry in meta.get("managedFields") or []
    )


_SERVER_FIELDS = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """obj without what the server writes on every change (status, versions, field owners)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in ("deployment.kubernetes.io/revision", FINGERPRINT)
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The field paths (`spec.template.spec.containers[0].image`) whose values differ."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        paths: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                paths.append(sub)
            else:
                paths.extend(changed_paths(before[key], after[key], sub))
        return paths
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after, strict=False)) for p in changed_paths(b, a, f"{prefix}[{i}]")]
    return [] if before == after else [prefix or "."]
