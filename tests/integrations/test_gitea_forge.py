"""The Gitea adapter against the testbed's real Gitea: pull requests, statuses, protection, hooks, files."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.exceptions import ForgeError
from shipline.integrations.forges import CommitState, FileChange, MergeResult, RepoRef, repo_ref
from shipline.integrations.forges.gitea import GiteaForge
from shipline.testbed.fixtures import GiteaClient, GiteaRepo

pytestmark = pytest.mark.testbed


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def push_main(gitea: GiteaClient, repo: GiteaRepo, tmp_path: Path, files: dict[str, str]) -> str:
    """The first commit of `repo`'s main, once Gitea has taken it in (until then its pulls answer 404)."""
    work = tmp_path / "work"
    git("init", "-b", "main", str(work), cwd=tmp_path)
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(content)
    git("add", ".", cwd=work)
    git("commit", "-m", "first commit", cwd=work)
    git("push", repo.clone_url, "main", cwd=work)
    gitea.wait_pushed(f"{repo.owner}/{repo.name}")
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def forge(gitea: GiteaClient) -> Iterator[GiteaForge]:
    f = GiteaForge(gitea.url, gitea.token)
    yield f
    f.close()


def merge_when_checked(forge: GiteaForge, ref: RepoRef, number: int) -> MergeResult:
    """Gitea works out mergeability in the background just after a push; wait for that, not for the checks."""
    deadline = time.monotonic() + 30
    while True:
        result = forge.merge_pull_request(ref, number)
        if result.merged or "try again" not in result.reason.lower() or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_pull_request_open_update_comment_status_merge(
    forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    push_main(gitea, gitea_repo, tmp_path, {"values.yaml": "image:\n  tag: 1.0.0  # the deployed version\n"})
    ref = repo_ref(gitea_repo.html_url)
    assert ref == RepoRef(gitea_repo.owner, gitea_repo.name)
    assert forge.default_branch(ref) == "main"

    commit = forge.commit_files(
        ref,
        branch="shipline/promote-hello",
        base="main",
        message="Promote hello to 1.1.0",
        changes=[FileChange("values.yaml", b"image:\n  tag: 1.1.0  # the deployed version\n")],
    )
    assert forge.read_file(ref, "values.yaml", commit.sha) == b"image:\n  tag: 1.1.0  # the deployed version\n"
    assert forge.read_file(ref, "values.yaml", "main") == b"image:\n  tag: 1.0.0  # the deployed version\n"
    assert forge.read_file(ref, "missing.yaml", "main") is None

    assert forge.find_pull_request(ref, "shipline/promote-hello") is None
    pr = forge.open_pull_request(ref, head="shipline/promote-hello", base="main", title="Promote hello to 1.1.0", body="v1")
    assert (pr.head, pr.base, pr.head_sha, pr.state) == ("shipline/promote-hello", "main", commit.sha, "open")
    found = forge.find_pull_request(ref, "shipline/promote-hello")
    assert found is not None and found.number == pr.number

    # A second release updates the same branch and pull request.
    second = forge.commit_files(
        ref,
        branch="shipline/promote-hello",
        base="main",
        message="Promote hello to 1.2.0",
        changes=[FileChange("values.yaml", b"image:\n  tag: 1.2.0  # the deployed version\n")],
    )
    updated = forge.update_pull_request(ref, pr.number, title="Promote hello to 1.2.0", body="v2")
    assert (updated.number, updated.title, updated.body) == (pr.number, "Promote hello to 1.2.0", "v2")
    assert forge.pull_request(ref, pr.number).head_sha == second.sha

    comment_id = forge.comment(ref, pr.number, "deployed to dev: verified")
    comments = gitea.request("GET", f"/repos/{ref}/issues/{pr.number}/comments")
    assert [(c["id"], c["body"]) for c in comments] == [(comment_id, "deployed to dev: verified")]

    forge.set_status(
        ref,
        second.sha,
        state=CommitState.PENDING,
        context="shipline/hello",
        description="running",
        target_url="http://127.0.0.1:8080/#/runs/7",
    )
    (status,) = forge.statuses(ref, second.sha)
    assert (status.context, status.state, status.target_url) == (
        "shipline/hello",
        CommitState.PENDING,
        "http://127.0.0.1:8080/#/runs/7",
    )
    forge.set_status(ref, second.sha, state=CommitState.SUCCESS, context="shipline/hello", description="passed")
    assert [s.state for s in forge.statuses(ref, second.sha)] == [CommitState.SUCCESS]

    result = merge_when_checked(forge, ref, pr.number)
    assert result.merged, result.reason
    merged = forge.pull_request(ref, pr.number)
    assert merged.merged and merged.state == "closed"
    assert forge.read_file(ref, "values.yaml", "main") == b"image:\n  tag: 1.2.0  # the deployed version\n"
    assert forge.find_pull_request(ref, "shipline/promote-hello") is None


def test_protection_requiring_the_status_refuses_a_failing_pull_request(
    forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    push_main(gitea, gitea_repo, tmp_path, {"README.md": "hello\n"})
    ref = repo_ref(gitea_repo.html_url)
    assert forge.branch_protection(ref, "main") is None
    gitea.request(
        "POST",
        f"/repos/{ref}/branch_protections",
        {
            "rule_name": "main",
            "enable_status_check": True,
            "status_check_contexts": ["shipline/hello"],
        },
    )
    protection = forge.branch_protection(ref, "main")
    assert protection is not None and protection.required_contexts == ("shipline/hello",)

    commit = forge.commit_files(
        ref, branch="feature", base="main", message="feat: more", changes=[FileChange("README.md", b"hello, world\n")]
    )
    pr = forge.open_pull_request(ref, head="feature", base="main", title="feat: more", body="")
    forge.set_status(ref, commit.sha, state=CommitState.FAILURE, context="shipline/hello", description="tests failed")

    refused = merge_when_checked(forge, ref, pr.number)
    assert not refused.merged
    assert refused.reason == "Not all required status checks successful"  # Gitea's words, for a comment or the log
    assert not forge.pull_request(ref, pr.number).merged
    assert forge.read_file(ref, "README.md", "main") == b"hello\n"

    forge.set_status(ref, commit.sha, state=CommitState.SUCCESS, context="shipline/hello", description="passed")
    assert merge_when_checked(forge, ref, pr.number).merged
    assert forge.read_file(ref, "README.md", "main") == b"hello, world\n"


def test_close_pull_request(forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path) -> None:
    push_main(gitea, gitea_repo, tmp_path, {"README.md": "hello\n"})
    ref = repo_ref(gitea_repo.html_url)
    forge.commit_files(ref, branch="doomed", base="main", message="x", changes=[FileChange("README.md", None)])
    assert forge.read_file(ref, "README.md", "doomed") is None
    pr = forge.open_pull_request(ref, head="doomed", base="main", title="doomed", body="")
    closed = forge.close_pull_request(ref, pr.number)
    assert closed.state == "closed" and not closed.merged
    assert forge.find_pull_request(ref, "doomed") is None


def test_webhook_registered_twice_is_one_hook(forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo) -> None:
    ref = repo_ref(gitea_repo.html_url)
    first = forge.ensure_webhook(ref, url="http://127.0.0.1:9/hooks/gitea", secret="s1")
    second = forge.ensure_webhook(ref, url="http://127.0.0.1:9/hooks/gitea", secret="s2")
    assert first.created and not second.created
    hooks = gitea.request("GET", f"/repos/{ref}/hooks")
    assert [(h["id"], h["config"]["url"]) for h in hooks] == [(second.id, "http://127.0.0.1:9/hooks/gitea")]
    assert {"push", "create", "pull_request", "pull_request_sync"} <= set(hooks[0]["events"])
    other = forge.ensure_webhook(ref, url="http://127.0.0.1:10/hooks/gitea", secret="s3")
    assert other.created and len(gitea.request("GET", f"/repos/{ref}/hooks")) == 2


def test_a_hook_registered_again_signs_with_the_new_secret(
    forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    """`repos remove` + `repos add` makes a new secret: the forge must sign with it, or every push gets 401."""
    signatures: list[tuple[str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signatures.append((self.headers.get("X-Gitea-Signature", ""), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        push_main(gitea, gitea_repo, tmp_path, {"README.md": "hi\n"})
        ref = repo_ref(gitea_repo.html_url)
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/gitea"
        forge.ensure_webhook(ref, url=url, secret="old-secret")
        hook = forge.ensure_webhook(ref, url=url, secret="new-secret")
        deadline = time.monotonic() + 30
        while not signatures and time.monotonic() < deadline:
            gitea.request("POST", f"/repos/{ref}/hooks/{hook.id}/tests")
            time.sleep(0.5)
        assert signatures, "Gitea delivered nothing to the hook"
        signature, body = signatures[-1]
        assert signature == hmac.new(b"new-secret", body, hashlib.sha256).hexdigest()
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_refusals_name_the_call_and_what_to_check(gitea: GiteaClient, gitea_repo: GiteaRepo) -> None:
    ref = repo_ref(gitea_repo.html_url)
    bad = GiteaForge(gitea.url, "not-a-token")
    with pytest.raises(ForgeError) as caught:
        bad.open_pull_request(ref, head="x", base="main", title="t", body="")
    bad.close()
    err = caught.value
    assert err.status == 401 and err.forge == "gitea" and err.call == f"POST /repos/{ref}/pulls"
    assert "SHIPLINE_GITEA_TOKEN" in str(err) and "not-a-token" not in str(err)
    assert err.exit_code == 1 and err.http_status == 502

    good = GiteaForge(gitea.url, gitea.token)
    with pytest.raises(ForgeError) as missing:
        good.pull_request(RepoRef(gitea_repo.owner, "no-such-repo"), 1)
    good.close()
    assert missing.value.status == 404 and "does the repository exist" in str(missing.value)


def test_a_comment_found_by_its_marker_is_edited_in_place(
    forge: GiteaForge, gitea: GiteaClient, gitea_repo: GiteaRepo, tmp_path: Path
) -> None:
    push_main(gitea, gitea_repo, tmp_path, {"README": "hello\n"})
    ref = repo_ref(gitea_repo.html_url)
    forge.commit_files(ref, branch="feature", base="main", message="a change", changes=[FileChange("README", b"hi\n")])
    pr = forge.open_pull_request(ref, head="feature", base="main", title="A change", body="")
    marker = "<!-- shipline-preview: hello -->"
    assert forge.find_comment(ref, pr.number, marker) is None
    forge.comment(ref, pr.number, "looks good")
    posted = forge.comment(ref, pr.number, f"{marker}\n**Status: deploying**")
    assert forge.find_comment(ref, pr.number, marker) == posted
    assert forge.update_comment(ref, posted, f"{marker}\n**Status: ready**") is True
    comments = gitea.request("GET", f"/repos/{ref}/issues/{pr.number}/comments")
    assert [c["body"] for c in comments] == ["looks good", f"{marker}\n**Status: ready**"]
    gitea.request("DELETE", f"/repos/{ref}/issues/comments/{posted}")
    assert forge.update_comment(ref, posted, "gone") is False  # deleted by someone: the caller posts anew
