"""Reading what an environment holds on its cluster, and how it left what shipline applied.

The live counterparts of the desired objects (what `apply` compares with and
`diff` shows), the objects shipline applied for the environment (what
`prune` may delete), a dry-run (what applying would make of an object,
nothing changed), and drift: the live objects that are no longer what
shipline applied, found by listing or by watching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx2
from lightkube import ApiError

from shipline.domain.objects import FIELD_MANAGER, ObjectRef, applied_by_shipline, comparable, drift, ref_of
from shipline.integrations.clusterobjects import Desired, Drift, Kind
from shipline.integrations.clustersessions import Session, resource_class, status_code, watch_errors

_NOT_TRACKED = frozenset({("", "Event"), ("events.k8s.io", "Event")})


async def counterparts(session: Session, desired: Sequence[Desired]) -> dict[ObjectRef, dict[str, Any]]:
    """The live counterparts of desired (absent: not there).

    A namespace environment lists each kind in its namespace (one request a
    kind); a cluster-wide one lists what carries its labels and asks for the rest
    one by one, rather than listing every namespace of the cluster.
    """
    client = session.client
    live: dict[ObjectRef, dict[str, Any]] = {}
    kinds = {d.kind for d in desired}
    wide = session.target.cluster_wide

    async def listing(kind: Kind) -> None:
        resource = resource_class(kind)
        if not kind.namespaced:
            found = client.list(resource, labels=session.labels())
        elif wide:
            found = client.list(resource, namespace="*", labels=session.labels())
        else:
            found = client.list(resource, namespace=session.target.namespace)
        try:
            async for obj in found:
                body = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                live[ref_of(body)] = body
        except httpx2.HTTPStatusError as exc:
            if status_code(exc) == 404:
                return  # a kind that a CRD of these manifests is about to define: nothing live yet
            if not isinstance(exc, ApiError):
                raise

            where = "" if wide or not kind.namespaced else session.target.namespace or ""
            raise session.refused("list", ObjectRef(kind.group, kind.kind, where, "*"), exc) from exc

    for result in await session.gather(kinds, listing):
        if isinstance(result, BaseException):
            raise result
    missing = [d for d in desired if d.ref not in live and (wide or not d.kind.namespaced)]
    for item, obj in zip(missing, await session.gather(missing, lambda d: _get(session, d.kind, d.ref)), strict=False):
        if isinstance(obj, BaseException):
            raise obj
        if obj is not None:
            live[item.ref] = obj
    return {ref: obj for ref, obj in live.items()}


async def _get(session: Session, kind: Kind, ref: ObjectRef) -> dict[str, Any] | None:
    try:
        return dict(await session.client.get(resource_class(kind), ref.name, namespace=ref.namespace or None))
    except httpx2.HTTPStatusError as exc:
        if status_code(exc) == 404:
            return None
        if not isinstance(exc, ApiError):
            raise
        raise session.refused("read", ref, exc) from exc


async def tracked(session: Session) -> list[dict[str, Any]]:
    """The live objects shipline applied for the session's environment, of every kind it may list."""
    kinds = [
        k
        for k in session.preferred()
        if {"list", "delete", "patch"} <= k.verbs
        and (k.group, k.kind) not in _NOT_TRACKED
        and (k.namespaced or session.target.cluster_wide)
    ]
    namespace = "*" if session.target.cluster_wide else session.target.namespace

    async def listing(kind: Kind) -> list[dict[str, Any]]:
        resource = resource_class(kind)
        try:
            if kind.namespaced:
                found = session.client.list(resource, namespace=namespace, labels=session.labels())
            else:
                found = session.client.list(resource, labels=session.labels())
            return [{**dict(o), "apiVersion": kind.api_version, "kind": kind.kind} async for o in found]
        except httpx2.HTTPStatusError as exc:
            if status_code(exc) in (403, 404, 405):
                return []  # kinds these credentials may not list hold nothing they applied
            if not isinstance(exc, ApiError):
                raise
            raise session.refused("list", ObjectRef(kind.group, kind.kind, namespace or "", "*"), exc) from exc

    results = await session.gather(kinds, listing)
    objects: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        objects.extend(o for o in result if applied_by_shipline(o, session.environment))
    return objects


async def dry_run_apply(session: Session, item: Desired) -> dict[str, Any]:
    """What the API server would make of item if it were applied (server-side apply, dry run)."""
    result = await session.client.apply(
        resource_class(item.kind)(item.body), field_manager=FIELD_MANAGER, force=True, dry_run=True
    )
    return dict(result)


async def drifted(session: Session, desired: Sequence[Desired]) -> list[Drift]:
    """The objects whose live state left what shipline applied of desired."""
    live = await counterparts(session, desired)
    found = await session.gather(desired, lambda d: _drift(session, d, live.get(d.ref)))
    for result in found:
        if isinstance(result, BaseException):
            raise result
    return [r for r in found if isinstance(r, Drift)]


async def _drift(session: Session, item: Desired, live: dict[str, Any] | None) -> Drift | None:
    why = drift(item.body, live, session.environment)
    if not why or live is None or not why.startswith("changed"):
        return Drift(item.ref, why) if why else None
    # A value the server normalises (cpu: 1000m reads back as 1) looks changed: the dry-run decides.
    try:
        would = await dry_run_apply(session, item)
    except ApiError:
        return Drift(item.ref, why)
    return Drift(item.ref, why) if comparable(would) != comparable(live) else None


async def wait_for_drift(session: Session, desired: Sequence[Desired], timeout: float) -> list[Drift]:
    """Watch desired's objects until one drifts (returned at once) or timeout seconds pass ([])."""
    by_ref = {d.ref: d for d in desired}
    live = await counterparts(session, desired)
    now = [r for r in await session.gather(desired, lambda d: _drift(session, d, live.get(d.ref))) if r is not None]
    for result in now:
        if isinstance(result, BaseException):
            raise result
    if now or not desired:
        return [r for r in now if isinstance(r, Drift)]
    found: list[Drift] = []
    namespace = "*" if session.target.cluster_wide else session.target.namespace

    async def watching(kind: Kind) -> None:
        # Without a resourceVersion the watch starts with the current objects as ADDED events: all settled.
        args: dict[str, Any] = {"labels": session.labels()}
        if kind.namespaced:
            args["namespace"] = namespace
        async for event, obj in session.client.watch(resource_class(kind), on_error=watch_errors, **args):
            body = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
            ref = ref_of(body)
            if ref in by_ref:
                moved = await _drift(session, by_ref[ref], None if event == "DELETED" else body)
                if moved is not None:
                    found.append(moved)
                    return

    watches = [asyncio.create_task(watching(k)) for k in {d.kind for d in desired}]
    try:
        done, _ = await asyncio.wait(watches, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    return found
