"""GitHub's REST API (api.github.com, or GitHub Enterprise's `/api/v3`), as the `Forge` interface.

No GitHub server can be had on this machine: the adapter is tested against
recorded responses shaped as GitHub documents them.  A classic token needs
the `repo` and `admin:repo_hook` scopes; a fine-grained one: Contents,
Pull requests, Commit statuses (read and write), Webhooks (read and write),
Metadata (read).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx

from shipline.exceptions import ForgeError
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

EVENTS = ("push", "pull_request")
"""On GitHub a push event covers branches and tags alike."""
API_VERSION = "2022-11-28"


class GitHubForge(GitHubStyleForge):
    kind = "github"
    hook_events = EVENTS
    page_size, page_size_param, max_pages = 100, "per_page", 10
    hook_config = {"insecure_ssl": "0"}
    hook_create = {"name": "web"}

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.github.com",
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = ForgeHttp(
            "github",
            api_url,
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "shipline",
            },
            token_setting="SHIPLINE_GITHUB_TOKEN",
            scopes="the repo and admin:repo_hook scopes (fine-grained: Contents, Pull requests, Commit statuses, Webhooks)",
            timeout=timeout,
            transport=transport,
        )

    # --- pull requests ------------------------------------------------------------------

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        items = self.http.json(
            "GET",
            f"{self._repo(repo)}/pulls",
            f"find the open pull request from {head} on {repo}",
            params={"state": "open", "head": f"{repo.owner}:{head}", "per_page": self.page_size},
        )
        for item in items if isinstance(items, list) else []:
            if text(item, "head", "ref") == head:
                return pull_request_of(item)
        return None

    def merge_pull_request(self, repo: RepoRef, number: int, *, method: str = "merge", message: str = "") -> MergeResult:
        body: dict[str, Any] = {"merge_method": method}
        if message:
            body["commit_message"] = message
        # 405: not mergeable (checks, reviews, protection); 409: the head moved or a conflict.
        response = self.http.call(
            "PUT",
            f"{self._repo(repo)}/pulls/{number}/merge",
            f"merge pull request #{number} of {repo}",
            body=body,
            ok=(405, 409),
        )
        if response.status_code in (405, 409):
            return MergeResult(False, reason=message_of(response))
        data = response.json()
        return MergeResult(field(data, "merged") is True, sha=text(data, "sha"), reason=text(data, "message"))

    # --- commit statuses and protection -------------------------------------------------

    def set_status(
        self, repo: RepoRef, sha: str, *, state: CommitState, context: str, description: str = "", target_url: str = ""
    ) -> None:
        body = {"state": state.value, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        self.http.call(
            "POST",
            f"{self._repo(repo)}/statuses/{quote(sha, safe='')}",
            f"set status {context}={state.value} on {sha[:12]} of {repo}",
            body=body,
        )

    def branch_protection(self, repo: RepoRef, branch: str) -> BranchProtection | None:
        # The branch endpoint tells protection with read access; /protection would need admin rights.
        data = self.http.json("GET", f"{self._repo(repo)}/branches/{file_path(branch)}", f"read branch {branch} of {repo}")
        if field(data, "protected") is not True:
            return None
        checks = field(data, "protection", "required_status_checks") or {}
        contexts = [str(c) for c in field(checks, "contexts") or []]
        contexts += [text(c, "context") for c in field(checks, "checks") or [] if text(c, "context") not in contexts]
        return BranchProtection(branch=branch, required_contexts=tuple(contexts))

    # --- files --------------------------------------------------------------------------

    def read_file(self, repo: RepoRef, path: str, ref: str) -> bytes | None:
        response = self.http.call(
            "GET",
            f"{self._repo(repo)}/contents/{file_path(path)}",
            f"read {path} at {ref} of {repo}",
            params={"ref": ref},
            ok=(404,),
        )
        if response.status_code == 404:
            return None
        data = response.json()
        if not isinstance(data, dict) or text(data, "type") != "file":
            return None
        return base64.b64decode(text(data, "content"))

    def _ref(self, repo: RepoRef, branch: str) -> str:
        response = self.http.call(
            "GET", f"{self._repo(repo)}/git/ref/heads/{file_path(branch)}", f"read branch {branch} of {repo}", ok=(404,)
        )
        return "" if response.status_code == 404 else text(response.json(), "object", "sha")

    def commit_files(self, repo: RepoRef, *, branch: str, base: str, message: str, changes: list[FileChange]) -> Commit:
        head = self._ref(repo, branch)
        parent = head or self._ref(repo, base)
        if not parent:
            raise ForgeError(
                f"github: commit to {branch} of {repo}: neither {branch} nor its base {base} exists; "
                f"check the base branch name (the environment's `branch:`)",
                forge="github",
                call=f"GET {self._repo(repo)}/git/ref/heads/{file_path(base)}",
                status=404,
            )
        tree = text(
            self.http.json("GET", f"{self._repo(repo)}/git/commits/{parent}", f"read commit {parent[:12]} of {repo}"),
            "tree",
            "sha",
        )
        entries: list[dict[str, Any]] = []
        for change in changes:
            if change.content is None:
                entries.append({"path": change.path, "mode": "100644", "type": "blob", "sha": None})
                continue
            blob = self.http.json(
                "POST",
                f"{self._repo(repo)}/git/blobs",
                f"store {change.path} on {repo}",
                body={"content": base64.b64encode(change.content).decode(), "encoding": "base64"},
            )
            entries.append({"path": change.path, "mode": "100644", "type": "blob", "sha": text(blob, "sha")})
        new_tree = self.http.json(
            "POST", f"{self._repo(repo)}/git/trees", f"make a tree on {repo}", body={"base_tree": tree, "tree": entries}
        )
        commit = self.http.json(
            "POST",
            f"{self._repo(repo)}/git/commits",
            f"make a commit on {repo}",
            body={"message": message, "tree": text(new_tree, "sha"), "parents": [parent]},
        )
        sha = text(commit, "sha")
        if head:
            self.http.call(
                "PATCH",
                f"{self._repo(repo)}/git/refs/heads/{file_path(branch)}",
                f"move branch {branch} of {repo}",
                body={"sha": sha, "force": False},
            )
        else:
            self.http.call(
                "POST",
                f"{self._repo(repo)}/git/refs",
                f"create branch {branch} on {repo}",
                body={"ref": f"refs/heads/{branch}", "sha": sha},
            )
        return Commit(sha=sha, branch=branch, changed=tuple(c.path for c in changes))
