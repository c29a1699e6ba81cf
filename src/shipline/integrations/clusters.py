"""A Kubernetes cluster, as one environment's credentials see it: the only door
from shipline to a cluster.

`Cluster` loads a directory of rendered manifests, dry-runs every object on the
API server before anything changes, applies them with server-side apply under
one field manager (`shipline`) and the environment's tracking labels, prunes
the objects it applied before that the manifests no longer hold, and waits,
with watches, for the workloads to roll out.  It speaks to the API server
through lightkube (every kind as a generic resource found by API discovery, so
CustomResourceDefinitions' kinds need nothing special) and never parses
`kubectl` output.

Errors are converted where they enter: an object the API server rejects
becomes a `ManifestError` line naming the object and its file; a refusal of
the credentials, a conflict or an unreachable server a `ClusterError` saying
what to check.

The interface is synchronous; each call runs its own event loop (many requests
in flight at once), so call it from a worker thread inside a running loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource, create_api_info
from lightkube.types import CascadeType, OnErrorAction, OnErrorResult, PatchType

from shipline.domain.objects import (
    FIELD_MANAGER,
    FINGERPRINT,
    ObjectRef,
    applied_by_shipline,
    check_environment_name,
    comparable,
    drift,
    ref_of,
    selector,
    settled,
    with_tracking,
)
from shipline.domain.rollouts import Assessment, Health, assess, pod_trouble, worst
from shipline.exceptions import ClusterError, ManifestError, UsageError
from shipline.integrations.manifests import Manifest, read_manifests
from shipline.kubeconfigs import keys_in_memory

T = TypeVar("T")

NEVER_PRUNED = frozenset({("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition")})
"""Deleting these deletes what is in them (every object of a namespace, every
custom resource of a kind), things shipline may not have applied: reported, kept."""

_NOT_TRACKED = frozenset({("", "Event"), ("events.k8s.io", "Event")})
_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


# ---------------------------------------------------------------- data


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
    """Removed from the manifests but not deleted (a Namespace or a CRD: see NEVER_PRUNED)."""


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


# ---------------------------------------------------------------- the cluster


class Cluster:
    """One environment's view of a cluster: its credentials, its target, its objects."""

    def __init__(
        self,
        config: SingleConfig,
        *,
        environment: str,
        target: Target,
        origin: str = "kubeconfig",
        concurrency: int = 16,
    ) -> None:
        self.config = config
        self.environment = check_environment_name(environment)
        self.target = target
        self.origin = origin
        self.concurrency = concurrency
        self._kinds: dict[tuple[str, str], Kind] | None = None

    @classmethod
    def connect(cls, kubeconfig: Path | None, *, environment: str, target: Target, concurrency: int = 16) -> Cluster:
        """From a kubeconfig file (default: $KUBECONFIG), its current context."""
        return cls(
            load_kubeconfig(kubeconfig),
            environment=environment,
            target=target,
            origin=str(kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")),
            concurrency=concurrency,
        )

    @property
    def server(self) -> str:
        return self.config.cluster.server

    # ------------------------------------------------ public operations

    def load(self, directory: Path) -> list[Desired]:
        """The directory's objects, resolved against the API server's kinds, placed in the target."""
        manifests = read_manifests(directory)
        return self._run(lambda client: self._resolve(client, manifests))

    def label_namespace(self, labels: Mapping[str, str]) -> bool:
        """Create the target namespace with these labels, or add them to the one there; True when created."""
        return self._run(lambda client: self._label_namespace(client, labels))

    def delete_namespace(self) -> bool:
        """Delete the target namespace and everything in it; False when it was not there."""
        return self._run(self._delete_namespace)

    def validate(self, desired: Sequence[Desired]) -> Validation:
        """Dry-run every object that applying would send; raise listing every rejection.

        Objects that are settled (live exactly as shipline applied this manifest) are
        not sent again by `apply`, so they need no dry-run either: a one-service change
        to a 200-service environment dry-runs that service, not 400 objects.
        """

        async def go(client: AsyncClient) -> Validation:
            await self._ensure_namespace(client)
            live = await self._live(client, desired)
            return await self._validate(client, self._unsettled(desired, live), defer=True)

        return self._run(go)

    def _unsettled(self, desired: Sequence[Desired], live: Mapping[ObjectRef, dict[str, Any]]) -> list[Desired]:
        return [d for d in desired if not settled(d.body, live.get(d.ref), self.environment)]

    def diff(self, desired: Sequence[Desired]) -> list[Change]:
        """What applying and pruning would change: the live objects beside the dry-run results."""
        return self._run(lambda client: self._diff(client, desired))

    def apply(self, desired: Sequence[Desired], report: Callable[[Applied], None] = lambda a: None) -> list[Applied]:
        """Validate everything, then apply everything (server-side apply, one field manager)."""
        return self._run(lambda client: self._apply(client, desired, report))

    def tracked(self) -> list[dict[str, Any]]:
        """The live objects shipline applied for this environment (the candidates for prune)."""
        return self._run(lambda client: self._tracked(client))

    def prune(
        self, desired: Sequence[Desired], report: Callable[[Applied], None] = lambda a: None, *, dry_run: bool = False
    ) -> list[Applied]:
        """Delete what shipline applied for this environment before and `desired` no longer holds."""
        return self._run(lambda client: self._prune(client, desired, report, dry_run))

    def verify(
        self, desired: Sequence[Desired], timeout: float, report: Callable[[ResourceHealth], None] = lambda r: None
    ) -> Verification:
        """Wait (watching, not polling) until every workload rolled out, one fails, or timeout seconds pass."""
        return self._run(lambda client: self._verify(client, desired, timeout, report))

    def sync(
        self,
        desired: Sequence[Desired],
        timeout: float,
        applied: Callable[[Applied], None] = lambda a: None,
        health: Callable[[ResourceHealth], None] = lambda r: None,
    ) -> tuple[list[Applied], Verification]:
        """apply, prune and verify in one go (one connection): a sync, or a rollback to an earlier rendered state."""

        async def go(client: AsyncClient) -> tuple[list[Applied], Verification]:
            changes = await self._apply(client, desired, applied)
            changes += await self._prune(client, desired, applied, False)
            return changes, await self._verify(client, desired, timeout, health)

        return self._run(go)

    def drifted(self, desired: Sequence[Desired]) -> list[Drift]:
        """The objects whose live state left what shipline applied of desired (no dry-run: lists only)."""

        async def go(client: AsyncClient) -> list[Drift]:
            live = await self._live(client, desired)
            found = await self._gather(desired, lambda d: self._drift(client, d, live.get(d.ref)))
            for result in found:
                if isinstance(result, BaseException):
                    raise result
            return [r for r in found if isinstance(r, Drift)]

        return self._run(go)

    async def _drift(self, client: AsyncClient, item: Desired, live: dict[str, Any] | None) -> Drift | None:
        why = drift(item.body, live, self.environment)
        if not why or live is None or not why.startswith("changed"):
            return Drift(item.ref, why) if why else None
        # A value the server normalises (cpu: 1000m reads back as 1) looks changed: the dry-run decides.
        try:
            would = await self._dry_run(client, item)
        except ApiError:
            return Drift(item.ref, why)
        return Drift(item.ref, why) if comparable(would) != comparable(live) else None

    def wait_for_drift(self, desired: Sequence[Desired], timeout: float) -> list[Drift]:
        """Watch desired's objects until one drifts (returned at once) or timeout seconds pass ([]).

        One watch per kind, filtered by the environment's label: a reconciler's
        way to notice a hand edit without polling every object.  Status updates
        by controllers are not drift.  Objects already drifted are returned at once.
        """
        return self._run(lambda client: self._wait_for_drift(client, desired, timeout))

    async def _wait_for_drift(self, client: AsyncClient, desired: Sequence[Desired], timeout: float) -> list[Drift]:
        by_ref = {d.ref: d for d in desired}
        live = await self._live(client, desired)
        now = [r for r in await self._gather(desired, lambda d: self._drift(client, d, live.get(d.ref))) if r is not None]
        for result in now:
            if isinstance(result, BaseException):
                raise result
        if now or not desired:
            return [r for r in now if isinstance(r, Drift)]
        found: list[Drift] = []
        namespace = "*" if self.target.cluster_wide else self.target.namespace

        async def watching(kind: Kind) -> None:
            # Without a resourceVersion the watch starts with the current objects as ADDED events: all settled.
            args: dict[str, Any] = {"labels": self._labels()}
            if kind.namespaced:
                args["namespace"] = namespace
            async for event, obj in client.watch(_resource(kind), on_error=_watch_errors, **args):
                body = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                ref = ref_of(body)
                if ref in by_ref:
                    moved = await self._drift(client, by_ref[ref], None if event == "DELETED" else body)
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

    # ------------------------------------------------ plumbing

    def _labels(self) -> dict[str, Any]:
        return dict(selector(self.environment))

    def _run(self, work: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            client = AsyncClient(
                self.config,
                namespace=self.target.namespace,
                field_manager=FIELD_MANAGER,
                timeout=httpx2.Timeout(30.0),
                trust_env=False,
            )
            try:
                if self._kinds is None:
                    self._kinds = await self._discover()
                return await work(client)
            finally:
                await client.close()

        try:
            return asyncio.run(main())
        except httpx2.TransportError as exc:
            raise self._unreachable(exc) from exc
        except ApiError as exc:  # a request no code path above expected to fail
            raise ClusterError(
                f"the API server at {self.server} refused a request: {_code(exc)} {exc.status.reason}: {_status_text(exc)}"
            ) from exc
        except httpx2.HTTPStatusError as exc:
            raise ClusterError(
                f"the API server at {self.server} answered HTTP {exc.response.status_code} to "
                f"{exc.request.method} {exc.request.url.path}"
            ) from exc

    def _unreachable(self, exc: Exception) -> ClusterError:
        return ClusterError(
            f"cannot reach the Kubernetes API server at {self.server} ({type(exc).__name__}: {exc or 'no answer'}): "
            f"check that it is running and that {self.origin} names the right server"
        )

    async def _discover(self) -> dict[tuple[str, str], Kind]:
        """Every resource type the API server serves, by (apiVersion, kind): aggregated discovery, two requests."""
        params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(30.0), trust_env=False)
        kinds: dict[tuple[str, str], Kind] = {}
        try:
            async with client_adapter.AsyncClient(self.config, params) as http:
                for path in ("/api", "/apis"):
                    response = await http.get(path, headers={"Accept": _DISCOVERY})
                    if response.status_code in (401, 403):
                        raise ClusterError(
                            f"the API server at {self.server} refused discovery ({response.status_code}): "
                            f"the credentials in {self.origin} are not accepted (expired or revoked token?)"
                        )
                    response.raise_for_status()
                    data = response.json()
                    if data.get("kind") != "APIGroupDiscoveryList":
                        raise ClusterError(
                            f"the API server at {self.server} does not serve aggregated discovery: Kubernetes 1.30 or newer is needed"
                        )
                    for group in data.get("items") or []:
                        name = (group.get("metadata") or {}).get("name") or ""
                        for version in group.get("versions") or []:
                            for resource in version.get("resources") or []:
                                response_kind = (resource.get("responseKind") or {}).get("kind")
                                if not response_kind:
                                    continue
                                kind = Kind(
                                    name,
                                    version["version"],
                                    response_kind,
                                    resource["resource"],
                                    resource.get("scope") == "Namespaced",
                                    frozenset(resource.get("verbs") or ()),
                                )
                                kinds.setdefault((kind.api_version, kind.kind), kind)
        except httpx2.HTTPStatusError as exc:
            raise ClusterError(f"API discovery on {self.server} failed: HTTP {exc.response.status_code}") from exc
        except httpx2.TransportError as exc:
            raise self._unreachable(exc) from exc
        return kinds

    def _preferred(self) -> list[Kind]:
        """One Kind per (group, kind): the version the server lists first."""
        seen: dict[tuple[str, str], Kind] = {}
        for kind in (self._kinds or {}).values():
            seen.setdefault((kind.group, kind.kind), kind)
        return list(seen.values())

    async def _gather(self, items: Iterable[T], work: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """work(item) for every item, `concurrency` at a time; exceptions are returned, not raised."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: T) -> Any:
            async with gate:
                return await work(item)

        return list(await asyncio.gather(*(one(i) for i in items), return_exceptions=True))

    # ------------------------------------------------ resolving

    async def _resolve(self, client: AsyncClient, manifests: Sequence[Manifest]) -> list[Desired]:
        kinds = dict(self._kinds or {})
        for manifest in manifests:  # kinds the manifests' own CRDs define
            for defined in _crd_kinds(manifest.body):
                kinds.setdefault((defined.api_version, defined.kind), defined)
        problems: list[str] = []
        desired: list[Desired] = []
        seen: dict[ObjectRef, str] = {}
        for manifest in manifests:
            body = manifest.body
            kind = kinds.get((str(body["apiVersion"]), str(body["kind"])))
            if kind is None:
                problems.append(
                    f"{manifest.source}: {body['kind']}/{body['metadata']['name']}: the API server at {self.server} "
                    f"has no kind {body['kind']} in {body['apiVersion']} (a typo, or a CustomResourceDefinition not installed?)"
                )
                continue
            meta = dict(body["metadata"])
            problem = self._place(kind, meta)
            if problem:
                problems.append(f"{manifest.source}: {kind.kind}/{meta['name']}: {problem}")
                continue
            obj = with_tracking({**body, "metadata": meta}, self.environment)
            ref = ref_of(obj)
            if ref in seen:
                problems.append(f"{manifest.source}: {ref} is also declared in {seen[ref]}")
                continue
            seen[ref] = manifest.source
            desired.append(Desired(ref, kind, obj, manifest.source))
        if problems:
            raise ManifestError(problems)
        return desired

    def _place(self, kind: Kind, meta: dict[str, Any]) -> str:
        """Set meta's namespace for the target; why the object cannot go there ('' when it can)."""
        target = self.target
        if not kind.namespaced:
            if not target.cluster_wide:
                return (
                    f"{kind.kind} is cluster-scoped and environment {self.environment} targets namespace "
                    f"{target.namespace}: declare the environment with `cluster: true` to hold it"
                )
            meta.pop("namespace", None)
            return ""
        namespace = meta.get("namespace") or target.namespace
        if not namespace:
            return "names no namespace, and a cluster-wide environment has no default one (set metadata.namespace)"
        if not target.cluster_wide and namespace != target.namespace:
            return (
                f"is in namespace {namespace}, but environment {self.environment} targets namespace {target.namespace} "
                "(remove metadata.namespace, or declare the environment with `cluster: true`)"
            )
        meta["namespace"] = namespace
        return ""

    # ------------------------------------------------ namespaces, validation, apply

    async def _label_namespace(self, client: AsyncClient, labels: Mapping[str, str]) -> bool:
        namespace = self.target.namespace
        if self.target.cluster_wide or not namespace:
            raise UsageError("labelling a namespace needs a namespace target")
        resource = _resource(Kind("", "v1", "Namespace", "namespaces", False))
        ref = ObjectRef("", "Namespace", "", namespace)
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(labels)}}
        try:
            await client.create(resource(body))
            return True
        except ApiError as exc:
            if exc.status.code != 409:
                raise self._refused("create", ref, exc) from exc
        try:
            await client.patch(resource, namespace, {"metadata": {"labels": dict(labels)}}, patch_type=PatchType.MERGE)
        except ApiError as exc:
            raise self._refused("label", ref, exc) from exc
        return False

    async def _delete_namespace(self, client: AsyncClient) -> bool:
        namespace = self.target.namespace
        if self.target.cluster_wide or not namespace:
            raise UsageError("deleting a namespace needs a namespace target")
        resource = _resource(Kind("", "v1", "Namespace", "namespaces", False))
        try:
            await client.delete(resource, namespace, cascade=CascadeType.BACKGROUND)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise self._refused("delete", ObjectRef("", "Namespace", "", namespace), exc) from exc
        return True

    async def _ensure_namespace(self, client: AsyncClient) -> bool:
        namespace = self.target.namespace
        if self.target.cluster_wide or not namespace:
            return False
        resource = _resource(Kind("", "v1", "Namespace", "namespaces", False))
        try:
            await client.get(resource, namespace)
            return False
        except ApiError as exc:
            if exc.status.code == 403:
                # Namespace-scoped credentials may not read namespaces: the objects' own requests will tell.
                return False
            if exc.status.code != 404:
                raise self._refused("read", ObjectRef("", "Namespace", "", namespace), exc) from exc
        try:
            await client.create(resource({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise self._refused("create", ObjectRef("", "Namespace", "", namespace), exc) from exc
        return True

    async def _dry_run(self, client: AsyncClient, item: Desired) -> dict[str, Any]:
        result = await client.apply(_resource(item.kind)(item.body), field_manager=FIELD_MANAGER, force=True, dry_run=True)
        return dict(result)

    async def _validate(
        self, client: AsyncClient, desired: Sequence[Desired], *, defer: bool, context: Sequence[Desired] = ()
    ) -> Validation:
        """Dry-run desired; with defer, a 404 for an object whose namespace or kind desired (or context)
        declares is put off instead of rejected."""
        declared = [*desired, *context]
        new_namespaces = {d.ref.name for d in declared if (d.ref.group, d.ref.kind) == ("", "Namespace")}
        new_kinds = {(k.group, k.kind) for d in declared for k in _crd_kinds(d.body)}
        validation = Validation()
        manifest_problems: list[str] = []
        cluster_problems: list[str] = []
        results = await self._gather(desired, lambda d: self._dry_run(client, d))
        for item, result in zip(desired, results, strict=False):
            if isinstance(result, dict):
                validation.dry_runs[item.ref] = result
                continue
            if isinstance(result, httpx2.TransportError):
                raise self._unreachable(result) from result
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
            code = _code(result)
            if defer and code == 404 and ((item.ref.group, item.ref.kind) in new_kinds or item.ref.namespace in new_namespaces):
                validation.deferred.append(item)
            elif code in (400, 404, 422) or "failed to create typed patch object" in str(result.status.message):
                # The API server answers 500 when server-side apply meets a field the schema lacks.
                manifest_problems.append(f"{item.source}: {item.ref}: {_status_text(result)}")
            else:
                cluster_problems.append(str(self._refused("apply", item.ref, result)))
        if cluster_problems:
            raise ClusterError(
                f"{len(cluster_problems)} of {len(desired)} objects refused, nothing applied:\n"
                + "\n".join(f"  {p}" for p in cluster_problems + manifest_problems)
            )
        if manifest_problems:
            raise ManifestError(manifest_problems)
        return validation

    async def _apply(self, client: AsyncClient, desired: Sequence[Desired], report: Callable[[Applied], None]) -> list[Applied]:
        await self._ensure_namespace(client)
        try:
            live = await self._live(client, desired)
        except ClusterError as exc:
            raise ClusterError(f"nothing applied: {exc}") from exc
        # Objects whose manifest and live fields are as shipline left them need no dry-run and no write.
        quiet = [d for d in desired if settled(d.body, live.get(d.ref), self.environment)]
        for item in quiet:
            report(Applied(item.ref, Outcome.UNCHANGED))
        done = [Applied(d.ref, Outcome.UNCHANGED) for d in quiet]
        quiet_refs = {d.ref for d in quiet}
        desired = [d for d in desired if d.ref not in quiet_refs]
        validation = await self._validate(client, desired, defer=True)
        deferred = {d.ref for d in validation.deferred}
        first = [d for d in desired if (d.ref.group, d.ref.kind) in NEVER_PRUNED and d.ref not in deferred]
        done += await self._apply_all(client, first, validation, live, report)
        if validation.deferred:
            await self._await_established(client, [d for d in first if d.ref.kind == "CustomResourceDefinition"])
            pending = validation.deferred
            for _ in range(16):  # a new CRD's kind can take a moment to be served after Established
                later = await self._validate(client, pending, defer=True, context=first)
                validation.dry_runs.update(later.dry_runs)
                pending = later.deferred
                if not pending:
                    break
                await asyncio.sleep(0.5)
            if pending:
                await self._validate(client, pending, defer=False)  # raises, naming each object
            self._kinds = await self._discover()
        first_refs = {d.ref for d in first}
        rest = [d for d in desired if d.ref not in first_refs]
        return done + await self._apply_all(client, rest, validation, live, report)

    async def _apply_all(
        self,
        client: AsyncClient,
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
                and applied_by_shipline(before, self.environment)
                and comparable(before) == comparable(after)
                and _fingerprint(before) == _fingerprint(after)
            ):
                outcome = Outcome.UNCHANGED  # the dry-run says applying changes nothing: spare the request
            else:
                try:
                    await client.apply(_resource(item.kind)(item.body), field_manager=FIELD_MANAGER, force=True)
                except ApiError as exc:
                    raise self._refused("apply", item.ref, exc) from exc
                outcome = Outcome.CREATED if before is None else Outcome.CONFIGURED
            applied = Applied(item.ref, outcome)
            report(applied)
            return applied

        results = await self._gather(items, one)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            applied = [r for r in results if isinstance(r, Applied)]
            if isinstance(failures[0], httpx2.TransportError):
                raise self._unreachable(failures[0]) from failures[0]
            raise ClusterError(
                f"{len(failures)} of {len(items)} objects not applied ({len(applied)} were): "
                + "; ".join(str(f) for f in failures[:5])
            ) from failures[0]
        return [r for r in results if isinstance(r, Applied)]

    async def _live(self, client: AsyncClient, desired: Sequence[Desired]) -> dict[ObjectRef, dict[str, Any]]:
        """The live counterparts of desired (absent: not there).

        A namespace environment lists each kind in its namespace (one request a
        kind); a cluster-wide one lists what carries its labels and asks for the rest
        one by one, rather than listing every namespace of the cluster.
        """
        live: dict[ObjectRef, dict[str, Any]] = {}
        kinds = {d.kind for d in desired}
        wide = self.target.cluster_wide

        async def listing(kind: Kind) -> None:
            resource = _resource(kind)
            if not kind.namespaced:
                found = client.list(resource, labels=self._labels())
            elif wide:
                found = client.list(resource, namespace="*", labels=self._labels())
            else:
                found = client.list(resource, namespace=self.target.namespace)
            try:
                async for obj in found:
                    body = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                    live[ref_of(body)] = body
            except httpx2.HTTPStatusError as exc:
                if _code(exc) == 404:
                    return  # a kind that a CRD of these manifests is about to define: nothing live yet
                if not isinstance(exc, ApiError):
                    raise

                where = "" if wide or not kind.namespaced else self.target.namespace or ""
                raise self._refused("list", ObjectRef(kind.group, kind.kind, where, "*"), exc) from exc

        for result in await self._gather(kinds, listing):
            if isinstance(result, BaseException):
                raise result
        missing = [d for d in desired if d.ref not in live and (wide or not d.kind.namespaced)]
        for item, obj in zip(missing, await self._gather(missing, lambda d: self._get(client, d.kind, d.ref)), strict=False):
            if isinstance(obj, BaseException):
                raise obj
            if obj is not None:
                live[item.ref] = obj
        return {ref: obj for ref, obj in live.items()}

    async def _await_established(self, client: AsyncClient, crds: Sequence[Desired], timeout: float = 60.0) -> None:
        """A new CRD's kind is served only once the CRD is Established."""
        deadline = time.monotonic() + timeout
        for crd in crds:
            resource = _resource(crd.kind)
            while True:
                live = dict(await client.get(resource, crd.ref.name))
                conditions = (live.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"{crd.ref} not Established after {timeout:.0f}s: check the API server's log")
                await asyncio.sleep(0.2)

    # ------------------------------------------------ diff and prune

    async def _diff(self, client: AsyncClient, desired: Sequence[Desired]) -> list[Change]:
        await self._ensure_namespace(client)
        live = await self._live(client, desired)
        unsettled = self._unsettled(desired, live)
        validation = await self._validate(client, unsettled, defer=True)
        for obj in await self._tracked(client):
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
            if ref not in wanted and applied_by_shipline(obj, self.environment):
                changes.append(Change(ref, "prune", obj, None))
        return changes

    async def _get(self, client: AsyncClient, kind: Kind, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return dict(await client.get(_resource(kind), ref.name, namespace=ref.namespace or None))
        except httpx2.HTTPStatusError as exc:
            if _code(exc) == 404:
                return None
            if not isinstance(exc, ApiError):
                raise
            raise self._refused("read", ref, exc) from exc

    async def _tracked(self, client: AsyncClient) -> list[dict[str, Any]]:
        kinds = [
            k
            for k in self._preferred()
            if {"list", "delete", "patch"} <= k.verbs
            and (k.group, k.kind) not in _NOT_TRACKED
            and (k.namespaced or self.target.cluster_wide)
        ]
        namespace = "*" if self.target.cluster_wide else self.target.namespace

        async def listing(kind: Kind) -> list[dict[str, Any]]:
            resource = _resource(kind)
            try:
                if kind.namespaced:
                    found = client.list(resource, namespace=namespace, labels=self._labels())
                else:
                    found = client.list(resource, labels=self._labels())
                return [{**dict(o), "apiVersion": kind.api_version, "kind": kind.kind} async for o in found]
            except httpx2.HTTPStatusError as exc:
                if _code(exc) in (403, 404, 405):
                    return []  # kinds these credentials may not list hold nothing they applied
                if not isinstance(exc, ApiError):
                    raise
                raise self._refused("list", ObjectRef(kind.group, kind.kind, namespace or "", "*"), exc) from exc

        results = await self._gather(kinds, listing)
        objects: list[dict[str, Any]] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            objects.extend(o for o in result if applied_by_shipline(o, self.environment))
        return objects

    async def _prune(
        self, client: AsyncClient, desired: Sequence[Desired], report: Callable[[Applied], None], dry_run: bool
    ) -> list[Applied]:
        wanted = {d.ref for d in desired}
        stale = sorted(((ref_of(o), o) for o in await self._tracked(client) if ref_of(o) not in wanted), key=lambda e: e[0])
        kinds = {(k.group, k.kind): k for k in self._preferred()}

        async def one(entry: tuple[ObjectRef, dict[str, Any]]) -> Applied:
            ref, _ = entry
            if (ref.group, ref.kind) in NEVER_PRUNED:
                applied = Applied(ref, Outcome.KEPT)
            else:
                if not dry_run:
                    try:
                        await client.delete(
                            _resource(kinds[(ref.group, ref.kind)]),
                            ref.name,
                            namespace=ref.namespace or None,
                            cascade=CascadeType.BACKGROUND,
                        )
                    except ApiError as exc:
                        if exc.status.code != 404:
                            raise self._refused("delete", ref, exc) from exc
                applied = Applied(ref, Outcome.PRUNED)
            report(applied)
            return applied

        results = await self._gather(stale, one)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Applied)]

    # ------------------------------------------------ verify

    async def _verify(
        self, client: AsyncClient, desired: Sequence[Desired], timeout: float, report: Callable[[ResourceHealth], None]
    ) -> Verification:
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
                all(a.health is Health.HEALTHY for a in state.values())
                or any(a.health is Health.DEGRADED for a in state.values())
            )

        # One list per kind gives the starting state and the resourceVersion to watch from.
        kinds = {(d.kind.group, d.kind.kind): d.kind for d in desired}
        namespace = "*" if self.target.cluster_wide else self.target.namespace
        versions: dict[tuple[str, str], str] = {}

        async def listing(kind: Kind) -> None:
            resource = _resource(kind)
            found = (
                client.list(resource, namespace=namespace, labels=self._labels())
                if kind.namespaced
                else client.list(resource, labels=self._labels())
            )
            seen = set()
            try:
                async for obj in found:
                    live = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                    seen.add(ref_of(live))
                    observe(ref_of(live), live)
            except httpx2.HTTPStatusError as exc:
                if not isinstance(exc, ApiError):
                    raise ClusterError(f"list {kind.kind} objects: HTTP {_code(exc)} from {self.server}") from exc

                where = "" if namespace == "*" or not kind.namespaced else namespace or ""
                raise self._refused("list", ObjectRef(kind.group, kind.kind, where, "*"), exc) from exc
            try:
                versions[(kind.group, kind.kind)] = found.resourceVersion
            except Exception:
                pass
            for ref, item in by_ref.items():
                if (item.kind.group, item.kind.kind) == (kind.group, kind.kind) and ref not in seen:
                    observe(ref, None)

        for result in await self._gather(kinds.values(), listing):
            if isinstance(result, BaseException):
                raise result

        async def watching(kind: Kind) -> None:
            resource = _resource(kind)
            args: dict[str, Any] = {
                "labels": selector(self.environment),
                "resource_version": versions.get((kind.group, kind.kind)),
            }
            if kind.namespaced:
                args["namespace"] = namespace
            async for event, obj in client.watch(resource, on_error=_watch_errors, **args):
                live = {**dict(obj), "apiVersion": kind.api_version, "kind": kind.kind}
                observe(ref_of(live), None if event == "DELETED" else live)

        # Watch the kinds that still have something to wait for: workloads rolling out, objects not there yet.
        pending = [
            k
            for k in kinds.values()
            if any(
                (d.kind.group, d.kind.kind) == (k.group, k.kind) and state[d.ref].health is not Health.HEALTHY for d in desired
            )
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
                            raise self._refused("watch", ObjectRef("", "objects", namespace or "", "*"), exc) from exc
                        if isinstance(exc, httpx2.HTTPStatusError):
                            raise ClusterError(
                                f"watch of environment {self.environment}'s workloads refused: HTTP "
                                f"{exc.response.status_code}: check that {self.origin} may watch them"
                            ) from exc
                        raise exc  # type: ignore[misc]
        finally:
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
        if timed_out or any(a.health is Health.DEGRADED for a in state.values()):
            await self._explain(client, by_ref, state, timeout if timed_out else None, report)
        resources = [ResourceHealth(ref, state[ref]) for ref in sorted(state)]
        return Verification(resources, timed_out, time.monotonic() - started)

    async def _explain(
        self,
        client: AsyncClient,
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
                    found = client.list(_resource(pods), namespace=ref.namespace, labels=dict(match))
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

    # ------------------------------------------------ errors

    def _refused(self, action: str, ref: ObjectRef, exc: ApiError) -> ClusterError:
        code = exc.status.code
        text = _status_text(exc)
        where = f"namespace {ref.namespace}" if ref.namespace else "the cluster"
        if code == 403:
            hint = (
                f"the credentials of environment {self.environment} ({self.origin}) may not {action} "
                f"{ref.kind} objects in {where}: check the Role bound to them "
                f"(`shipline env credentials {self.environment}` makes one)"
            )
        elif code == 401:
            hint = f"the API server did not accept the credentials in {self.origin}: expired or revoked token?"
        elif code == 409:
            hint = "another writer changed it at the same moment: run again"
        elif code == 404:
            hint = f"check that {where} exists"
        else:
            hint = f"see the API server's log at {self.server}"
        return ClusterError(f"{action} {ref}: {code} {exc.status.reason or ''}: {text}; {hint}".replace("  ", " "))


# ---------------------------------------------------------------- helpers


def load_kubeconfig(path: Path | None) -> SingleConfig:
    """The current context of a kubeconfig file (default $KUBECONFIG, then ~/.kube/config), its
    certificates and key in memory (`keys_in_memory`)."""
    where = str(path) if path else os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    try:
        config = KubeConfig.from_file(Path(where).expanduser()).get()
    except FileNotFoundError as exc:
        raise UsageError(f"kubeconfig {where} does not exist: set KUBECONFIG or pass --kubeconfig") from exc
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"kubeconfig {where} is not usable: {exc}") from exc
    except Exception as exc:  # PyYAML's errors, read errors
        raise UsageError(f"kubeconfig {where} cannot be read: {exc}") from exc
    if config is None:
        raise UsageError(f"kubeconfig {where} has no current context: set current-context")
    return keys_in_memory(config)


_CLASSES: dict[Kind, Any] = {}


def _resource(kind: Kind) -> Any:
    """A lightkube generic resource class for kind, kept out of lightkube's global registry."""
    cls = _CLASSES.get(kind)
    if cls is None:
        base = GenericNamespacedResource if kind.namespaced else GenericGlobalResource
        info = create_api_info(kind.group, kind.version, kind.kind, kind.plural)
        cls = type(kind.kind, (base,), {"_api_info": info})
        _CLASSES[kind] = cls
    return cls


def _code(exc: httpx2.HTTPStatusError) -> int:
    """The HTTP status of a failed request, a Kubernetes Status or not (an unknown path answers plain text)."""
    return int(exc.status.code) if isinstance(exc, ApiError) and exc.status.code else int(exc.response.status_code)


def _fingerprint(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(FINGERPRINT)


def _watch_errors(exc: Exception, count: int) -> OnErrorResult:
    """Watches outlive a restarted API server or an expired resourceVersion (410 Gone): retry a few times."""
    if count <= 5 and ((isinstance(exc, ApiError) and exc.status.code == 410) or isinstance(exc, httpx2.TransportError)):
        return OnErrorResult(OnErrorAction.RETRY, sleep=0.5 * count)
    return OnErrorResult(OnErrorAction.RAISE)


def _crd_kinds(body: Mapping[str, Any]) -> list[Kind]:
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


def _status_text(exc: ApiError) -> str:
    status = exc.status
    causes = [
        f"{c.field}: {c.message}" if c.field else str(c.message)
        for c in ((status.details.causes or []) if status.details else [])
    ]
    message = str(status.message or exc)
    if causes and not all(c in message for c in causes):
        message += " (" + "; ".join(causes) + ")"
    return message


def _seconds(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"
