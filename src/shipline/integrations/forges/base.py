"""The one interface shipline has to a forge, and the plain values it speaks in.

A forge hosts repositories and their pull requests.  shipline asks it for
little: pull requests (open, update, find, merge, close, comment), commit
statuses, branch protection, webhooks, a file at a commit, and a commit of
changed files on a branch.  Each adapter (Gitea, GitHub) turns these calls
into its REST API and its answers back into these values; callers never see
a raw payload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol
from urllib.parse import urlsplit

from shipline.exceptions import UsageError


class CommitState(StrEnum):
    """A commit status's state, as both Gitea and GitHub name them."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True)
class RepoRef:
    """`owner/name` of a repository on a forge."""

    owner: str
    name: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"


_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def repo_ref(url: str) -> RepoRef:
    """The repository a clone or web URL names: the last two path parts, without `.git`.

    `https://gitea.example/team/app.git`, `git@github.com:team/app` and
    `http://127.0.0.1:3000/team/app` all name `team/app`.
    """
    scp = re.match(r"^[\w.-]+@[\w.-]+:(?!//)(.*)$", url.strip())
    path = scp.group(1) if scp else urlsplit(url.strip()).path
    parts = [p for p in path.removesuffix("/").removesuffix(".git").split("/") if p]
    if len(parts) < 2 or not all(_SEGMENT.match(p) and p not in (".", "..") for p in parts[-2:]):
        raise UsageError(f"{url!r} does not name a repository as OWNER/NAME (e.g. https://forge.example/team/app.git)")
    return RepoRef(parts[-2], parts[-1])


def host_of(url: str) -> str:
    """The host name a clone, web or API URL points at, in lower case ("" for a path)."""
    scp = re.match(r"^[\w.-]+@([\w.-]+):(?!//)", url.strip())
    if scp:
        return scp.group(1).lower()
    return (urlsplit(url.strip()).hostname or "").lower()


@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    body: str
    head: str
    """The branch the changes come from."""
    base: str
    """The branch they are merged into."""
    head_sha: str
    state: str
    """`open` or `closed`."""
    merged: bool
    mergeable: bool | None
    """Whether it merges without conflicts; None while the forge has not worked it out yet (GitHub computes
    it lazily).  Required checks are apart from it: see `statuses` and `branch_protection`, or just merge and
    read `MergeResult.reason`."""
    url: str
    """The pull request's page, for people."""


@dataclass(frozen=True)
class MergeResult:
    """A merge that the forge refused (checks failing, conflicts, branch protection) is not an error: it says why."""

    merged: bool
    sha: str = ""
    reason: str = ""


@dataclass(frozen=True)
class CommitStatus:
    context: str
    state: CommitState
    description: str
    target_url: str


@dataclass(frozen=True)
class BranchProtection:
    branch: str
    required_contexts: tuple[str, ...] = ()
    """Commit-status contexts that must be `success` before a merge."""
    required_approvals: int = 0


@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    events: tuple[str, ...]
    active: bool
    created: bool = False
    """True when this call made it; False when an existing hook for the URL was kept (and brought up to date)."""


@dataclass(frozen=True)
class FileChange:
    """One file of a commit: new contents, or None to delete it."""

    path: str
    content: bytes | None


@dataclass(frozen=True)
class Commit:
    sha: str
    branch: str
    changed: tuple[str, ...] = field(default_factory=tuple)


class Forge(Protocol):
    """What shipline asks of a forge.  Every method raises ForgeError when the forge refuses or cannot be reached."""

    kind: str
    """`gitea` or `github`."""

    def close(self) -> None:
        """Let go of the connections."""
        ...

    def default_branch(self, repo: RepoRef) -> str: ...

    def find_pull_request(self, repo: RepoRef, head: str) -> PullRequest | None:
        """The open pull request from branch `head`, if there is one."""
        ...

    def pull_request(self, repo: RepoRef, number: int) -> PullRequest: ...

    def open_pull_request(self, repo: RepoRef, *, head: str, base: str, title: str, body: str) -> PullRequest: ...

    def update_pull_request(
        self, repo: RepoRef, number: int, *, title: str | None = None, body: str | None = None
    ) -> PullRequest: ...

    def merge_pull_request(self, repo: RepoRef, number: int, *, method: str = "merge", message: str = "") -> MergeResult:
        """Merge it, or say why the forge refused (failing checks, conflicts, protection)."""
        ...

    def close_pull_request(self, repo: RepoRef, number: int) -> PullRequest: ...

    def comment(self, repo: RepoRef, number: int, body: str) -> int:
        """Add a comment to a pull request; returns the comment's id."""
        ...

    def update_comment(self, repo: RepoRef, comment_id: int, body: str) -> bool:
        """Replace a comment's text; False when the comment is gone (deleted by someone)."""
        ...

    def find_comment(self, repo: RepoRef, number: int, marker: str) -> int | None:
        """The id of the first comment on a pull request whose text contains `marker`, if any."""
        ...

    def set_status(
        self, repo: RepoRef, sha: str, *, state: CommitState, context: str, description: str = "", target_url: str = ""
    ) -> None: ...

    def statuses(self, repo: RepoRef, sha: str) -> list[CommitStatus]:
        """The latest status of each context on a commit."""
        ...

    def branch_protection(self, repo: RepoRef, branch: str) -> BranchProtection | None:
        """What must hold before a merge into `branch`; None when it is not protected."""
        ...

    def ensure_webhook(self, repo: RepoRef, *, url: str, secret: str, events: tuple[str, ...] = ()) -> Hook:
        """A webhook to `url` with this secret: made if missing, else updated; never a second one for the URL.

        `events` in the forge's own names; empty means what shipline listens to (pushes, tags, pull requests)."""
        ...

    def read_file(self, repo: RepoRef, path: str, ref: str) -> bytes | None:
        """A file's bytes at a commit, branch or tag; None when the file does not exist there."""
        ...

    def commit_files(self, repo: RepoRef, *, branch: str, base: str, message: str, changes: list[FileChange]) -> Commit:
        """One commit with these changes on `branch`, made from `base` when the branch does not exist yet."""
        ...
