"""Forges (Gitea, GitHub): pull requests, commit statuses, webhooks, files, behind one interface.

    forge = connect(settings, "gitea")
    pr = forge.find_pull_request(repo_ref(url), "shipline/promote-hello") or forge.open_pull_request(...)
    forge.set_status(ref, sha, state=CommitState.PENDING, context="shipline/hello", target_url=...)

`connect` picks the adapter and its token from the settings; callers hold a
`Forge` and never see a payload.
"""

from __future__ import annotations

from shipline.exceptions import UsageError
from shipline.integrations.forges.base import (
    BranchProtection,
    Commit,
    CommitState,
    CommitStatus,
    FileChange,
    Forge,
    Hook,
    MergeResult,
    PullRequest,
    RepoRef,
    repo_ref,
)
from shipline.settings import Settings

__all__ = [
    "BranchProtection", "Commit", "CommitState", "CommitStatus", "FileChange", "Forge", "Hook", "MergeResult",
    "PullRequest", "RepoRef", "connect", "repo_ref",
]

SUPPORTED = ("gitea", "github")


def connect(settings: Settings, kind: str) -> Forge:
    """The adapter for forge `kind` with the token from settings; UsageError naming the missing setting."""
    if kind == "gitea":
        from shipline.integrations.forges.gitea import GiteaForge

        if not settings.gitea_url or settings.gitea_token is None:
            missing = " and ".join(
                n for n, v in (("SHIPLINE_GITEA_URL", settings.gitea_url), ("SHIPLINE_GITEA_TOKEN", settings.gitea_token)) if not v
            )
            raise UsageError(f"talking to Gitea needs {missing} (a token with write:repository and write:issue scopes)")
        return GiteaForge(settings.gitea_url, settings.gitea_token.get_secret_value(), timeout=settings.forge_timeout_seconds)
    if kind == "github":
        from shipline.integrations.forges.github import GitHubForge

        if settings.github_token is None:
            raise UsageError("talking to GitHub needs SHIPLINE_GITHUB_TOKEN (scopes: repo, admin:repo_hook)")
        return GitHubForge(
            settings.github_token.get_secret_value(), api_url=settings.github_api_url, timeout=settings.forge_timeout_seconds
        )
    raise UsageError(f"shipline has no API adapter for forge {kind!r} (it has: {', '.join(SUPPORTED)})")


def has_token(settings: Settings, kind: str) -> bool:
    """Whether `connect(settings, kind)` would have what it needs."""
    if kind == "gitea":
        return bool(settings.gitea_url) and settings.gitea_token is not None
    if kind == "github":
        return settings.github_token is not None
    return False
