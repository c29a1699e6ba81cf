"""The one shape every forge's notification is turned into.

Webhook payloads differ per forge (GitHub, Gitea, GitLab) and a poller or a
clock can start runs too; rule matching and the server only ever see a
`ForgeEvent`.  Every field is data from outside: it may be hostile and is
never pasted into a command or used as a path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Forge(StrEnum):
    GITHUB = "github"
    GITEA = "gitea"
    GITLAB = "gitlab"


class EventKind(StrEnum):
    PUSH = "push"
    """Commits pushed to a branch (or a branch created)."""
    TAG = "tag"
    """A tag pushed."""
    PULL_REQUEST = "pull_request"
    DELETE = "delete"
    """A branch or tag deleted; starts nothing by default."""
    SCHEDULE = "schedule"
    """A cron schedule came due."""
    PING = "ping"
    """The forge checking that the hook works; answered, starts nothing."""
    OTHER = "other"
    """Anything else the forge sends (issues, comments, ...); ignored."""


class PullRequestAction(StrEnum):
    OPENED = "opened"
    SYNCHRONIZED = "synchronized"
    REOPENED = "reopened"
    CLOSED = "closed"
    OTHER = "other"


ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class ForgeEvent:
    """What happened in a repository, normalised across forges."""

    forge: str
    """`github`, `gitea`, `gitlab`, or `poll` / `cron` for events shipline made itself."""
    kind: EventKind
    repo_urls: tuple[str, ...] = ()
    """Every URL the payload gives for the repository (web, clone, ssh); used to find its registration."""
    repo_name: str = ""
    """`owner/name` (GitHub, Gitea) or `group/project` (GitLab)."""
    default_branch: str = ""
    branch: str = ""
    """Push: the branch pushed.  Pull request: its head (source) branch."""
    tag: str = ""
    sha: str = ""
    """The commit to build: the pushed head, or the pull request's head."""
    before: str = ""
    paths: tuple[str, ...] = ()
    """Files added, modified or removed by the pushed commits."""
    paths_known: bool = False
    """False when the payload does not list changed files (pull requests, large pushes, polls)."""
    pr_number: int | None = None
    pr_action: PullRequestAction | None = None
    pr_title: str = ""
    pr_merged: bool = False
    base_branch: str = ""
    """Pull request: the branch it merges into."""
    pr_from_fork: bool = False
    """Pull request: its head lives in another repository (a fork), whose author may be anyone.
    Its runs get no secrets, and its pipeline file is the fork's."""
    sender: str = ""
    message: str = ""
    """The head commit's message, or the pull request's title."""
    extra: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """A JSON-friendly description, stored with the run as its trigger."""
        out: dict[str, object] = {"forge": self.forge, "event": self.kind.value, "repository": self.repo_name}
        for key in ("branch", "tag", "sha", "base_branch", "sender"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.pr_number is not None:
            out["pr_number"] = self.pr_number
            out["pr_action"] = self.pr_action.value if self.pr_action else ""
            out["pr_title"] = self.pr_title
            if self.pr_from_fork:
                out["fork"] = True
        if self.message:
            out["message"] = self.message[:500]
        return out
