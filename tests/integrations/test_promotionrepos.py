"""Git for promotions, on local repositories: the promotion commit is the same for the same base and edit
(so a redelivery pushes nothing), and git errors say whether waiting could mend them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipline.integrations.promotionrepos import EnvCheckout, PromotionGitError, Workspace


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "env.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    (work / "manifests").mkdir()
    (work / "manifests" / "hello.yaml").write_text("image: reg.example/hello:1.0.0  # keep me\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    return bare


def test_the_same_edit_on_the_same_base_is_the_same_commit_and_is_pushed_once(remote: Path) -> None:
    shas = []
    for _ in range(2):
        with Workspace("") as work:
            checkout = EnvCheckout.clone(work, str(remote), "main")
            assert checkout.paths() == ["manifests/hello.yaml"]
            sha = checkout.push_branch(
                "shipline/promote/hello",
                {"manifests/hello.yaml": "image: reg.example/hello:1.1.0  # keep me\n"},
                "Promote hello to 1.1.0",
            )
            shas.append(sha)
    assert shas[0] == shas[1]
    listed = git("ls-remote", str(remote), "refs/heads/shipline/promote/hello", cwd=remote)
    assert listed.split()[0] == shas[0]
    assert git("show", f"{shas[0]}:manifests/hello.yaml", cwd=remote) == "image: reg.example/hello:1.1.0  # keep me"


def test_a_missing_repository_or_branch_is_for_good_not_retried(remote: Path, tmp_path: Path) -> None:
    with Workspace("") as work:
        with pytest.raises(PromotionGitError) as missing:
            EnvCheckout.clone(work, str(tmp_path / "nowhere.git"), "main")
        assert missing.value.transient is False
        with pytest.raises(PromotionGitError) as branch:
            EnvCheckout.clone(work, str(remote), "release", name="other")
        assert branch.value.transient is False and "release" in str(branch.value)
        with pytest.raises(PromotionGitError) as refused:
            EnvCheckout.clone(work, "http://127.0.0.1:9/acme/env.git", "main", name="third")  # nothing listens on port 9
        assert refused.value.transient is True
