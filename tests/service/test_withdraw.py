"""`shipline step withdraw` against the testbed's registry: only what a run pushed, and only while it is still there."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from artifactkit import extra_registry

pytestmark = pytest.mark.testbed


def push_manifest(registry: str, repository: str, tag: str, content: str) -> str:
    """Upload a one-blob OCI manifest by hand (distribution's API); return its digest."""
    base = f"http://{registry}/v2/{repository}"
    config = json.dumps({"content": content}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with httpx.Client(timeout=30) as client:
        start = client.post(f"{base}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
        location = location if location.startswith("http") else f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        done = client.put(
            f"{location}{sep}digest={config_digest}", content=config, headers={"Content-Type": "application/octet-stream"}
        )
        assert done.status_code == 201, done.text
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
                "layers": [],
            }
        ).encode()
        put = client.put(
            f"{base}/manifests/{tag}", content=manifest, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        )
        assert put.status_code == 201, put.text
        return str(put.headers["docker-content-digest"])


def exists(registry: str, repository: str, tag: str) -> bool:
    response = httpx.head(
        f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )
    return response.status_code == 200


def withdraw(*pushed: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [a for p in pushed for a in ("--pushed", p)]
    return subprocess.run(
        [sys.executable, "-m", "shipline", "step", "withdraw", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_withdraw_deletes_only_what_this_run_pushed(registry: str, tmp_path: Path) -> None:
    repo = f"withdraw-{uuid.uuid4().hex[:6]}/hello"
    mine = push_manifest(registry, repo, "1.0.0", "this run")
    kept = push_manifest(registry, f"{repo}-other", "1.0.0", "another")
    # Another run pushed the same tag after this one: it is left alone.
    newer = push_manifest(registry, repo, "1.0.1", "newer")
    push_manifest(registry, repo, "1.0.1", "newest")

    done = withdraw(f"{registry}/{repo}:1.0.0@{mine}", f"oci://{registry}/{repo}:1.0.1@{newer}", "@", ":@", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"withdrawn: {registry}/{repo}:1.0.0: deleted" in done.stdout
    assert f"kept: {registry}/{repo}:1.0.1: now points at" in done.stdout
    assert not exists(registry, repo, "1.0.0")
    assert exists(registry, repo, "1.0.1") and exists(registry, f"{repo}-other", "1.0.0") and kept

    again = withdraw(f"{registry}/{repo}:1.0.0@{mine}", cwd=tmp_path)
    assert "not there (nothing to withdraw)" in again.stdout


def test_withdraw_says_so_when_the_registry_refuses_deletes(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    with extra_registry(root) as writable:
        digest = push_manifest(writable.host, "x/y", "1.0.0", "pushed")
    # The same storage, now read-only: the manifest is there and cannot be deleted.
    with extra_registry(root, readonly=True) as ro:
        done = withdraw(f"{ro.host}/x/y:1.0.0@{digest}", cwd=tmp_path)
        assert exists(ro.host, "x/y", "1.0.0")
    assert done.returncode == 0, done.stderr
    assert f"kept: {ro.host}/x/y:1.0.0: the registry refused the delete" in done.stdout
    assert f"delete {ro.host}/x/y:1.0.0 by hand" in done.stdout


def test_withdraw_keeps_everything_once_the_release_tag_exists(registry: str, tmp_path: Path) -> None:
    repo = f"withdraw-{uuid.uuid4().hex[:6]}/hello"
    digest = push_manifest(registry, repo, "2.0.0", "released")
    remote, work = tmp_path / "remote.git", tmp_path / "src"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True, capture_output=True)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run([*git, "tag", "v2.0.0"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main", "v2.0.0"], check=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shipline",
            "step",
            "withdraw",
            "--tag",
            "v2.0.0",
            "--pushed",
            f"{registry}/{repo}:2.0.0@{digest}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "the release is out, nothing is withdrawn" in done.stdout
    assert exists(registry, repo, "2.0.0")
