"""Waiting for an environment's workloads to roll out, watching rather than polling.

One list per kind gives the starting state of every desired object and the
resourceVersion to watch from; then one watch per kind still waited for
reports each change, until every object is healthy, one fails, or the time
runs out.  How healthy an object is comes from the domain (`assess`); what
is added here is the watching, and the pods' own reasons (unschedulable,
image pull, crash loop) for a workload that failed or did not finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx2
from lightkube import ApiError

from shipline.domain.objects import ObjectRef, ref_of, selector
from shipline.domain.rollouts import Assessment, Health, assess, pod_trouble
from shipline.exceptions import ClusterError
from shipline.integrations.clusterobjects import Desired, Kind, ResourceHealth, Verification
from shipline.integrations.clustersessions import Session, resource_class, status_code, watch_errors


async def verify(
    session: Session, desired: Sequence[Desired], timeout: float, report: Callable[[ResourceHealth], None]
) -> Verification:
    """Wait until every object of desired is healthy, one is degraded, or timeout seconds pass."""
    client = session.client
    started = time.monotonic()
    state: dict[ObjectRef, Assessment] = {}
    by_ref = {d.ref: d for d in desired}
    changed = asyncio.Event()

    def observe(ref: ObjectRef, live: dict[str, Any] | None) -> None:
        if ref not in by_ref:
            return
        assessment = assess(by_ref[ref].body, live)
        previous = state.get(ref)
        state[ref] = assessment
        if previous is None or (previous.health, previous.message) != (assessment.health, assessment.message):
            report(ResourceHealth(ref, assessment))
            changed.set()

    def finished() -> bool:
        return len(state) == len(by_ref) and (
            all(a.health is Health.HEALTHY for a in state.values()) or any(a.health is Health.DEGRADED for a in state.values())
        )

    # One list per kind gives the starting state and the resourceVersion to watch from.
    kinds = {(d.kind.group, d.kind.kind): d.kind for d in desired}
    namespace = "*" if session.target.cluster_wide else session.target.namespace
    versions: dict[tuple[str, str], str] = {}

    async def listing(kind: Kind) -> None:
        resource = resource_class(kind)
        found = (
            client.list(resource, namespace=namespace, labels=session.labels())
            if kind.namespaced
            else client.list(resource, labels=session.labels())
        )
        seen = set()
        try:
            async for obj in found:
                live = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                seen.add(ref_of(live))
                observe(ref_of(live), live)
        except httpx2.HTTPStatusError as exc:
            if not isinstance(exc, ApiError):
                raise ClusterError(f"list {kind.kind} objects: HTTP {status_code(exc)} from {session.server}") from exc

            where = "" if namespace == "*" or not kind.namespaced else namespace or ""
            raise session.refused("list", ObjectRef(kind.group, kind.kind, where, "*"), exc) from exc
        try:
            versions[(kind.group, kind.kind)] = found.resourceVersion
        except Exception:
            pass
        for ref, item in by_ref.items():
            if (item.kind.group, item.kind.kind) == (kind.group, kind.kind) and ref not in seen:
                observe(ref, None)

    for result in await session.gather(kinds.values(), listing):
        if isinstance(result, BaseException):
            raise result

    async def watching(kind: Kind) -> None:
        resource = resource_class(kind)
        args: dict[str, Any] = {
            "labels": selector(session.environment),
            "resource_version": versions.get((kind.group, kind.kind)),
        }
        if kind.namespaced:
            args["namespace"] = namespace
        async for event, obj in client.watch(resource, on_error=watch_errors, **args):
            live = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
            observe(ref_of(live), None if event == "DELETED" else live)

    # Watch the kinds that still have something to wait for: workloads rolling out, objects not there yet.
    pending = [
        k
        for k in kinds.values()
        if any((d.kind.group, d.kind.kind) == (k.group, k.kind) and state[d.ref].health is not Health.HEALTHY for d in desired)
    ]
    watches = [asyncio.create_task(watching(k)) for k in pending] if not finished() else []
    timed_out = False
    try:
        while not finished():
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                timed_out = True
                break
            changed.clear()
            waiter = asyncio.create_task(changed.wait())
            done, _ = await asyncio.wait([waiter, *watches], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in done:
                if task is not waiter and task.exception() is not None:
                    exc = task.exception()
                    if isinstance(exc, ApiError):
                        raise session.refused("watch", ObjectRef("", "objects", namespace or "", "*"), exc) from exc
                    if isinstance(exc, httpx2.HTTPStatusError):
                        raise ClusterError(
                            f"watch of environment {session.environment}'s workloads refused: HTTP "
                            f"{exc.response.status_code}: check that {session.origin} may watch them"
                        ) from exc
                    raise exc  # type: ignore[misc]
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    if timed_out or any(a.health is Health.DEGRADED for a in state.values()):
        await _explain(session, by_ref, state, timeout if timed_out else None, report)
    resources = [ResourceHealth(ref, state[ref]) for ref in sorted(state)]
    return Verification(resources, timed_out, time.monotonic() - started)


async def _explain(
    session: Session,
    by_ref: Mapping[ObjectRef, Desired],
    state: dict[ObjectRef, Assessment],
    timeout: float | None,
    report: Callable[[ResourceHealth], None],
) -> None:
    """Add the pods' own reasons (unschedulable, image pull, crash loop) to each failed workload."""
    pods = Kind("", "v1", "Pod", "pods", True)
    for ref, assessment in list(state.items()):
        if assessment.health is Health.HEALTHY or ref.kind not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        match = ((by_ref[ref].body.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        why = ""
        if match:
            try:
                found = session.client.list(resource_class(pods), namespace=ref.namespace, labels=dict(match))
                why = pod_trouble([dict(p) async for p in found])
            except ApiError:
                why = ""
        message = assessment.message + (f"; {why}" if why else "")
        if timeout is not None and assessment.health is not Health.DEGRADED:
            new = Assessment(Health.DEGRADED, "VerifyTimeout", f"not rolled out within {_seconds(timeout)}: {message}")
        else:
            new = Assessment(assessment.health, assessment.reason, message)
        if new != assessment:
            state[ref] = new
            report(ResourceHealth(ref, new))


def _seconds(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"
