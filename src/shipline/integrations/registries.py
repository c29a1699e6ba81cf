"""OCI registries: is one there and will it take our credentials; pushing plain files as an OCI artifact.

Every push (buildah's, helm's, oras's) starts with `probe`, so a registry that is
down or wants credentials fails the task before minutes of building, with one
message whatever the tool.  Credentials come from an auth file in the format
Docker, buildah, helm and oras all read (`{"auths": {"HOST:PORT": {"auth":
base64("user:password")}}}`); a step gets it as a secret file, never in a URL.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shipline.domain.artifacts import Registry, refusal_hint
from shipline.exceptions import RegistryError, UsageError

PROBE_TIMEOUT = 10.0
ARTIFACT_CONFIG_TYPE = "application/vnd.shipline.artifacts.config.v1+json"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class AuthFile:
    """A registry auth file, read once; its path is what the tools are given."""

    path: Path
    auths: dict[str, Any] = field(repr=False)

    def credentials(self, host: str) -> Credentials | None:
        for key in (host, f"https://{host}", f"http://{host}"):
            entry = self.auths.get(key)
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("auth"), str) and entry["auth"]:
                try:
                    user, _, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError) as exc:
                    raise UsageError(f"auth file {self.path}: the 'auth' of {key} is not base64 of user:password") from exc
                return Credentials(user, password)
            if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                return Credentials(entry["username"], entry["password"])
        return None


def load_auth_file(path: str | Path | None) -> AuthFile | None:
    """None for no path; a UsageError naming the path (never the content) for a file that is not an auth file."""
    if path is None or str(path) == "":
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"auth file {path} does not exist: give a ${{{{ secret_files.NAME }}}} path") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f'auth file {path} is not JSON: it must be {{"auths": {{"HOST:PORT": {{"auth": "<base64 user:password>"}}}}}}'
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
        raise UsageError(f"auth file {path}: expected an object with an 'auths' mapping of HOST:PORT to credentials")
    return AuthFile(path, dict(data.get("auths", {})))


@dataclass(frozen=True)
class Probe:
    """How the registry answered `GET /v2/`."""

    challenge: str
    """'' (open), 'basic' or 'bearer': which auth scheme clients must speak."""


def probe(registry: Registry, auth: AuthFile | None) -> Probe:
    """Check that the registry answers and, for Basic auth, that it takes the credentials; RegistryError if not."""
    creds = auth.credentials(registry.host) if auth else None
    try:
        status, challenge = _get_v2(registry, None)
        scheme = challenge.split(" ", 1)[0].lower()
        if status == 401 and creds is not None and scheme == "basic":
            status, _ = _get_v2(registry, creds)
            if status == 401:
                raise RegistryError(
                    f"registry {registry.host} refused the credentials for user '{creds.username}' from "
                    f"{auth.path if auth else ''} (HTTP 401): check the user and password in that secret"
                )
    except (OSError, http.client.HTTPException, httpx.TransportError) as exc:
        reason = str(exc) or exc.__class__.__name__
        what = (
            f"TLS to {registry.host} failed ({reason}): a registry outside loopback is spoken to over HTTPS; "
            "check its certificate (SSL_CERT_FILE) and the `registry` address"
            if "SSL" in reason or "certificate" in reason.lower()
            else f"registry {registry.host} is unreachable over {registry.scheme.upper()} ({reason}): "
            "check that it runs and that `registry` names its host and port"
        )
        raise RegistryError(what) from exc
    if status == 401:
        if creds is None:
            raise RegistryError(
                f"registry {registry.host} wants credentials (HTTP 401) and the task has none for this host: "
                'give it an `auth-file` input (a ${{ secret_files.NAME }} holding {"auths": {"HOST:PORT": ...}})'
            )
        return Probe(scheme)
    if status >= 400:
        raise RegistryError(
            f"registry {registry.host} answered GET /v2/ with HTTP {status}: "
            "check that `registry` names an OCI registry (HOST:PORT[/PREFIX])"
        )
    return Probe(scheme)


def _get_v2(registry: Registry, creds: Credentials | None) -> tuple[int, str]:
    """`GET /v2/` (with Basic credentials if given): the status and the WWW-Authenticate header.

    Plain HTTP is for registries on loopback only: no proxy, no TLS, nothing for httpx to
    add, so the standard library's client asks.  A probe runs in every `image` and `chart`
    step, in a forked copy of the step server, where each page the request's code touches
    is copied: httpx's client and request took 7.5-10 ms of CPU there, http.client's 1.5 ms.
    Redirects are not followed, so a plain-HTTP probe never reaches an HTTPS URL.
    """
    if registry.plain_http:
        headers = {}
        if creds is not None:
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPConnection(registry.host, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", "/v2/", headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("www-authenticate", "")
        finally:
            connection.close()
    # TLS: the CA bundle, SSL_CERT_FILE and the proxy settings (HTTPS_PROXY, NO_PROXY) as for every other client.
    with httpx.Client(timeout=PROBE_TIMEOUT) as client:
        answer = client.get(f"https://{registry.host}/v2/", auth=(creds.username, creds.password) if creds else None)
        return answer.status_code, answer.headers.get("www-authenticate", "")


def refused(what: str, registry: Registry, detail: str) -> RegistryError:
    """The error for a push a registry did not take: names the push, the registry, the status and what to check."""
    status, hint = refusal_hint(detail)
    code = f"HTTP {status}: " if status else ""
    return RegistryError(f"{what} to {registry.host} failed: {code}{detail.strip()[-400:]}. {hint[0].upper()}{hint[1:]}")


def push_artifact(
    registry: Registry,
    repository: str,
    tag: str,
    files: list[Path],
    *,
    annotations: dict[str, str],
    auth: AuthFile | None,
    challenge: str,
) -> str:
    """Push files (each a layer titled with its base name) as `repository:tag`; return the manifest digest."""
    import oras.provider  # imported here: it pulls requests and jsonschema in, only publish needs them

    # oras logs a refusal's details at ERROR on its own; the RegistryError says it once.
    logging.getLogger("oras").setLevel(logging.CRITICAL)
    client = oras.provider.Registry(
        hostname=registry.host, insecure=registry.plain_http, auth_backend="basic" if challenge == "basic" else "token"
    )
    # oras-py reports some refusals only as a failure to parse the body: keep the last
    # answer that said no, so the error can name its status.
    refusals: list[str] = []

    def remember(response: Any, *args: Any, **kwargs: Any) -> None:
        if response.status_code >= 400 and response.status_code != 401:
            refusals.append(f"{response.request.method} {response.url} answered status {response.status_code} {response.reason}")

    client.session.hooks["response"].append(remember)
    client.session.trust_env = not registry.plain_http
    target = f"{repository}:{tag}"
    try:
        response = client.push(
            target=target,
            files=[str(f) for f in files],
            disable_path_validation=True,
            config_path=str(auth.path) if auth else None,
            manifest_config=f"-:{ARTIFACT_CONFIG_TYPE}",
            manifest_annotations=annotations,
            quiet=True,
        )
    except Exception as exc:  # oras raises ValueError, requests' errors and jsonschema's: all are a failed push
        detail = refusals[-1] if refusals else f"{exc.__class__.__name__}: {exc}"
        raise refused(f"push of {target}", registry, detail) from exc
    digest = str(response.headers.get("Docker-Content-Digest", ""))
    if not digest:
        raise RegistryError(f"push of {target} to {registry.host}: the registry answered without a manifest digest")
    return digest
