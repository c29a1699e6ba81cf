"""Every file the testbed's services read, rendered as text from plain values.

Pure: nothing here touches the disk or the network, so each file's content can be
checked by a unit test.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def registry_config(root: Path, port: int) -> str:
    """docker-registry (distribution v2) on loopback, plain HTTP, deletes allowed."""
    # JSON is YAML: no quoting surprises in paths.
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass(frozen=True)
class GiteaSecrets:
    secret_key: str
    internal_token: str
    jwt_secret: str
    lfs_jwt_secret: str


def gitea_app_ini(*, work: Path, static: Path, port: int, run_user: str, secrets: GiteaSecrets) -> str:
    """Gitea's app.ini: installed, SQLite, loopback only, webhooks to loopback allowed."""
    sections: dict[str, dict[str, str]] = {
        "": {
            "APP_NAME": "shipline testbed",
            "RUN_USER": run_user,
            "RUN_MODE": "prod",
            "WORK_PATH": str(work),
        },
        "server": {
            "PROTOCOL": "http",
            "HTTP_ADDR": "127.0.0.1",
            "HTTP_PORT": str(port),
            "DOMAIN": "127.0.0.1",
            "ROOT_URL": f"http://127.0.0.1:{port}/",
            "LOCAL_ROOT_URL": f"http://127.0.0.1:{port}/",
            "DISABLE_SSH": "true",
            "START_SSH_SERVER": "false",
            "OFFLINE_MODE": "true",
            "STATIC_ROOT_PATH": str(static),
            "APP_DATA_PATH": str(work / "data"),
            "LFS_START_SERVER": "false",
        },
        "database": {"DB_TYPE": "sqlite3", "PATH": str(work / "data" / "gitea.db"), "SQLITE_JOURNAL_MODE": "WAL"},
        "repository": {"ROOT": str(work / "repositories"), "DEFAULT_BRANCH": "main"},
        "security": {
            "INSTALL_LOCK": "true",
            "SECRET_KEY": secrets.secret_key,
            "INTERNAL_TOKEN": secrets.internal_token,
            # Tests create users often; argon2's default costs a lot of memory per hash.
            "PASSWORD_HASH_ALGO": "pbkdf2",
        },
        "oauth2": {"JWT_SECRET": secrets.jwt_secret},
        "server.lfs": {"JWT_SECRET": secrets.lfs_jwt_secret},
        "service": {"DISABLE_REGISTRATION": "true", "REQUIRE_SIGNIN_VIEW": "false"},
        # The receivers of shipline's webhooks run on this machine.
        "webhook": {"ALLOWED_HOST_LIST": "loopback", "SKIP_TLS_VERIFY": "true", "DELIVER_TIMEOUT": "10"},
        "migrations": {"ALLOW_LOCALNETWORKS": "true"},
        "actions": {"ENABLED": "false"},
        "mailer": {"ENABLED": "false"},
        "session": {"PROVIDER": "memory"},
        "cache": {"ADAPTER": "memory"},
        "indexer": {"ISSUE_INDEXER_TYPE": "db"},
        "cron.update_checker": {"ENABLED": "false"},
        "log": {"MODE": "console", "LEVEL": "Info", "ROOT_PATH": str(work / "log")},
    }
    lines: list[str] = []
    for section, values in sections.items():
        if section:
            lines += ["", f"[{section}]"]
        lines += [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> str:
    """A self-contained kubeconfig (certificates inlined) with one context."""
    credentials: dict[str, str] = {}
    if cert_pem is not None and key_pem is not None:
        credentials = {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "shipline-testbed", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "shipline-testbed", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "shipline-testbed", "context": context}],
        "current-context": "shipline-testbed",
    }
    return json.dumps(config, indent=2) + "\n"


def kwok_nodes(count: int) -> str:
    """Nodes that kwok pretends to run: generous capacity, no taints, so any pod schedules."""
    items = []
    for index in range(count):
        name = f"kwok-node-{index}"
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/role": "agent",
                        "node-role.kubernetes.io/agent": "",
                        "type": "kwok",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kubeProxyVersion": "fake",
                        "kubeletVersion": "fake",
                        "containerRuntimeVersion": "kwok",
                        "kernelVersion": "kwok",
                        "osImage": "kwok",
                        "machineID": name,
                        "systemUUID": name,
                        "bootID": name,
                    },
                },
            }
        )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2) + "\n"


ENV_VARIABLES = (
    "KUBECONFIG",
    "SHIPLINE_REGISTRY",
    "SHIPLINE_GITEA_URL",
    "SHIPLINE_GITEA_TOKEN",
    "SHIPLINE_TESTBED_HOME",
    "SHIPLINE_RUNNER_IMAGE",
)


def env_file(values: Mapping[str, str]) -> str:
    """`export NAME=value` lines, quoted for a POSIX shell (`eval "$(shipline testbed env)"`)."""
    return "".join(f"export {name}={shlex.quote(values[name])}\n" for name in ENV_VARIABLES if name in values)
