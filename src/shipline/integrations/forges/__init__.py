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
    host_of,
    repo_ref,
)
from shipline.settings import Settings

__all__ = [
    "BranchProtection",
    "Commit",
    "CommitState",
    "CommitStatus",
    "FileChange",
    "Forge",
    "Hook",
    "MergeResult",
    "PullRequest",
    "RepoRef",
    "connect",
    "forge_host",
    "has_token",
    "host_of",
    "repo_ref",
    "serves",
]

SUPPORTED = ("gitea", "github")


def connect(settings: Settings, kind: str) -> Forge:
    """The adapter for forge `kind` with the token from settings; UsageError naming the missing setting."""
    if kind == "gitea":
        from shipline.integrations.forges.gitea import GiteaForge

        if not settings.gitea_url or settings.gitea_token is None:
            missing = " and ".join(
                n
                for n, v in (("SHIPLINE_GITEA_URL", settings.gitea_url), ("SHIPLINE_GITEA_TOKEN", settings.gitea_token))
                if not v
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


def forge_host(settings: Settings, kind: str) -> str:
    """The host whose repositories the configured token is for ("" when none is configured)."""
    if kind == "gitea":
        return host_of(settings.gitea_url or "")
    if kind == "github":
        api = host_of(settings.github_api_url)
        return "github.com" if api == "api.github.com" else api
    return ""


def serves(settings: Settings, kind: str, url: str) -> bool:
    """Whether shipline has a token for the forge that hosts `url` (the token of another host is no use there)."""
    return has_token(settings, kind) and host_of(url) == forge_host(settings, kind) != ""
