"""The OCI registry, with the image tools the pipelines use: buildah builds, pushes; skopeo inspects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.testbed


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_buildah_builds_with_run_pushes_and_skopeo_inspects(registry: str, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    # No base image can be pulled here: a static busybox makes RUN possible FROM scratch.
    shutil.copy("/bin/busybox", context / "busybox")
    (context / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /app && echo built-by-run > /app/proof"]\n'
        'LABEL org.opencontainers.image.title="testbed-probe"\n'
        'CMD ["/bin/busybox", "cat", "/app/proof"]\n'
    )
    storage = ["--root", str(tmp_path / "storage"), "--runroot", str(tmp_path / "run"), "--storage-driver", "vfs"]
    image = f"{registry}/testbed/probe:1.0.0"
    _run("buildah", *storage, "bud", "--isolation", "chroot", "-f", "Containerfile", "-t", image, ".", cwd=context)

    # The RUN line really ran: its file is in the image.
    container = _run("buildah", *storage, "from", image).strip()
    mount = _run("buildah", *storage, "mount", container).strip()
    assert (Path(mount) / "app" / "proof").read_text() == "built-by-run\n"
    _run("buildah", *storage, "umount", container)
    _run("buildah", *storage, "rm", container)

    _run("buildah", *storage, "push", "--tls-verify=false", image, f"docker://{image}")
    info = json.loads(_run("skopeo", "inspect", "--tls-verify=false", f"docker://{image}"))
    assert info["Labels"]["org.opencontainers.image.title"] == "testbed-probe"
    assert info["Digest"].startswith("sha256:")
    assert len(info["Layers"]) >= 1
    tags = json.loads(_run("skopeo", "list-tags", "--tls-verify=false", f"docker://{registry}/testbed/probe"))
    assert "1.0.0" in tags["Tags"]

    # Deletes are enabled: the registry forgets the manifest.
    _run("skopeo", "delete", "--tls-verify=false", f"docker://{image}")
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{image}"], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
