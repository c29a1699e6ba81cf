"""Gitea's REST API (`/api/v1`), as the `Forge` interface.

Tested against a real Gitea (the testbed's).  The token needs the scopes
`write:repository` (pull requests, statuses, files, hooks) and `write:issue`
(comments on pull requests).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx

from shipline.integrations.forges.base import (
    BranchProtection,
    Commit,
    CommitState,
    FileChange,
    MergeResult,
    PullRequest,
    RepoRef,
)
from shipline.integrations.forges.calling import ForgeHttp, field, message_of, text
from shipline.integrations.forges.shared import GitHubStyleForge, file_path, pull_request_of

EVENTS = ("push", "create", "pull_request", "pull_request_sync")
"""Pushes, tags and branches created, pull requests opened/closed/reopened, and new commits on them."""


def gitea_http(
    url: str, token: str, scopes: str, timeout: float = 15.0, transport: httpx.BaseTransport | None = None
) -> ForgeHttp:
    """Gitea's API at `url` (the server's root URL) with a token that should have `scopes`."""
    return ForgeHttp(
        "gitea",
        f"{url.rstrip('/')}/api/v1",
        {"Authorization": f"token {token}", "Accept": "application/json"},
        token_setting="SHIPLINE_GITEA_TOKEN",
        scopes=scopes,
        timeout=timeout,
        transport=transport,
    )


class GiteaForge(GitHubStyleForge):
    kind = "gitea"
    hook_events = EVENTS
    page_size, page_size_param, max_pages = 50, "limit", 20
    hook_config = {}
    hook_create = {"type": "gitea"}
    hook_secret_editable = False
    """Gitea's API edits a hook's URL, events and content type, never its secret: a hook is replaced instead."""

    def __init__(self, url: str, token: str, *, timeout: float = 15.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = gitea_http(self.url, token, "the write:repository and write:issue scopes", timeout, transport)

    # --- pull requests ------------------------------------------------------------------

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        items = self._pages(f"{self._repo(repo)}/pulls", f"list open pull requests of {repo}", {"state": "open"})
        for item in items:
            same_repo = text(item, "head", "repo", "full_name") in ("", str(repo))
            if text(item, "head", "ref") == head and same_repo:
                return pull_request_of(item)
        return None

    def merge_pull_request(self, repo: RepoRef, number: int, *, method: str = "merge", message: str = "") -> MergeResult:
        body: dict[str, Any] = {"Do": method}
        if message:
            body["MergeMessageField"] = message
        # 405: not mergeable now (checks, approvals, protection); 409: a conflict or the head moved.
        response = self.http.call(
            "POST",
            f"{self._repo(repo)}/pulls/{number}/merge",
            f"merge pull request #{number} of {repo}",
            body=body,
            ok=(405, 409),
        )
        if response.status_code in (405, 409):
            return MergeResult(False, reason=message_of(response))
        data = self.http.json("GET", f"{self._repo(repo)}/pulls/{number}", f"read pull request #{number} of {repo}")
        merged = field(data, "merged") is True
        return MergeResult(merged, sha=text(data, "merge_commit_sha"), reason="" if merged else "the forge did not merge it")

    # --- commit statuses and protection -------------------------------------------------

    def set_status(
        self, repo: RepoRef, sha: str, *, state: CommitState, context: str, description: str = "", target_url: str = ""
    ) -> None:
        self.http.call(
            "POST",
            f"{self._repo(repo)}/statuses/{quote(sha, safe='')}",
            f"set status {context}={state.value} on {sha[:12]} of {repo}",
            body={"state": state.value, "context": context, "description": description[:140], "target_url": target_url},
        )

    def branch_protection(self, repo: RepoRef, branch: str) -> BranchProtection | None:
        data = self.http.json("GET", f"{self._repo(repo)}/branches/{file_path(branch)}", f"read branch {branch} of {repo}")
        if field(data, "protected") is not True:
            return None
        contexts = field(data, "status_check_contexts") if field(data, "enable_status_check") is True else []
        return BranchProtection(
            branch=branch,
            required_contexts=tuple(str(c) for c in contexts or []),
            required_approvals=int(field(data, "required_approvals") or 0),
        )

    # --- files --------------------------------------------------------------------------

    def _contents(self, repo: RepoRef, path: str, ref: str) -> Any | None:
        response = self.http.call(
            "GET",
            f"{self._repo(repo)}/contents/{file_path(path)}",
            f"read {path} at {ref} of {repo}",
            params={"ref": ref},
            ok=(404,),
        )
        if response.status_code == 404:
            return None
        return response.json()

    def read_file(self, repo: RepoRef, path: str, ref: str) -> bytes | None:
        data = self._contents(repo, path, ref)
        if data is None or not isinstance(data, dict) or text(data, "type") != "file":
            return None
        return base64.b64decode(text(data, "content"))

    def _branch_exists(self, repo: RepoRef, branch: str) -> bool:
        response = self.http.call(
            "GET", f"{self._repo(repo)}/branches/{file_path(branch)}", f"read branch {branch} of {repo}", ok=(404,)
        )
        return response.status_code != 404

    def commit_files(self, repo: RepoRef, *, branch: str, base: str, message: str, changes: list[FileChange]) -> Commit:
        exists = self._branch_exists(repo, branch)
        source = branch if exists else base
        files = []
        for change in changes:
            current = self._contents(repo, change.path, source)
            sha = text(current, "sha") if isinstance(current, dict) else ""
            if change.content is None:
                if sha:
                    files.append({"operation": "delete", "path": change.path, "sha": sha})
                continue
            entry = {
                "operation": "update" if sha else "create",
                "path": change.path,
                "content": base64.b64encode(change.content).decode(),
            }
            if sha:
                entry["sha"] = sha
            files.append(entry)
        body: dict[str, Any] = {"branch": source, "message": message, "files": files}
        if not exists:
            body["new_branch"] = branch
        data = self.http.json(
            "POST", f"{self._repo(repo)}/contents", f"commit {len(files)} file(s) to {branch} of {repo}", body=body
        )
        return Commit(sha=text(data, "commit", "sha"), branch=branch, changed=tuple(f["path"] for f in files))
