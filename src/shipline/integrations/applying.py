"""Changing what an environment holds: validate, apply, prune, and what they would do (diff).

Every object applying would send is dry-run on the API server before anything
changes, and every rejection is reported at once; then the objects are
applied with server-side apply under one field manager (`shipline`), the
Namespaces and CRDs first so that what is in them can follow.  Objects that
are settled (live exactly as shipline applied this manifest) are neither
dry-run nor sent again.  Pruning deletes what shipline applied for the
environment before that the manifests no longer hold, except the kinds in
`NEVER_PRUNED`.  The environment's namespace is made here too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx2
from lightkube import ApiError
from lightkube.types import CascadeType, PatchType

from shipline.domain.objects import FIELD_MANAGER, FINGERPRINT, ObjectRef, applied_by_shipline, comparable, ref_of, settled
from shipline.exceptions import ClusterError, ManifestError, UsageError
from shipline.integrations.clusterobjects import Applied, Change, Desired, Kind, Outcome, Validation, crd_kinds
from shipline.integrations.clustersessions import Session, resource_class, status_code, status_text
from shipline.integrations.liveobjects import counterparts, dry_run_apply, tracked

NEVER_PRUNED = frozenset({("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition")})
"""Deleting these deletes what is in them (every object of a namespace, every
custom resource of a kind), things shipline may not have applied: reported, kept."""

_NAMESPACES = Kind("", "v1", "Namespace", "namespaces", False)

# ---------------------------------------------------------------- namespaces


async def label_namespace(session: Session, labels: Mapping[str, str]) -> bool:
    """Create the target namespace with these labels, or add them to the one there; True when created."""
    namespace = session.target.namespace
    if session.target.cluster_wide or not namespace:
        raise UsageError("labelling a namespace needs a namespace target")
    resource = resource_class(_NAMESPACES)
    ref = ObjectRef("", "Namespace", "", namespace)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(labels)}}
    try:
        await session.client.create(resource(body))
        return True
    except ApiError as exc:
        if exc.status.code != 409:
            raise session.refused("create", ref, exc) from exc
    try:
        await session.client.patch(resource, namespace, {"metadata": {"labels": dict(labels)}}, patch_type=PatchType.MERGE)
    except ApiError as exc:
        raise session.refused("label", ref, exc) from exc
    return False


async def delete_namespace(session: Session) -> bool:
    """Delete the target namespace and everything in it; False when it was not there."""
    namespace = session.target.namespace
    if session.target.cluster_wide or not namespace:
        raise UsageError("deleting a namespace needs a namespace target")
    try:
        await session.client.delete(resource_class(_NAMESPACES), namespace, cascade=CascadeType.BACKGROUND)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise session.refused("delete", ObjectRef("", "Namespace", "", namespace), exc) from exc
    return True


async def _ensure_namespace(session: Session) -> bool:
    namespace = session.target.namespace
    if session.target.cluster_wide or not namespace:
        return False
    resource = resource_class(_NAMESPACES)
    try:
        await session.client.get(resource, namespace)
        return False
    except ApiError as exc:
        if exc.status.code == 403:
            # Namespace-scoped credentials may not read namespaces: the objects' own requests will tell.
            return False
        if exc.status.code != 404:
            raise session.refused("read", ObjectRef("", "Namespace", "", namespace), exc) from exc
    try:
        await session.client.create(resource({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
    except ApiError as exc:
        if exc.status.code == 409:
            return False
        raise session.refused("create", ObjectRef("", "Namespace", "", namespace), exc) from exc
    return True


# ---------------------------------------------------------------- validate


async def validate(session: Session, desired: Sequence[Desired]) -> Validation:
    """Dry-run every object of desired that applying would send; raise listing every rejection."""
    await _ensure_namespace(session)
    live = await counterparts(session, desired)
    return await _validate(session, _unsettled(session, desired, live), defer=True)


def _unsettled(session: Session, desired: Sequence[Desired], live: Mapping[ObjectRef, dict[str, Any]]) -> list[Desired]:
    return [d for d in desired if not settled(d.body, live.get(d.ref), session.environment)]


async def _validate(session: Session, desired: Sequence[Desired], *, defer: bool, context: Sequence[Desired] = ()) -> Validation:
    """Dry-run desired; with defer, a 404 for an object whose namespace or kind desired (or context)
    declares is put off instead of rejected."""
    declared = [*desired, *context]
    new_namespaces = {d.ref.name for d in declared if (d.ref.group, d.ref.kind) == ("", "Namespace")}
    new_kinds = {(k.group, k.kind) for d in declared for k in crd_kinds(d.body)}
    validation = Validation()
    manifest_problems: list[str] = []
    cluster_problems: list[str] = []
    results = await session.gather(desired, lambda d: dry_run_apply(session, d))
    for item, result in zip(desired, results, strict=False):
        if isinstance(result, dict):
            validation.dry_runs[item.ref] = result
            continue
        if isinstance(result, httpx2.TransportError):
            raise session.unreachable(result) from result
        if isinstance(result, httpx2.HTTPStatusError) and not isinstance(result, ApiError):
            # Not a Kubernetes Status: the path itself is unknown (a kind not served, or not yet).
            code = int(result.response.status_code)
            if defer and code == 404 and (item.ref.group, item.ref.kind) in new_kinds:
                validation.deferred.append(item)
            elif code == 404:
                manifest_problems.append(
                    f"{item.source}: {item.ref}: the API server does not serve {item.kind.plural} in {item.kind.api_version}"
                )
            else:
                cluster_problems.append(f"apply {item.ref}: HTTP {code}: {result.response.text[:200]}")
            continue
        if not isinstance(result, ApiError):
            raise result
        code = status_code(result)
        if defer and code == 404 and ((item.ref.group, item.ref.kind) in new_kinds or item.ref.namespace in new_namespaces):
            validation.deferred.append(item)
        elif code in (400, 404, 422) or "failed to create typed patch object" in str(result.status.message):
            # The API server answers 500 when server-side apply meets a field the schema lacks.
            manifest_problems.append(f"{item.source}: {item.ref}: {status_text(result)}")
        else:
            cluster_problems.append(str(session.refused("apply", item.ref, result)))
    if cluster_problems:
        raise ClusterError(
            f"{len(cluster_problems)} of {len(desired)} objects refused, nothing applied:\n"
            + "\n".join(f"  {p}" for p in cluster_problems + manifest_problems)
        )
    if manifest_problems:
        raise ManifestError(manifest_problems)
    return validation


# ---------------------------------------------------------------- apply


async def apply(session: Session, desired: Sequence[Desired], report: Callable[[Applied], None]) -> list[Applied]:
    """Validate everything, then apply everything; the session's kinds are discovered again after new CRDs."""
    await _ensure_namespace(session)
    try:
        live = await counterparts(session, desired)
    except ClusterError as exc:
        raise ClusterError(f"nothing applied: {exc}") from exc
    # Objects whose manifest and live fields are as shipline left them need no dry-run and no write.
    quiet = [d for d in desired if settled(d.body, live.get(d.ref), session.environment)]
    for item in quiet:
        report(Applied(item.ref, Outcome.UNCHANGED))
    done = [Applied(d.ref, Outcome.UNCHANGED) for d in quiet]
    quiet_refs = {d.ref for d in quiet}
    desired = [d for d in desired if d.ref not in quiet_refs]
    validation = await _validate(session, desired, defer=True)
    deferred = {d.ref for d in validation.deferred}
    first = [d for d in desired if (d.ref.group, d.ref.kind) in NEVER_PRUNED and d.ref not in deferred]
    done += await _apply_all(session, first, validation, live, report)
    if validation.deferred:
        await _await_established(session, [d for d in first if d.ref.kind == "CustomResourceDefinition"])
        pending = validation.deferred
        for _ in range(16):  # a new CRD's kind can take a moment to be served after Established
            later = await _validate(session, pending, defer=True, context=first)
            validation.dry_runs.update(later.dry_runs)
            pending = later.deferred
            if not pending:
                break
            await asyncio.sleep(0.5)
        if pending:
            await _validate(session, pending, defer=False)  # raises, naming each object
        await session.discover()
    first_refs = {d.ref for d in first}
    rest = [d for d in desired if d.ref not in first_refs]
    return done + await _apply_all(session, rest, validation, live, report)


async def _apply_all(
    session: Session,
    items: Sequence[Desired],
    validation: Validation,
    live: Mapping[ObjectRef, dict[str, Any]],
    report: Callable[[Applied], None],
) -> list[Applied]:
    async def one(item: Desired) -> Applied:
        before = live.get(item.ref)
        after = validation.dry_runs.get(item.ref)
        if (
            before is not None
            and after is not None
            and applied_by_shipline(before, session.environment)
            and comparable(before) == comparable(after)
            and _fingerprint(before) == _fingerprint(after)
        ):
            outcome = Outcome.UNCHANGED  # the dry-run says applying changes nothing: spare the request
        else:
            try:
                await session.client.apply(resource_class(item.kind)(item.body), field_manager=FIELD_MANAGER, force=True)
            except ApiError as exc:
                raise session.refused("apply", item.ref, exc) from exc
            outcome = Outcome.CREATED if before is None else Outcome.CONFIGURED
        applied = Applied(item.ref, outcome)
        report(applied)
        return applied

    results = await session.gather(items, one)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        applied = [r for r in results if isinstance(r, Applied)]
        if isinstance(failures[0], httpx2.TransportError):
            raise session.unreachable(failures[0]) from failures[0]
        raise ClusterError(
            f"{len(failures)} of {len(items)} objects not applied ({len(applied)} were): "
            + "; ".join(str(f) for f in failures[:5])
        ) from failures[0]
    return [r for r in results if isinstance(r, Applied)]


async def _await_established(session: Session, crds: Sequence[Desired], timeout: float = 60.0) -> None:
    """A new CRD's kind is served only once the CRD is Established."""
    deadline = time.monotonic() + timeout
    for crd in crds:
        resource = resource_class(crd.kind)
        while True:
            live = dict(await session.client.get(resource, crd.ref.name))
            conditions = (live.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"{crd.ref} not Established after {timeout:.0f}s: check the API server's log")
            await asyncio.sleep(0.2)


def _fingerprint(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(FINGERPRINT)


# ---------------------------------------------------------------- diff and prune


async def diff(session: Session, desired: Sequence[Desired]) -> list[Change]:
    """What applying and pruning would change: the live objects beside the dry-run results."""
    await _ensure_namespace(session)
    live = await counterparts(session, desired)
    unsettled = _unsettled(session, desired, live)
    validation = await _validate(session, unsettled, defer=True)
    for obj in await tracked(session):
        live.setdefault(ref_of(obj), obj)
    sent = {d.ref for d in unsettled}
    changes: list[Change] = []
    for item in desired:
        before = live.get(item.ref)
        if item.ref not in sent:  # settled: live as shipline applied this very manifest
            changes.append(Change(item.ref, "unchanged", before, before))
            continue
        after = validation.dry_runs.get(item.ref, item.body)
        if before is None:
            action = "create"
        elif comparable(before) == comparable(after):
            action = "unchanged"
        else:
            action = "update"
        changes.append(Change(item.ref, action, before, after))
    wanted = {d.ref for d in desired}
    for ref, obj in sorted(live.items()):
        if ref not in wanted and applied_by_shipline(obj, session.environment):
            changes.append(Change(ref, "prune", obj, None))
    return changes


async def prune(
    session: Session, desired: Sequence[Desired], report: Callable[[Applied], None], *, dry_run: bool
) -> list[Applied]:
    """Delete what shipline applied for the environment before and desired no longer holds."""
    wanted = {d.ref for d in desired}
    stale = sorted(((ref_of(o), o) for o in await tracked(session) if ref_of(o) not in wanted), key=lambda e: e[0])
    kinds = {(k.group, k.kind): k for k in session.preferred()}

    async def one(entry: tuple[ObjectRef, dict[str, Any]]) -> Applied:
        ref, _ = entry
        if (ref.group, ref.kind) in NEVER_PRUNED:
            applied = Applied(ref, Outcome.KEPT)
        else:
            if not dry_run:
                try:
                    await session.client.delete(
                        resource_class(kinds[(ref.group, ref.kind)]),
                        ref.name,
                        namespace=ref.namespace or None,
                        cascade=CascadeType.BACKGROUND,
                    )
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise session.refused("delete", ref, exc) from exc
            applied = Applied(ref, Outcome.PRUNED)
        report(applied)
        return applied

    results = await session.gather(stale, one)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, Applied)]
