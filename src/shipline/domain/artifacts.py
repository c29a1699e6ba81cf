"""Names of the things a service pipeline releases: registries, references, labels, PURLs.

The image, chart and publish tasks and the CDEvents notifier all speak of the
same registry paths (`REGISTRY/NAME:VERSION`, `oci://REGISTRY/charts/CHART`,
`REGISTRY/NAME-artifacts:VERSION`); they are built here, once, from plain
values, so each rule is checked by a unit test without a registry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from packageurl import PackageURL

from shipline.exceptions import UsageError

# distribution's reference grammar: lower-case path components, tags of word characters.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?"
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class Registry:
    """Where artifacts go: `HOST[:PORT][/PREFIX]`, spoken to over plain HTTP on loopback only."""

    host: str
    """`HOST[:PORT]`, as registries and credential files name it."""
    prefix: str = ""
    """Path under which every repository goes (`team/x` -> `HOST/team/x/NAME`); may be empty."""

    @property
    def plain_http(self) -> bool:
        """True for 127.0.0.0/8, ::1 and localhost, as Docker does; TLS everywhere else."""
        return is_loopback(self.host)

    @property
    def scheme(self) -> str:
        return "http" if self.plain_http else "https"

    def repository(self, name: str) -> str:
        """`HOST[/PREFIX]/NAME`: an image or artifact repository."""
        check_name(name)
        return "/".join(p for p in (self.host, self.prefix, name) if p)

    def reference(self, name: str, tag: str) -> str:
        """`HOST[/PREFIX]/NAME:TAG`."""
        check_tag(tag)
        return f"{self.repository(name)}:{tag}"

    def charts(self) -> str:
        """`oci://HOST[/PREFIX]/charts`: what `helm push` takes."""
        return "oci://" + "/".join(p for p in (self.host, self.prefix, "charts") if p)

    def __str__(self) -> str:
        return "/".join(p for p in (self.host, self.prefix) if p)


def is_loopback(host: str) -> bool:
    """`host` is `HOST[:PORT]`; bracketed IPv6 (`[::1]:5000`) is understood."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_registry(text: str) -> Registry:
    """`HOST[:PORT][/PREFIX]` -> Registry; a scheme or a bad part is a UsageError naming it."""
    value = text.strip()
    if not value:
        raise UsageError(
            "no registry: give the task's `registry` input (HOST:PORT[/PREFIX]) or set the SHIPLINE_REGISTRY setting"
        )
    if "://" in value:
        raise UsageError(f"registry '{text}': write HOST:PORT[/PREFIX] without a scheme (loopback means plain HTTP)")
    host, _, prefix = value.partition("/")
    if not _HOST.fullmatch(host):
        raise UsageError(f"registry '{text}': '{host}' is not a HOST or HOST:PORT")
    prefix = prefix.strip("/")
    for part in prefix.split("/") if prefix else []:
        if not _COMPONENT.fullmatch(part):
            raise UsageError(f"registry '{text}': path part '{part}' must be lower-case letters, digits, '.', '_' or '-'")
    return Registry(host, prefix)


def check_name(name: str) -> str:
    """A repository name (`hello`, `team/hello`): what distribution accepts, or a UsageError."""
    if not name or len(name) > 255 or not all(_COMPONENT.fullmatch(p) for p in name.split("/")):
        raise UsageError(
            f"'{name}' is not a repository name: use lower-case letters, digits and '.', '_', '-' "
            "between them (the pipeline's `name` is always one)"
        )
    return name


def check_tag(tag: str) -> str:
    """A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (a SemVer with `+build` is not one)."""
    if not _TAG.fullmatch(tag):
        raise UsageError(
            f"'{tag}' is not a valid image tag: letters, digits, '_', '.' and '-' only, at most 128 "
            "(a SemVer build suffix '+...' cannot be a tag)"
        )
    return tag


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise UsageError(f"'{digest}' is not a sha256 digest (sha256:<64 hex digits>)")
    return digest


def split_image(reference: str) -> tuple[str, str]:
    """`HOST/NAME:TAG` -> (`HOST/NAME`, `TAG`); a digest reference keeps its `@sha256:...` as the tag part."""
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, "@" + digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, ""


def oci_labels(*, version: str, source: str = "", revision: str = "", created: datetime | None = None) -> dict[str, str]:
    """The OCI annotations every artifact carries; empty values are left out, `created` is UTC RFC 3339."""
    when = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    labels = {
        LABEL_SOURCE: source,
        LABEL_REVISION: revision,
        LABEL_VERSION: version,
        LABEL_CREATED: when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {k: v for k, v in labels.items() if v}


def oci_purl(repository: str, digest: str) -> str:
    """`pkg:oci/NAME@sha256:...?repository_url=HOST/PATH/NAME`: the package URL of a pushed artifact."""
    check_digest(digest)
    name = repository.rsplit("/", 1)[-1].lower()
    return PackageURL(type="oci", name=name, version=digest, qualifiers={"repository_url": repository}).to_string()


# What a registry's refusal usually means: by the HTTP status a tool reports, else by its words.
_BY_STATUS: dict[int, str] = {
    401: "the registry wants credentials: give the task an `auth-file` (a secret file) that holds them for this host",
    403: "the credentials may not push here: check the account's push rights on this repository",
    404: "the registry does not know this repository path: check the `registry` prefix and the name",
    405: "the registry does not accept pushes: check that it is not read-only (maintenance mode) or a pull-through cache",
    413: "the registry refuses an object this large: check its size limits",
    500: "the registry failed on its side: check its logs and its free disk space",
}
_BY_WORDS: tuple[tuple[re.Pattern[str], int | None, str], ...] = (
    (
        re.compile(r"connection refused|no such host|Failed to establish a new connection|i/o timeout|timed out", re.I),
        None,
        "the registry is unreachable: check that it runs and that `registry` names its host and port",
    ),
    (
        re.compile(r"x509|certificate|tls: |SSL", re.I),
        None,
        "TLS failed: a registry outside loopback is spoken to over HTTPS; check its certificate (SSL_CERT_FILE)",
    ),
    (re.compile(r"unauthori[sz]ed|authentication required|credential not found", re.I), 401, _BY_STATUS[401]),
    (re.compile(r"forbidden|\bdenied\b", re.I), 403, _BY_STATUS[403]),
    (re.compile(r"method not allowed|\bunsupported\b", re.I), 405, _BY_STATUS[405]),
    (re.compile(r"name unknown|not found", re.I), 404, _BY_STATUS[404]),
)
_STATUS = re.compile(r"(?:status ?code|status|HTTP)\s*:?\s*([1-5][0-9][0-9])\b", re.I)


def refusal_hint(tool_output: str) -> tuple[int | None, str]:
    """(HTTP status or None, what to check) for a push that a tool or client reported as failed."""
    found = _STATUS.search(tool_output)
    if found:
        status = int(found.group(1))
        hint = _BY_STATUS.get(status) or (_BY_STATUS[500] if status >= 500 else None)
        if hint:
            return status, hint
    for pattern, implied, hint in _BY_WORDS:
        if pattern.search(tool_output):
            return (int(found.group(1)) if found else implied), hint
    return (int(found.group(1)) if found else None), (
        "check the registry's address, that it runs and accepts pushes, and the credentials"
    )


_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.I | re.M)


def loopback_registries_in(dockerfile: str) -> list[str]:
    """Registries on loopback that a Dockerfile's FROM lines pull from (`127.0.0.1:5000/base:1`)."""
    hosts: list[str] = []
    for image in _FROM.findall(dockerfile):
        first, slash, _ = image.partition("/")
        if slash and (":" in first or "." in first or first == "localhost") and is_loopback(first) and first not in hosts:
            hosts.append(first)
    return hosts


def insecure_registries_conf(system: str, hosts: list[str]) -> str:
    """containers-registries.conf(5) that adds plain-HTTP `hosts` to the system's file (v2 format).

    buildah, unlike Docker, speaks HTTPS to loopback registries too; this is how a
    build pulls a base image from the same loopback registry it pushes to.
    """
    entries = "".join(f'\n[[registry]]\nlocation = "{host}"\ninsecure = true\n' for host in hosts)
    if re.search(r"^\s*\[registries\.", system, re.M):  # the old v1 format cannot be mixed with v2 tables
        return entries.lstrip("\n")
    return (system.rstrip("\n") + "\n" if system.strip() else "") + entries
