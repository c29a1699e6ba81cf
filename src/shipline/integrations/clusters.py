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

This module holds the door itself: connecting, loading manifests into the
objects to send, and one `Session` per call handed to the modules that do the
work: `applying` (validate, apply, prune, diff), `liveobjects` (what is live,
drift) and `rollouts` (verify).  The types it takes and answers are in
`clusterobjects`.

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from shipline.domain.objects import FIELD_MANAGER, ObjectRef, check_environment_name, ref_of, with_tracking
from shipline.exceptions import ClusterError, ManifestError, UsageError
from shipline.integrations import applying, liveobjects, rollouts
from shipline.integrations.clusterobjects import (
    Applied,
    Change,
    Desired,
    Drift,
    Kind,
    ResourceHealth,
    Target,
    Validation,
    Verification,
    crd_kinds,
)
from shipline.integrations.clustersessions import Session, status_code, status_text, unreachable
from shipline.integrations.manifests import Manifest, read_manifests
from shipline.kubeconfigs import keys_in_memory

T = TypeVar("T")


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
        return self._run(lambda session: self._resolve(session, manifests))

    def label_namespace(self, labels: Mapping[str, str]) -> bool:
        """Create the target namespace with these labels, or add them to the one there; True when created."""
        return self._run(lambda session: applying.label_namespace(session, labels))

    def delete_namespace(self) -> bool:
        """Delete the target namespace and everything in it; False when it was not there."""
        return self._run(applying.delete_namespace)

    def validate(self, desired: Sequence[Desired]) -> Validation:
        """Dry-run every object that applying would send; raise listing every rejection.

        Objects that are settled (live exactly as shipline applied this manifest) are
        not sent again by `apply`, so they need no dry-run either: a one-service change
        to a 200-service environment dry-runs that service, not 400 objects.
        """
        return self._run(lambda session: applying.validate(session, desired))

    def diff(self, desired: Sequence[Desired]) -> list[Change]:
        """What applying and pruning would change: the live objects beside the dry-run results."""
        return self._run(lambda session: applying.diff(session, desired))

    def apply(self, desired: Sequence[Desired], report: Callable[[Applied], None] = lambda a: None) -> list[Applied]:
        """Validate everything, then apply everything (server-side apply, one field manager)."""
        return self._run(lambda session: applying.apply(session, desired, report))

    def tracked(self) -> list[dict[str, Any]]:
        """The live objects shipline applied for this environment (the candidates for prune)."""
        return self._run(liveobjects.tracked)

    def prune(
        self, desired: Sequence[Desired], report: Callable[[Applied], None] = lambda a: None, *, dry_run: bool = False
    ) -> list[Applied]:
        """Delete what shipline applied for this environment before and `desired` no longer holds."""
        return self._run(lambda session: applying.prune(session, desired, report, dry_run=dry_run))

    def verify(
        self, desired: Sequence[Desired], timeout: float, report: Callable[[ResourceHealth], None] = lambda r: None
    ) -> Verification:
        """Wait (watching, not polling) until every workload rolled out, one fails, or timeout seconds pass."""
        return self._run(lambda session: rollouts.verify(session, desired, timeout, report))

    def sync(
        self,
        desired: Sequence[Desired],
        timeout: float,
        applied: Callable[[Applied], None] = lambda a: None,
        health: Callable[[ResourceHealth], None] = lambda r: None,
    ) -> tuple[list[Applied], Verification]:
        """apply, prune and verify in one go (one connection): a sync, or a rollback to an earlier rendered state."""

        async def go(session: Session) -> tuple[list[Applied], Verification]:
            changes = await applying.apply(session, desired, applied)
            changes += await applying.prune(session, desired, applied, dry_run=False)
            return changes, await rollouts.verify(session, desired, timeout, health)

        return self._run(go)

    def drifted(self, desired: Sequence[Desired]) -> list[Drift]:
        """The objects whose live state left what shipline applied of desired (a changed value is confirmed
        by a dry-run: one the API server only normalised is not drift)."""
        return self._run(lambda session: liveobjects.drifted(session, desired))

    def wait_for_drift(self, desired: Sequence[Desired], timeout: float) -> list[Drift]:
        """Watch desired's objects until one drifts (returned at once) or timeout seconds pass ([]).

        One watch per kind, filtered by the environment's label: a reconciler's
        way to notice a hand edit without polling every object.  Status updates
        by controllers are not drift.  Objects already drifted are returned at once.
        """
        return self._run(lambda session: liveobjects.wait_for_drift(session, desired, timeout))

    # ------------------------------------------------ plumbing

    def _run(self, work: Callable[[Session], Awaitable[T]]) -> T:
        async def main() -> T:
            client = AsyncClient(
                self.config,
                namespace=self.target.namespace,
                field_manager=FIELD_MANAGER,
                timeout=httpx2.Timeout(30.0),
                trust_env=False,
            )
            session = Session(
                client,
                self.config,
                environment=self.environment,
                target=self.target,
                origin=self.origin,
                concurrency=self.concurrency,
                kinds=self._kinds,
            )
            try:
                if session.kinds is None:
                    await session.discover()
                return await work(session)
            finally:
                # Discovered now, or again by an apply that made new kinds: the next call starts from them.
                self._kinds = session.kinds
                await client.close()

        try:
            return asyncio.run(main())
        except httpx2.TransportError as exc:
            raise unreachable(self.server, self.origin, exc) from exc
        except ApiError as exc:  # a request no code path above expected to fail
            raise ClusterError(
                f"the API server at {self.server} refused a request: {status_code(exc)} {exc.status.reason}: {status_text(exc)}"
            ) from exc
        except httpx2.HTTPStatusError as exc:
            raise ClusterError(
                f"the API server at {self.server} answered HTTP {exc.response.status_code} to "
                f"{exc.request.method} {exc.request.url.path}"
            ) from exc

    # ------------------------------------------------ resolving

    async def _resolve(self, session: Session, manifests: Sequence[Manifest]) -> list[Desired]:
        kinds = dict(session.kinds or {})
        for manifest in manifests:  # kinds the manifests' own CRDs define
            for defined in crd_kinds(manifest.body):
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
