"""Credentials for one environment, made with an administrator's: the article's
"the cluster needs to be configured with the correct credentials for allowing
the state to be changed by the pipelines", and no person's credentials in them.

For a namespace environment: a ServiceAccount, a Role that may change only
the kinds an environment holds in that namespace, and a RoleBinding.  For a
cluster-wide environment: a ServiceAccount bound to `cluster-admin` (such an
environment creates namespaces, CRDs and cluster roles; its isolation is
having a cluster of its own).  The token comes from the TokenRequest API,
with a bounded lifetime: it is stored nowhere in the cluster (a token Secret
would be readable by anything that may read Secrets there, the environment's
own pipeline included), and a leaked one stops working by itself.  Running
the command again renews it; deleting the ServiceAccount revokes every token.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import SingleConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Namespace, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding, Role, RoleBinding
from ruamel.yaml import YAML

from shipline.domain.objects import CREDENTIALS_SECONDS, MANAGED_BY, check_environment_name
from shipline.exceptions import ClusterError, UsageError

WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]
READ = ["get", "list", "watch"]

ENVIRONMENT_RULES: list[tuple[str, list[str], list[str]]] = [
    ("", ["configmaps", "secrets", "services", "serviceaccounts", "persistentvolumeclaims", "pods", "endpoints"], WRITE),
    ("", ["events", "pods/log"], READ),
    ("apps", ["deployments", "statefulsets", "daemonsets"], WRITE),
    ("apps", ["replicasets", "controllerrevisions"], READ),
    ("batch", ["jobs", "cronjobs"], WRITE),
    ("autoscaling", ["horizontalpodautoscalers"], WRITE),
    ("policy", ["poddisruptionbudgets"], WRITE),
    ("networking.k8s.io", ["ingresses", "networkpolicies"], WRITE),
    ("discovery.k8s.io", ["endpointslices"], READ),
    ("rbac.authorization.k8s.io", ["roles", "rolebindings"], WRITE),
]
"""(API group, resources, verbs) an environment's pipeline may use in its namespace.
Not there: the namespace itself, ResourceQuotas and LimitRanges (the operator's
limits on the environment), and anything cluster-scoped."""


CREDENTIALS_MANAGER = "shipline-credentials"
"""Not the environments' field manager, nor their labels: an environment's prune never deletes its own credentials."""
CREDENTIALS_FOR = "shipline.dev/credentials-for"


@dataclass(frozen=True)
class Credentials:
    kubeconfig: str
    service_account: str
    namespace: str
    expires: datetime | None
    created: list[str]


def account_name(environment: str) -> str:
    return f"shipline-env-{environment}"


def issue_credentials(
    admin: SingleConfig,
    environment: str,
    *,
    namespace: str,
    cluster_wide: bool,
    seconds: int = CREDENTIALS_SECONDS,
    origin: str = "the admin kubeconfig",
) -> Credentials:
    """Create (or update) the environment's ServiceAccount and its rights; a kubeconfig with a fresh token."""
    check_environment_name(environment)
    try:
        return asyncio.run(_issue(admin, environment, namespace, cluster_wide, seconds))
    except ApiError as exc:
        status = exc.status
        hint = (
            f"the credentials in {origin} may not do this: `env credentials` needs cluster-admin rights"
            if status.code == 403
            else "see the API server's log"
        )
        raise ClusterError(
            f"making credentials for environment {environment}: {status.code} {status.reason}: {status.message}; {hint}"
        ) from exc
    except httpx2.TransportError as exc:
        raise ClusterError(f"cannot reach the Kubernetes API server at {admin.cluster.server} ({exc}): check {origin}") from exc


async def _issue(admin: SingleConfig, environment: str, namespace: str, cluster_wide: bool, seconds: int) -> Credentials:
    name = account_name(environment)
    labels = {MANAGED_BY: "shipline", CREDENTIALS_FOR: environment}
    created: list[str] = []
    async with AsyncClient(admin, field_manager=CREDENTIALS_MANAGER, trust_env=False) as client:

        async def apply(obj: Any, what: str) -> None:
            await client.apply(obj, field_manager=CREDENTIALS_MANAGER, force=True)
            created.append(what)

        await apply(Namespace(metadata=ObjectMeta(name=namespace)), f"Namespace/{namespace}")
        meta = ObjectMeta(name=name, namespace=namespace, labels=labels)
        await apply(ServiceAccount(metadata=meta), f"ServiceAccount/{name} in namespace {namespace}")
        subject = Subject(kind="ServiceAccount", name=name, namespace=namespace)
        if cluster_wide:
            await apply(
                ClusterRoleBinding(
                    metadata=ObjectMeta(name=name, labels=labels),
                    subjects=[subject],
                    roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
                ),
                f"ClusterRoleBinding/{name} (cluster-admin)",
            )
        else:
            rules = [PolicyRule(apiGroups=[g], resources=r, verbs=v) for g, r, v in ENVIRONMENT_RULES]
            await apply(Role(metadata=meta, rules=rules), f"Role/{name} in namespace {namespace}")
            await apply(
                RoleBinding(
                    metadata=meta,
                    subjects=[subject],
                    roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=name),
                ),
                f"RoleBinding/{name} in namespace {namespace}",
            )
        request = ServiceAccount.Token(
            metadata=ObjectMeta(name=name, namespace=namespace), spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds)
        )
        token = await client.create(request, name, namespace=namespace)
    status = token.status
    if status is None or not status.token:
        raise ClusterError(f"the API server issued no token for ServiceAccount {name} in namespace {namespace}")
    text = _kubeconfig(admin, environment, name, namespace, status.token)
    return Credentials(text, name, namespace, status.expirationTimestamp, created)


def _kubeconfig(admin: SingleConfig, environment: str, user: str, namespace: str, token: str) -> str:
    cluster: dict[str, Any] = {"server": admin.cluster.server}
    if admin.cluster.certificate_auth_data:
        cluster["certificate-authority-data"] = admin.cluster.certificate_auth_data
    elif admin.cluster.certificate_auth:
        ca = Path(str(admin.abs_file(admin.cluster.certificate_auth))).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    if admin.cluster.insecure:
        cluster["insecure-skip-tls-verify"] = True
    name = f"shipline-{environment}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user, "namespace": namespace}}],
        "current-context": name,
    }
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(document, out)
    return out.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write text to path readable by its owner only (mode 0600), replacing any file there."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory: name a file for the kubeconfig")
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temp, path)
