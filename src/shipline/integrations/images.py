"""Container images: build a Dockerfile with buildah and push it, without a daemon.

buildah runs with chroot isolation on the vfs driver (no user namespaces, no
overlay mounts: what works in an unprivileged CI container and on the testbed),
with its storage in a directory the caller owns (under the run's HOME) and
removes afterwards: a build never touches the operator's image store.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shipline.domain.artifacts import Registry, insecure_registries_conf, is_loopback, loopback_registries_in
from shipline.exceptions import RegistryError, ToolError
from shipline.integrations.registries import AuthFile, refused
from shipline.integrations.tools import Echo, run_tool

BUILDAH = "buildah"
SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@contextmanager
def buildah_storage(parent: Path) -> Iterator[list[str]]:
    """buildah's global flags for a fresh store under `parent`, removed on the way out."""
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="buildah-", dir=parent))
    try:
        yield ["--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
    finally:
        _remove_tree(root)


def _remove_tree(path: Path) -> None:
    # vfs layers keep the image's modes: read-only directories are opened first, so a
    # non-root user can remove what its own build wrote.
    for directory, subdirs, _files in os.walk(path):
        for sub in subdirs:
            full = os.path.join(directory, sub)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)


def build(
    *,
    storage: list[str],
    context: Path,
    dockerfile: Path,
    reference: str,
    labels: dict[str, str],
    auth: AuthFile | None,
    echo: Echo,
    shown_as: str = "",
    registry_hosts: list[str] | None = None,
) -> None:
    """`buildah bud` the Dockerfile into `reference`; a failed build is a ToolError naming the failing line.

    Base images on loopback registries (`registry_hosts` and those the FROM lines
    name) are pulled over plain HTTP, as Docker does.
    """
    argv = [BUILDAH, *storage, "bud", "--isolation", "chroot", "--format", "oci", "-f", str(dockerfile), "-t", reference]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    if auth:
        argv += ["--authfile", str(auth.path)]
    argv.append(str(context))
    env = dict(os.environ)
    hosts = [h for h in (registry_hosts or []) if is_loopback(h)]
    hosts += [h for h in loopback_registries_in(_read(dockerfile)) if h not in hosts]
    if hosts:
        conf = Path(storage[storage.index("--root") + 1]).parent / "registries.conf"
        conf.write_text(insecure_registries_conf(_read(SYSTEM_REGISTRIES_CONF), hosts))
        env["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    result = run_tool(argv, echo=echo, needed_for="the image task", env=env)
    if not result.ok:
        raise ToolError(
            f"the image build of {shown_as or dockerfile} failed (buildah exited {result.code}): {result.cause()}. "
            "Check the Dockerfile at the instruction the log shows last, and that the files it copies are in the context "
            f"({Path(shown_as).parent if shown_as else context})"
        )


def push(*, storage: list[str], reference: str, registry: Registry, auth: AuthFile | None, echo: Echo, workdir: Path) -> str:
    """Push `reference` to its registry; return the manifest digest the registry stored."""
    digest_file = workdir / "digest"
    argv = [BUILDAH, *storage, "push", "--digestfile", str(digest_file)]
    if registry.plain_http:
        argv.append("--tls-verify=false")
    if auth:
        argv += ["--authfile", str(auth.path)]
    argv += [reference, f"docker://{reference}"]
    result = run_tool(argv, echo=echo, needed_for="the image task")
    if not result.ok:
        raise refused(f"push of image {reference}", registry, result.cause())
    digest = digest_file.read_text().strip() if digest_file.is_file() else ""
    if not digest.startswith("sha256:"):
        raise RegistryError(f"push of image {reference} to {registry.host}: buildah wrote no manifest digest")
    return digest
