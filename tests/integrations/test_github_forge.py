"""The GitHub adapter against recorded GitHub API responses, served on 127.0.0.1.

No GitHub server can be had on this machine.  The files in `github/` are JSON
written to be exactly as GitHub's REST API documents its responses (API version
2022-11-28: pulls, issues/comments, statuses, branches, hooks, contents and the
git database).  A small HTTP server answers each expected call in order with
one of them, after checking the request: method, path and query, the headers
GitHub asks for (Bearer token, `application/vnd.github+json`, API version) and
the JSON body (GitHub also insists on a User-Agent).  A call the script does not expect is answered 418 and fails the test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipline.exceptions import ForgeError
from shipline.integrations.forges import BranchProtection, CommitState, FileChange, RepoRef
from shipline.integrations.forges.github import GitHubForge

RECORDED = Path(__file__).parent / "github"
TOKEN = "ghp_recordedTestToken0123456789abcdefABCD"
REPO = RepoRef("octo-org", "hello")
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


@dataclass
class Call:
    method: str
    path: str
    """Path and query, as GitHub receives it."""
    status: int
    response: str | None = None
    """A file in `github/`, or None for an empty body."""
    body: dict[str, Any] | None = None
    """The JSON body the request must carry (exactly)."""


@dataclass
class FakeGitHub:
    url: str
    script: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def expect(self, *calls: Call) -> None:
        self.script.extend(calls)

    def check_done(self) -> None:
        assert not self.problems, self.problems
        assert not self.script, f"expected calls not made: {[(c.method, c.path) for c in self.script]}"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fake.seen.append(f"{self.command} {self.path}")
            problems = []
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                problems.append(f"{self.command} {self.path}: Authorization header is {self.headers.get('Authorization')!r}")
            if self.headers.get("Accept") != "application/vnd.github+json":
                problems.append(f"{self.command} {self.path}: Accept is {self.headers.get('Accept')!r}")
            if not self.headers.get("User-Agent"):  # GitHub refuses requests without one
                problems.append(f"{self.command} {self.path}: no User-Agent")
            if raw and self.headers.get("Content-Type") != "application/json":
                problems.append(f"{self.command} {self.path}: Content-Type is {self.headers.get('Content-Type')!r}")
            if self.headers.get("X-GitHub-Api-Version") != "2022-11-28":
                problems.append(f"{self.command} {self.path}: no X-GitHub-Api-Version: 2022-11-28")
            if not fake.script:
                problems.append(f"unexpected {self.command} {self.path}")
                call = None
            else:
                call = fake.script.pop(0)
                if (call.method, call.path) != (self.command, self.path):
                    problems.append(f"expected {call.method} {call.path}, got {self.command} {self.path}")
                if call.body is not None:
                    got = json.loads(raw) if raw else None
                    if got != call.body:
                        problems.append(f"{self.command} {self.path}: body {got!r}, expected {call.body!r}")
            if problems or call is None:
                fake.problems.extend(problems)
                self._answer(418, b'{"message": "not in the script"}')
                return
            body = (RECORDED / call.response).read_bytes() if call.response else b""
            self._answer(call.status, body)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def forge(github: FakeGitHub) -> Iterator[GitHubForge]:
    f = GitHubForge(TOKEN, api_url=github.url, timeout=5)
    f.http.sleep = lambda _: None  # the retry pauses, not the retries, are skipped
    yield f
    f.close()


def test_pull_request_lifecycle(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(
        Call("GET", "/repos/octo-org/hello", 200, "repository.json"),
        Call("GET", "/repos/octo-org/hello/pulls?state=open&head=octo-org%3Ashipline%2Fpromote-hello&per_page=100", 200, None),
        Call(
            "POST",
            "/repos/octo-org/hello/pulls",
            201,
            "pull-created.json",
            {"title": "Promote hello to 1.1.0", "head": "shipline/promote-hello", "base": "trunk", "body": "version 1.1.0"},
        ),
        Call(
            "GET",
            "/repos/octo-org/hello/pulls?state=open&head=octo-org%3Ashipline%2Fpromote-hello&per_page=100",
            200,
            "pulls-open.json",
        ),
        Call(
            "PATCH",
            "/repos/octo-org/hello/pulls/1347",
            200,
            "pull-updated.json",
            {"title": "Promote hello to 1.2.0", "body": "version 1.2.0"},
        ),
        Call(
            "POST", "/repos/octo-org/hello/issues/1347/comments", 201, "issue-comment.json", {"body": "deployed to dev: verified"}
        ),
        Call("PATCH", "/repos/octo-org/hello/pulls/1347", 200, "pull-closed.json", {"state": "closed"}),
    )
    assert forge.default_branch(REPO) == "trunk"
    assert forge.find_pull_request(REPO, "shipline/promote-hello") is None
    pr = forge.open_pull_request(
        REPO, head="shipline/promote-hello", base="trunk", title="Promote hello to 1.1.0", body="version 1.1.0"
    )
    assert (pr.number, pr.head, pr.base, pr.head_sha, pr.state, pr.mergeable) == (
        1347,
        "shipline/promote-hello",
        "trunk",
        HEAD,
        "open",
        None,
    )
    assert pr.url == "https://github.com/octo-org/hello/pull/1347"
    found = forge.find_pull_request(REPO, "shipline/promote-hello")
    assert found is not None and found.number == 1347
    updated = forge.update_pull_request(REPO, 1347, title="Promote hello to 1.2.0", body="version 1.2.0")
    assert (updated.title, updated.mergeable) == ("Promote hello to 1.2.0", True)
    assert forge.comment(REPO, 1347, "deployed to dev: verified") == 1
    closed = forge.close_pull_request(REPO, 1347)
    assert closed.state == "closed" and not closed.merged
    github.check_done()


def test_statuses_protection_and_merge(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(
        Call(
            "POST",
            f"/repos/octo-org/hello/statuses/{HEAD}",
            201,
            "status-created.json",
            {
                "state": "pending",
                "context": "shipline/hello",
                "description": "running",
                "target_url": "https://shipline.example/#/runs/7",
            },
        ),
        Call("GET", f"/repos/octo-org/hello/commits/{HEAD}/status", 200, "combined-status.json"),
        Call("GET", "/repos/octo-org/hello/branches/trunk", 200, "branch-protected.json"),
        Call("GET", "/repos/octo-org/hello/branches/feature", 200, "branch-unprotected.json"),
        Call("PUT", "/repos/octo-org/hello/pulls/1347/merge", 405, "merge-refused.json", {"merge_method": "merge"}),
        Call(
            "PUT",
            "/repos/octo-org/hello/pulls/1347/merge",
            200,
            "merge-done.json",
            {"merge_method": "squash", "commit_message": "Promote hello to 1.2.0"},
        ),
    )
    forge.set_status(
        REPO,
        HEAD,
        state=CommitState.PENDING,
        context="shipline/hello",
        description="running",
        target_url="https://shipline.example/#/runs/7",
    )
    statuses = {s.context: s.state for s in forge.statuses(REPO, HEAD)}
    assert statuses == {"shipline/hello": CommitState.FAILURE, "security/brakeman": CommitState.SUCCESS}
    assert forge.branch_protection(REPO, "trunk") == BranchProtection("trunk", ("shipline/hello",))
    assert forge.branch_protection(REPO, "feature") is None
    refused = forge.merge_pull_request(REPO, 1347)
    assert not refused.merged and refused.reason == 'Required status check "shipline/hello" is failing.'
    done = forge.merge_pull_request(REPO, 1347, method="squash", message="Promote hello to 1.2.0")
    assert done.merged and done.sha == "e5bd3914e2e596debea16f433f57875b5b90bcd6"
    github.check_done()


def test_webhook_is_made_once_then_kept(forge: GitHubForge, github: FakeGitHub) -> None:
    config = {"url": "https://shipline.example/hooks/github", "content_type": "json", "secret": "s3cret", "insecure_ssl": "0"}
    github.expect(
        Call("GET", "/repos/octo-org/hello/hooks?per_page=100&page=1", 200, None),
        Call(
            "POST",
            "/repos/octo-org/hello/hooks",
            201,
            "hook-created.json",
            {"name": "web", "config": config, "events": ["push", "pull_request"], "active": True},
        ),
        Call("GET", "/repos/octo-org/hello/hooks?per_page=100&page=1", 200, "hooks-one.json"),
        Call(
            "PATCH",
            "/repos/octo-org/hello/hooks/12345678",
            200,
            "hook-created.json",
            {"config": config, "events": ["push", "pull_request"], "active": True},
        ),
    )
    first = forge.ensure_webhook(REPO, url="https://shipline.example/hooks/github", secret="s3cret")
    second = forge.ensure_webhook(REPO, url="https://shipline.example/hooks/github", secret="s3cret")
    assert first.created and not second.created and first.id == second.id == 12345678
    assert first.events == ("push", "pull_request")
    github.check_done()


def test_files_read_and_committed(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(
        Call("GET", f"/repos/octo-org/hello/contents/.shipline/pipeline.yaml?ref={HEAD}", 200, "contents-file.json"),
        Call("GET", f"/repos/octo-org/hello/contents/.shipline/pipeline.yaml?ref={'0' * 40}", 404, "not-found.json"),
        Call("GET", "/repos/octo-org/hello/git/ref/heads/shipline/promote-hello", 404, "not-found.json"),
        Call("GET", "/repos/octo-org/hello/git/ref/heads/trunk", 200, "ref-trunk.json"),
        Call("GET", "/repos/octo-org/hello/git/commits/c5b97d5ae6c19d5c5df71a34c7fbeeda2479ccbc", 200, "git-commit-base.json"),
        Call(
            "POST",
            "/repos/octo-org/hello/git/blobs",
            201,
            "blob-created.json",
            {"content": "aW1hZ2U6CiAgdGFnOiAxLjEuMAo=", "encoding": "base64"},
        ),
        Call(
            "POST",
            "/repos/octo-org/hello/git/trees",
            201,
            "tree-created.json",
            {
                "base_tree": "691272480426f78a0138979dd3ce63b77f706feb",
                "tree": [
                    {"path": "values.yaml", "mode": "100644", "type": "blob", "sha": "3a0f86fb8db8eea7ccbb9a95f325ddbedfb25e15"},
                    {"path": "old.yaml", "mode": "100644", "type": "blob", "sha": None},
                ],
            },
        ),
        Call(
            "POST",
            "/repos/octo-org/hello/git/commits",
            201,
            "git-commit-created.json",
            {
                "message": "Promote hello to 1.1.0",
                "tree": "cd8274d15fa3ae2ab983129fb037999f264ba9a7",
                "parents": ["c5b97d5ae6c19d5c5df71a34c7fbeeda2479ccbc"],
            },
        ),
        Call(
            "POST",
            "/repos/octo-org/hello/git/refs",
            201,
            "ref-created.json",
            {"ref": "refs/heads/shipline/promote-hello", "sha": "7638417db6d59f3c431d3e1f261cc637155684cd"},
        ),
    )
    text = forge.read_file(REPO, ".shipline/pipeline.yaml", HEAD)
    assert text == b"name: hello\nuses: shipline/service\nwith:\n  test: go test ./...\n"
    assert forge.read_file(REPO, ".shipline/pipeline.yaml", "0" * 40) is None
    commit = forge.commit_files(
        REPO,
        branch="shipline/promote-hello",
        base="trunk",
        message="Promote hello to 1.1.0",
        changes=[FileChange("values.yaml", b"image:\n  tag: 1.1.0\n"), FileChange("old.yaml", None)],
    )
    assert commit.sha == "7638417db6d59f3c431d3e1f261cc637155684cd" and commit.branch == "shipline/promote-hello"
    github.check_done()


def test_retries_a_failing_read_and_never_a_create(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(
        Call("GET", "/repos/octo-org/hello", 502, None),
        Call("GET", "/repos/octo-org/hello", 503, None),
        Call("GET", "/repos/octo-org/hello", 200, "repository.json"),
        Call("POST", "/repos/octo-org/hello/issues/7/comments", 500, None, {"body": "hi"}),
    )
    assert forge.default_branch(REPO) == "trunk"
    with pytest.raises(ForgeError) as caught:
        forge.comment(REPO, 7, "hi")  # a 500 may have made the comment: never sent twice
    assert caught.value.status == 500 and "github failed on its side" in str(caught.value)
    github.check_done()


def test_a_read_that_keeps_failing_gives_up(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(*[Call("GET", "/repos/octo-org/hello", 502, None)] * 4)
    with pytest.raises(ForgeError) as caught:
        forge.default_branch(REPO)
    assert caught.value.status == 502 and caught.value.call == "GET /repos/octo-org/hello"
    github.check_done()


def test_bad_token_is_named_and_never_shown(forge: GitHubForge, github: FakeGitHub) -> None:
    github.expect(Call("POST", f"/repos/octo-org/hello/statuses/{HEAD}", 401, "bad-credentials.json"))
    with pytest.raises(ForgeError) as caught:
        forge.set_status(REPO, HEAD, state=CommitState.SUCCESS, context="shipline/hello")
    message = str(caught.value)
    assert "HTTP 401: Bad credentials" in message and "SHIPLINE_GITHUB_TOKEN" in message
    assert TOKEN not in message
    github.check_done()


def test_unreachable_forge_is_retried_then_named() -> None:
    forge = GitHubForge(TOKEN, api_url="http://127.0.0.1:9", timeout=2)
    pauses: list[float] = []
    forge.http.sleep = pauses.append
    with pytest.raises(ForgeError) as caught:
        forge.open_pull_request(REPO, head="a", base="b", title="t", body="")
    forge.close()
    assert caught.value.status is None and "ConnectError" in str(caught.value)
    assert "is the github URL right and the forge running?" in str(caught.value)
    assert pauses == [0.5, 1.0, 2.0]  # a refused connection sent nothing: even a create is tried again


def test_preview_comment_found_by_its_marker_and_edited_in_place(forge: GitHubForge, github: FakeGitHub) -> None:
    marker = "<!-- shipline-preview: hello -->"
    body = marker + "\n### Preview environment of `hello`\n\n**Status: ready**\n"
    github.expect(
        Call("GET", "/repos/octo-org/hello/issues/1347/comments?per_page=100&page=1", 200, "issue-comments.json"),
        Call("PATCH", "/repos/octo-org/hello/issues/comments/1400", 200, "issue-comment-updated.json", {"body": body}),
        Call("GET", "/repos/octo-org/hello/issues/1348/comments?per_page=100&page=1", 200, None),
        Call("PATCH", "/repos/octo-org/hello/issues/comments/1401", 404, "not-found.json", {"body": body}),
    )
    found = forge.find_comment(REPO, 1347, marker)
    assert found == 1400  # not 1399, a person's comment without the marker
    assert forge.update_comment(REPO, found, body) is True
    assert forge.find_comment(REPO, 1348, marker) is None  # a pull request without one
    assert forge.update_comment(REPO, 1401, body) is False  # someone deleted it: the caller posts a new one
    github.check_done()
