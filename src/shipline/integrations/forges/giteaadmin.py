"""What `shipline demo` asks of a Gitea beyond the `Forge` interface: organisations and repositories.

Creating and deleting repositories is an administrator's job, not something a
pipeline or a notifier does, so it stays out of `Forge`.  The token needs the
`write:organization` and `write:repository` scopes (the testbed's admin token
has every scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shipline.integrations.forges.base import PullRequest
from shipline.integrations.forges.calling import field, text
from shipline.integrations.forges.gitea import gitea_http
from shipline.integrations.forges.shared import pull_request_of

PAGE = 50


@dataclass(frozen=True)
class GiteaRepository:
    owner: str
    name: str
    html_url: str
    """The repository's page; also the URL shipline registers (any spelling of the clone URL matches)."""
    clone_url: str
    created: bool
    """False when it was there already."""


@dataclass(frozen=True)
class Promotion:
    """A pull request as the demo follows it: the forge's view plus the merge commit."""

    pull: PullRequest
    merge_sha: str


class GiteaAdmin:
    def __init__(self, url: str, token: str, *, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.http = gitea_http(self.url, token, "the write:organization and write:repository scopes", timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GiteaAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _repo(owner: str, name: str) -> str:
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def ensure_org(self, org: str) -> bool:
        """The organisation, made public if missing; whether it was made now."""
        found = self.http.call("GET", f"/orgs/{quote(org, safe='')}", f"read organisation {org}", ok=(404,))
        if found.status_code != 404:
            return False
        self.http.json("POST", "/orgs", f"create organisation {org}", body={"username": org, "visibility": "public"})
        return True

    def repository(self, owner: str, name: str) -> GiteaRepository | None:
        found = self.http.call("GET", self._repo(owner, name), f"read repository {owner}/{name}", ok=(404,))
        if found.status_code == 404:
            return None
        return _repository(found.json(), created=False)

    def ensure_repo(self, org: str, name: str, description: str = "") -> GiteaRepository:
        """Repository ORG/NAME with `main` as its default branch, empty when made now."""
        existing = self.repository(org, name)
        if existing is not None:
            return existing
        data = self.http.json(
            "POST",
            f"/orgs/{quote(org, safe='')}/repos",
            f"create repository {org}/{name}",
            body={"name": name, "default_branch": "main", "auto_init": False, "description": description},
        )
        return _repository(data, created=True)

    def delete_repo(self, owner: str, name: str) -> bool:
        """Delete OWNER/NAME with everything in it; whether it was there."""
        gone = self.http.call("DELETE", self._repo(owner, name), f"delete repository {owner}/{name}", ok=(404,))
        return gone.status_code != 404

    def delete_hooks(self, owner: str, name: str, path: str) -> int:
        """Delete the repository's webhooks whose URL ends with `path`; how many.

        Gitea keeps a hook's secret when the hook is edited (1.26 reads only `url` and
        `content_type` from an edit), so a new secret needs a new hook."""
        hooks = self.http.json("GET", f"{self._repo(owner, name)}/hooks", f"list the webhooks of {owner}/{name}")
        gone = 0
        for hook in hooks if isinstance(hooks, list) else []:
            if text(hook, "config", "url").endswith(path):
                self.http.call(
                    "DELETE", f"{self._repo(owner, name)}/hooks/{text(hook, 'id')}", f"delete a webhook of {owner}/{name}"
                )
                gone += 1
        return gone

    def commit_status(self, owner: str, name: str, sha: str, context: str) -> str:
        """The newest state (pending, success, failure, error) of `context` on a commit; "" when it has none."""
        data = self.http.json(
            "GET", f"{self._repo(owner, name)}/commits/{quote(sha, safe='')}/status", f"read the statuses of {sha[:12]}"
        )
        for item in field(data, "statuses") or []:
            if text(item, "context") == context:
                return text(item, "status")
        return ""

    def pull_requests(self, owner: str, name: str) -> list[Promotion]:
        """Every pull request of OWNER/NAME (open and closed), newest first."""
        out: list[Promotion] = []
        for page in range(1, 21):
            items = self.http.json(
                "GET",
                f"{self._repo(owner, name)}/pulls",
                f"list the pull requests of {owner}/{name}",
                params={"state": "all", "sort": "newest", "page": page, "limit": PAGE},
            )
            if not isinstance(items, list) or not items:
                break
            out += [Promotion(pull_request_of(item), text(item, "merge_commit_sha")) for item in items]
            if len(items) < PAGE:
                break
        return sorted(out, key=lambda p: -p.pull.number)


def _repository(data: Any, *, created: bool) -> GiteaRepository:
    return GiteaRepository(
        owner=text(data, "owner", "login") or text(data, "owner", "username"),
        name=text(data, "name"),
        html_url=text(data, "html_url"),
        clone_url=text(data, "clone_url"),
        created=created and field(data, "id") is not None,
    )
