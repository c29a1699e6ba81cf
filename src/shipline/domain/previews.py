"""Preview environments: one namespace per pull request of a service, and the comment that tells about it.  Pure.

A repository that opts in (`shipline repos add ... --previews`) gets, for each
pull request whose run of the service archetype succeeds, the run's chart
deployed into namespace `preview-SERVICE-pr-N`; the pull request gets one
comment, edited in place, saying where and how it is.  This module names
things and writes the comment; the server's `previews` module does the I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

PREVIEW_LABEL = "shipline.dev/preview"
"""The label every preview namespace carries; its value is `preview_label(service, pr)`."""
KUBECONFIG_SECRET = "previews-kubeconfig"
"""The secret holding the kubeconfig previews deploy with (never the server's own credentials)."""
NAMESPACE_PREFIX = "preview-"
DNS_LABEL_MAX = 63
HELM_RELEASE_MAX = 53
_HASH = 6

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


REPOSITORY_REMOVED = "the repository was removed from shipline"
"""Why the previews of a removed repository go."""


class PreviewState(StrEnum):
    BUILDING = "building"
    """A run of the pull request is under way; nothing deployed from it yet."""
    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"
    REMOVED = "removed"


def _dns(text: str) -> str:
    """Lower case, letters, digits and '-', no '-' at either end ("x" when nothing is left)."""
    cleaned = _NOT_DNS.sub("-", text.lower()).strip("-")
    return re.sub("-{2,}", "-", cleaned) or "x"


def _shortened(name: str, room: int, original: str) -> str:
    """`name` when it fits in `room`, else its head and a short hash of `original` (still unique in practice)."""
    if len(name) <= room:
        return name
    digest = hashlib.sha256(original.encode()).hexdigest()[:_HASH]
    head = name[: room - _HASH - 1].rstrip("-")
    return f"{head}-{digest}"


def preview_label(service: str, pr_number: int) -> str:
    """`SERVICE-pr-N`: the value of the `shipline.dev/preview` label, at most 63 - len("preview-") characters."""
    if pr_number < 1:
        raise ValueError(f"pull request number {pr_number} is not a positive number")
    suffix = f"-pr-{pr_number}"
    room = DNS_LABEL_MAX - len(NAMESPACE_PREFIX) - len(suffix)
    return _shortened(_dns(service), room, service) + suffix


def preview_namespace(service: str, pr_number: int) -> str:
    """`preview-SERVICE-pr-N`, always a valid DNS label (at most 63; a long service name ends in a short hash)."""
    return NAMESPACE_PREFIX + preview_label(service, pr_number)


def preview_release(service: str) -> str:
    """The Helm release name for the service's chart in its preview (Helm allows at most 53 characters)."""
    return _shortened(_dns(service), HELM_RELEASE_MAX, service)


def comment_marker(service: str) -> str:
    """The hidden line that finds the preview's comment again among the pull request's comments."""
    return f"<!-- shipline-preview: {_dns(service)} -->"


@dataclass(frozen=True)
class PreviewView:
    """What the comment says: one preview, as the store holds it."""

    service: str
    pr_number: int
    namespace: str
    state: PreviewState
    reason: str = ""
    version: str = ""
    """The version deployed (or being deployed)."""
    image: str = ""
    run_link: str = ""
    """The run whose chart is (being) deployed."""
    failed_run_link: str = ""
    """The newest run of the pull request, when it failed (the preview keeps the last good one)."""
    building_link: str = ""
    """A run of the pull request under way."""
    deployed: bool = False
    """Whether a good preview is up (from an earlier run)."""


def preview_comment(view: PreviewView) -> str:
    """The pull request's one preview comment (Markdown), rendered anew at each change and edited in place."""
    state = view.state
    lines = [comment_marker(view.service), f"### Preview environment of {_code(view.service)}", ""]
    headline = {
        PreviewState.BUILDING: "building",
        PreviewState.DEPLOYING: "deploying",
        PreviewState.READY: "ready",
        PreviewState.FAILED: "failed",
        PreviewState.REMOVED: "removed",
    }[state]
    lines.append(f"**Status: {headline}**" + (f": {_one_line(view.reason)}" if view.reason else ""))
    lines.append("")
    lines.append(f"- Namespace: {_code(view.namespace)}" + (" (deleted)" if state is PreviewState.REMOVED else ""))
    if view.version:
        lines.append(f"- Version: {_code(view.version)}")
    if view.image:
        lines.append(f"- Image: {_code(view.image)}")
    if view.run_link:
        lines.append(f"- Run: {view.run_link}")
    if view.building_link and state is not PreviewState.REMOVED:
        lines.append(f"- Building: {view.building_link}")
    if view.failed_run_link and state is not PreviewState.REMOVED:
        kept = "the preview above stays as it was" if view.deployed else "no preview deployed yet"
        lines.append(f"- Latest run failed: {view.failed_run_link} ({kept})")
    lines.append("")
    lines.append("_Updated by shipline at each push; removed when the pull request is closed or merged._")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
