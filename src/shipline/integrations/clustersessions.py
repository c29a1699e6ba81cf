"""One call of a `Cluster` on the API server, and what all its requests share.

A `Session` is what every request of one call needs: the lightkube client,
the environment whose credentials make it (its labels, its target), the kinds
the API server serves, how many requests may be in flight, and the
conversion of a refusal into a `ClusterError` that says what to check.  The
modules that apply, read and verify objects take a session; `Cluster` makes
one per call.

Beside it: a lightkube resource class for any discovered kind (no generated
model needed, so CustomResourceDefinitions' kinds are like any other), the
texts of the API server's answers, and the retry policy of watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig
from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource, create_api_info
from lightkube.types import OnErrorAction, OnErrorResult

from shipline.domain.objects import ObjectRef, selector
from shipline.exceptions import ClusterError
from shipline.integrations.clusterobjects import Kind, Target

T = TypeVar("T")

_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


@dataclass
class Session:
    """One call's client, with what its requests and their errors must name."""

    client: AsyncClient
    config: SingleConfig
    environment: str
    target: Target
    origin: str
    """Where the credentials came from (a kubeconfig's path), named in errors."""
    concurrency: int
    kinds: dict[tuple[str, str], Kind] | None = None
    """Every resource type the API server serves, by (apiVersion, kind); None until discovered."""

    @property
    def server(self) -> str:
        return self.config.cluster.server

    def labels(self) -> dict[str, Any]:
        return dict(selector(self.environment))

    async def discover(self) -> None:
        """Find every resource type the API server serves: aggregated discovery, two requests."""
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
            raise self.unreachable(exc) from exc
        self.kinds = kinds

    def preferred(self) -> list[Kind]:
        """One Kind per (group, kind): the version the server lists first."""
        seen: dict[tuple[str, str], Kind] = {}
        for kind in (self.kinds or {}).values():
            seen.setdefault((kind.group, kind.kind), kind)
        return list(seen.values())

    async def gather(self, items: Iterable[T], work: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """work(item) for every item, `concurrency` at a time; exceptions are returned, not raised."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: T) -> Any:
            async with gate:
                return await work(item)

        return list(await asyncio.gather(*(one(i) for i in items), return_exceptions=True))

    def refused(self, action: str, ref: ObjectRef, exc: ApiError) -> ClusterError:
        code = exc.status.code
        text = status_text(exc)
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

    def unreachable(self, exc: Exception) -> ClusterError:
        return unreachable(self.server, self.origin, exc)


def unreachable(server: str, origin: str, exc: Exception) -> ClusterError:
    return ClusterError(
        f"cannot reach the Kubernetes API server at {server} ({type(exc).__name__}: {exc or 'no answer'}): "
        f"check that it is running and that {origin} names the right server"
    )


_CLASSES: dict[Kind, Any] = {}


def resource_class(kind: Kind) -> Any:
    """A lightkube generic resource class for kind, kept out of lightkube's global registry."""
    cls = _CLASSES.get(kind)
    if cls is None:
        base = GenericNamespacedResource if kind.namespaced else GenericGlobalResource
        info = create_api_info(kind.group, kind.version, kind.kind, kind.plural)
        cls = type(kind.kind, (base,), {"_api_info": info})
        _CLASSES[kind] = cls
    return cls


def status_code(exc: httpx2.HTTPStatusError) -> int:
    """The HTTP status of a failed request, a Kubernetes Status or not (an unknown path answers plain text)."""
    return int(exc.status.code) if isinstance(exc, ApiError) and exc.status.code else int(exc.response.status_code)


def status_text(exc: ApiError) -> str:
    status = exc.status
    causes = [
        f"{c.field}: {c.message}" if c.field else str(c.message)
        for c in ((status.details.causes or []) if status.details else [])
    ]
    message = str(status.message or exc)
    if causes and not all(c in message for c in causes):
        message += " (" + "; ".join(causes) + ")"
    return message


def watch_errors(exc: Exception, count: int) -> OnErrorResult:
    """Watches outlive a restarted API server or an expired resourceVersion (410 Gone): retry a few times."""
    if count <= 5 and ((isinstance(exc, ApiError) and exc.status.code == 410) or isinstance(exc, httpx2.TransportError)):
        return OnErrorResult(OnErrorAction.RETRY, sleep=0.5 * count)
    return OnErrorResult(OnErrorAction.RAISE)
