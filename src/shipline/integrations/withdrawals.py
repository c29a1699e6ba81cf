"""Taking back what a failed run pushed: delete a tag's manifest, only if it is still the one pushed.

The OCI distribution API deletes manifests by digest (`DELETE /v2/NAME/manifests/DIGEST`);
a registry may refuse (deletes disabled: 405), and that is reported, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from shipline.domain.artifacts import Registry
from shipline.integrations.registries import AuthFile

TIMEOUT = 15.0
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass(frozen=True)
class Withdrawal:
    reference: str
    done: bool
    note: str


def withdraw(registry: Registry, repository: str, tag: str, digest: str, auth: AuthFile | None) -> Withdrawal:
    """Delete repository:tag when it still points at digest (what this run pushed); never anything else.

    repository is the path under the host (`team/hello`, `charts/hello`).
    """
    reference = f"{registry.host}/{repository}:{tag}"
    creds = auth.credentials(registry.host) if auth else None
    basic = (creds.username, creds.password) if creds else None
    base = f"{registry.scheme}://{registry.host}/v2/{repository}/manifests"
    try:
        with httpx.Client(timeout=TIMEOUT, auth=basic, verify=not registry.plain_http) as client:  # no TLS: no CA bundle
            head = client.head(f"{base}/{tag}", headers={"Accept": ACCEPT})
            if head.status_code == 404:
                return Withdrawal(reference, False, "not there (nothing to withdraw)")
            current = head.headers.get("docker-content-digest", "")
            if head.status_code >= 400 or not current:
                return Withdrawal(reference, False, f"cannot read it (HTTP {head.status_code}): delete it by hand if needed")
            if current != digest:
                return Withdrawal(reference, False, f"now points at {current}, not at what this run pushed: left alone")
            gone = client.delete(f"{base}/{digest}")
    except httpx.TransportError as exc:
        return Withdrawal(reference, False, f"registry unreachable ({exc or exc.__class__.__name__}): delete it by hand")
    if gone.status_code in (200, 202, 404):
        return Withdrawal(reference, True, f"deleted ({digest})")
    return Withdrawal(
        reference,
        False,
        f"the registry refused the delete (HTTP {gone.status_code}; deletes may be disabled): delete {reference} by hand",
    )
