"""The base images the real node needs, built here (no public registry is reachable).

`build_images` (the `images` part of `shipline testbed build`) makes OCI archives in
the cache: the pause image (busybox-static and a four-line script, FROM scratch)
and the runner image (Debian slim with bash, git and ca-certificates, made by
mmdebstrap from Debian's packages).  `push_images` copies them into the testbed
registry at `up`, unless the registry has them already.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from shipline.exceptions import ToolError
from shipline.testbed.layout import Layout
from shipline.testbed.nodeconfigs import PAUSE_IMAGE, RUNNER_IMAGE

Report = Callable[[str], None]

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
RUNNER_PACKAGES = ("bash", "git", "ca-certificates")

# PID 1 of every pod: waits for SIGTERM without using a CPU; busybox's sh as PID 1
# would ignore SIGTERM without the trap.
PAUSE_SCRIPT = "trap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n"


def images_key() -> str:
    recipe = "\n".join([PAUSE_IMAGE, PAUSE_SCRIPT, RUNNER_IMAGE, DEBIAN_SUITE, DEBIAN_MIRROR, *RUNNER_PACKAGES])
    return "images-" + hashlib.sha256(recipe.encode()).hexdigest()[:12]


def archive(layout: Layout, image: str) -> Path:
    """Where the OCI archive of an image (`shipline/pause:3.10`) lives in the cache."""
    name = image.split("/")[-1].replace(":", "-")
    return layout.cache / "images" / images_key() / f"{name}.oci.tar"


IMAGES = (PAUSE_IMAGE, RUNNER_IMAGE)


def build_images(layout: Layout, report: Report) -> None:
    log = layout.cache / "logs" / f"{images_key()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    out = archive(layout, PAUSE_IMAGE).parent
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shipline-images-") as tmp:
        work = Path(tmp)
        # A private, throwaway container storage: nothing of the machine's buildah is touched.
        storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
        (work / "pause").write_text(PAUSE_SCRIPT)
        report(f"pause image {PAUSE_IMAGE}: busybox-static FROM scratch")
        _buildah_image(
            storage,
            work,
            log,
            PAUSE_IMAGE,
            archive(layout, PAUSE_IMAGE),
            adds=[("/bin/busybox", "/bin/busybox"), (str(work / "pause"), "/pause")],
            config=["--entrypoint", '["/bin/busybox", "sh", "/pause"]'],
        )
        rootfs = work / "rootfs.tar"
        report(f"runner image {RUNNER_IMAGE}: mmdebstrap {DEBIAN_SUITE} minbase + {', '.join(RUNNER_PACKAGES)}")
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(RUNNER_PACKAGES)}",
                "--mode=root",
                "--format=tar",
                '--aptopt=Acquire::Languages "none"',
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
                DEBIAN_SUITE,
                str(rootfs),
                f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
            ],
            log,
        )
        _buildah_image(
            storage,
            work,
            log,
            RUNNER_IMAGE,
            archive(layout, RUNNER_IMAGE),
            adds=[(str(rootfs), "/")],
            config=[
                "--cmd",
                "/bin/bash",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
            ],
        )
        _run(["buildah", *storage, "rm", "--all"], log)
        # vfs layers belong to root and are many: remove them here, not in TemporaryDirectory's walk.
        shutil.rmtree(work / "storage", ignore_errors=True)


def _buildah_image(
    storage: list[str], work: Path, log: Path, image: str, target: Path, adds: list[tuple[str, str]], config: list[str]
) -> None:
    container = _run(["buildah", *storage, "from", "scratch"], log).strip().splitlines()[-1]
    for source, dest in adds:
        # `add` unpacks a local tar archive (the rootfs); `copy` would not.
        _run(["buildah", *storage, "add", container, source, dest], log)
    _run(["buildah", *storage, "config", *config, "--os", "linux", "--arch", "amd64", container], log)
    tmp = target.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    _run(["buildah", *storage, "commit", "--format", "oci", "--rm", container, f"oci-archive:{tmp}:{image}"], log)
    tmp.replace(target)


def push_images(layout: Layout, registry: str, report: Report) -> None:
    """Copy the base images into the testbed registry, unless they are there already."""
    log = layout.log("images")
    for image in IMAGES:
        source = archive(layout, image)
        dest = f"docker://{registry}/{image}"
        inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", dest], capture_output=True, text=True, check=False
        )
        if inspect.returncode == 0:
            continue
        if not source.is_file():
            raise ToolError(f"{image}: no archive at {source}; run `shipline testbed build --only images`")
        _run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{source}", dest], log)
        report(f"images: pushed {registry}/{image}")


def _run(cmd: list[str], log: Path) -> str:
    # Imported here: building imports this module for the `images` part.
    from shipline.testbed.building import run_logged

    env = {**os.environ, "TMPDIR": os.environ.get("TMPDIR", "/var/tmp")}
    return run_logged(cmd, log=log, env=env)
