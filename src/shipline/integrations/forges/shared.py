"""What Gitea's API and GitHub's have in common: Gitea's repository and pull-request
endpoints follow GitHub's, so both adapters read and write pull requests through here.
Where they differ (pages, merge, statuses, hooks, protection) each adapter has its own."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shipline.integrations.forges.base import CommitState, CommitStatus, Hook, PullRequest, RepoRef
from shipline.integrations.forges.calling import ForgeHttp, field, text


def pull_request_of(data: Any) -> PullRequest:
    mergeable = field(data, "mergeable")
    return PullRequest(
        number=int(field(data, "number") or 0),
        title=text(data, "title"),
        body=text(data, "body"),
        head=text(data, "head", "ref"),
        base=text(data, "base", "ref"),
        head_sha=text(data, "head", "sha"),
        state=text(data, "state"),
        # GitHub lists say `merged_at` only; a single pull request says `merged` too (Gitea: always).
        merged=field(data, "merged") is True or bool(text(data, "merged_at")),
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        url=text(data, "html_url"),
    )


def file_path(path: str) -> str:
    """A path inside a repository, for a `/contents/PATH` URL."""
    return quote(path.lstrip("/"), safe="/")


class GitHubStyleForge:
    """Pull requests and webhooks as both forges' APIs read and write them."""

    http: ForgeHttp
    hook_events: tuple[str, ...]
    """The events a registered webhook sends."""
    hook_config: dict[str, str] = {}
    """Config fields of this forge's hooks beyond url, content type and secret."""
    hook_create: dict[str, str] = {}
    """Fields a new hook needs on this forge (its type or name)."""
    hook_secret_editable: bool = True
    """Whether editing a hook can change its secret (Gitea 1.26's `editHook` ignores `config.secret`)."""
    page_size: int
    page_size_param: str
    """The query parameter that sets how many items a page holds (`limit` on Gitea, `per_page` on GitHub)."""
    max_pages: int
    """Pages read of one listing at the most."""

    def close(self) -> None:
        self.http.close()

    def _pages(self, path: str, what: str, params: dict[str, str | int] | None = None) -> list[Any]:
        """Every item of a listing, page by page (`max_pages` at the most)."""
        out: list[Any] = []
        for page in range(1, self.max_pages + 1):
            items = self.http.json(
                "GET", path, what, params={**(params or {}), self.page_size_param: self.page_size, "page": page}
            )
            if not isinstance(items, list) or not items:
                break
            out.extend(items)
            if len(items) < self.page_size:
                break
        return out

    def ensure_webhook(self, repo: RepoRef, *, url: str, secret: str, events: tuple[str, ...] = ()) -> Hook:
        """The repository's hook to `url`, registered once: an existing one is updated, never doubled."""
        body = {
            "config": {"url": url, "content_type": "json", "secret": secret, **self.hook_config},
            "events": list(events or self.hook_events),
            "active": True,
        }
        hooks = f"{self._repo(repo)}/hooks"
        existing = next((h for h in self._pages(hooks, f"list the webhooks of {repo}") if text(h, "config", "url") == url), None)
        if existing is not None and self.hook_secret_editable:
            # A forge never shows a hook's secret: set it again so the hook and shipline agree.
            data = self.http.json(
                "PATCH", f"{hooks}/{field(existing, 'id')}", f"update the webhook to {url} on {repo}", body=body
            )
            return _hook(data, created=False)
        if existing is not None:
            # Where an edit cannot set the secret, the hook is replaced: still one hook for the URL.
            self.http.call("DELETE", f"{hooks}/{field(existing, 'id')}", f"replace the webhook to {url} on {repo}", ok=(404,))
        data = self.http.json("POST", hooks, f"register a webhook to {url} on {repo}", body={**self.hook_create, **body})
        return _hook(data, created=existing is None)

    def _repo(self, repo: RepoRef) -> str:
        return f"/repos/{quote(repo.owner, safe='')}/{quote(repo.name, safe='')}"

    def default_branch(self, repo: RepoRef) -> str:
        return text(self.http.json("GET", self._repo(repo), f"read repository {repo}"), "default_branch") or "main"

    def pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        return pull_request_of(
            self.http.json("GET", f"{self._repo(repo)}/pulls/{number}", f"read pull request #{number} of {repo}")
        )

    def open_pull_request(self, repo: RepoRef, *, head: str, base: str, title: str, body: str) -> PullRequest:
        data = self.http.json(
            "POST",
            f"{self._repo(repo)}/pulls",
            f"open a pull request {head} -> {base} on {repo}",
            body={"title": title, "head": head, "base": base, "body": body},
        )
        return pull_request_of(data)

    def update_pull_request(
        self, repo: RepoRef, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest:
        change = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        data = self.http.json(
            "PATCH", f"{self._repo(repo)}/pulls/{number}", f"update pull request #{number} of {repo}", body=change
        )
        return pull_request_of(data)

    def close_pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        data = self.http.json(
            "PATCH", f"{self._repo(repo)}/pulls/{number}", f"close pull request #{number} of {repo}", body={"state": "closed"}
        )
        return pull_request_of(data)

    # --- comments (both forges: the issue-comment endpoints) ------------------------------

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        data = self.http.json(
            "POST",
            f"{self._repo(repo)}/issues/{number}/comments",
            f"comment on pull request #{number} of {repo}",
            body={"body": body},
        )
        return int(field(data, "id") or 0)

    def update_comment(self, repo: RepoRef, comment_id: int, body: str) -> bool:
        response = self.http.call(
            "PATCH",
            f"{self._repo(repo)}/issues/comments/{int(comment_id)}",
            f"edit comment {comment_id} on {repo}",
            body={"body": body},
            ok=(404,),
        )
        return response.status_code != 404

    def find_comment(self, repo: RepoRef, number: int, marker: str) -> int | None:
        comments = self._pages(f"{self._repo(repo)}/issues/{int(number)}/comments", f"list the comments of #{number} of {repo}")
        for item in comments:
            if marker in text(item, "body"):
                return int(field(item, "id") or 0) or None
        return None

    # --- commit statuses ----------------------------------------------------------------

    def statuses(self, repo: RepoRef, sha: str) -> list[CommitStatus]:
        data = self.http.json(
            "GET", f"{self._repo(repo)}/commits/{quote(sha, safe='')}/status", f"read the statuses of {sha[:12]} of {repo}"
        )
        return [
            # Gitea names an item's state `status`, GitHub `state`.
            CommitStatus(
                text(s, "context"),
                CommitState(text(s, "status") or text(s, "state")),
                text(s, "description"),
                text(s, "target_url"),
            )
            for s in field(data, "statuses") or []
        ]


def _hook(data: Any, *, created: bool) -> Hook:
    return Hook(
        id=int(field(data, "id") or 0),
        url=text(data, "config", "url"),
        events=tuple(str(e) for e in field(data, "events") or []),
        active=field(data, "active") is True,
        created=created,
    )
