"""Forge payloads -> `ForgeEvent`: one function per forge, no I/O.

The shapes follow what each forge actually sends:
GitHub (`X-GitHub-Event: push | pull_request | ping`), Gitea
(`X-Gitea-Event: push | create | pull_request | delete`, with a GitHub-like
body) and GitLab (`X-Gitlab-Event: Push Hook | Tag Push Hook | Merge Request Hook`).
A payload that is not what its event header promises is a `UsageError` (HTTP 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from shipline.exceptions import UsageError
from shipline.triggers.events import ZERO_SHA, EventKind, Forge, ForgeEvent, PullRequestAction

MAX_DEPTH = 32
"""Forges' payloads nest a handful of levels; deeper JSON is refused (400), not followed."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON object a webhook carries (also form-encoded `payload=` is not accepted: configure JSON)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"webhook body is not JSON ({exc}); set the hook's content type to application/json") from exc
    except RecursionError as exc:
        raise UsageError(f"webhook body nests deeper than {MAX_DEPTH} levels; no forge sends that") from exc
    if not isinstance(data, dict):
        raise UsageError("webhook body is JSON but not an object; is this a forge webhook?")
    if json_depth(data) > MAX_DEPTH:
        raise UsageError(f"webhook body nests deeper than {MAX_DEPTH} levels; no forge sends that")
    return data


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(obj: Any, *path: str) -> str:
    value = _get(obj, *path)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def _int(obj: Any, *path: str) -> int | None:
    value = _get(obj, *path)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _urls(repo: Any, *keys: str) -> tuple[str, ...]:
    return tuple(u for u in (_text(repo, k) for k in keys) if u)


def _changed_paths(commits: Any) -> tuple[tuple[str, ...], bool]:
    """Files touched by a push's commits; (paths, whether the list can be trusted to be whole)."""
    if not isinstance(commits, list) or not commits:
        return (), False
    paths: list[str] = []
    for commit in commits:
        for key in ("added", "modified", "removed"):
            files = _get(commit, key)
            if not isinstance(files, list):
                return (), False
            paths.extend(f for f in files if isinstance(f, str))
    # Forges cap the commit list (GitHub 20, GitLab 20, Gitea 5 by default); past the cap the list is partial.
    return tuple(dict.fromkeys(paths)), True


def _ref_event(
    forge: Forge,
    ref: str,
    before: str,
    after: str,
    base: dict[str, Any],
    commits: Any,
    *,
    truncated: bool,
) -> ForgeEvent:
    if ref.startswith("refs/tags/"):
        kind, branch, tag = EventKind.TAG, "", ref[len("refs/tags/") :]
    elif ref.startswith("refs/heads/"):
        kind, branch, tag = EventKind.PUSH, ref[len("refs/heads/") :], ""
    else:
        raise UsageError(f"push event names ref {ref!r}, which is neither refs/heads/* nor refs/tags/*")
    if after == ZERO_SHA or not after:
        kind = EventKind.DELETE
    paths, known = _changed_paths(commits)
    return ForgeEvent(
        forge=forge.value,
        kind=kind,
        branch=branch,
        tag=tag,
        sha=after,
        before=before,
        paths=paths,
        paths_known=known and not truncated,
        **base,
    )


# --- GitHub ---------------------------------------------------------------------------

_GITHUB_PR_ACTIONS = {
    "opened": PullRequestAction.OPENED,
    "synchronize": PullRequestAction.SYNCHRONIZED,
    "reopened": PullRequestAction.REOPENED,
    "closed": PullRequestAction.CLOSED,
}


def _github_like_repo(payload: Mapping[str, Any]) -> dict[str, Any]:
    repo = payload.get("repository")
    if not isinstance(repo, Mapping):
        raise UsageError("webhook payload has no `repository` object; is this a repository webhook?")
    return {
        "repo_urls": _urls(repo, "html_url", "clone_url", "ssh_url", "git_url", "url"),
        "repo_name": _text(repo, "full_name"),
        "default_branch": _text(repo, "default_branch"),
        "sender": _text(payload, "sender", "login") or _text(payload, "pusher", "name"),
    }


def parse_github(event: str, payload: Mapping[str, Any]) -> ForgeEvent:
    """A GitHub delivery: `event` is the `X-GitHub-Event` header."""
    if event == "ping":
        repo = payload.get("repository")
        base = _github_like_repo(payload) if isinstance(repo, Mapping) else {}
        return ForgeEvent(forge=Forge.GITHUB.value, kind=EventKind.PING, **base)
    if event == "push":
        base = _github_like_repo(payload)
        commits = payload.get("commits")
        # GitHub lists at most 20 commits; a longer push has a partial list.
        truncated = isinstance(commits, list) and len(commits) >= 20
        ev = _ref_event(
            Forge.GITHUB,
            _text(payload, "ref"),
            _text(payload, "before"),
            _text(payload, "after"),
            base,
            commits,
            truncated=truncated,
        )
        return _with_message(ev, _text(payload, "head_commit", "message"))
    if event == "pull_request":
        return _github_like_pr(Forge.GITHUB, payload, _GITHUB_PR_ACTIONS)
    return ForgeEvent(forge=Forge.GITHUB.value, kind=EventKind.OTHER, extra={"event": event[:100]})


def _with_message(ev: ForgeEvent, message: str) -> ForgeEvent:
    return replace(ev, message=message)


def _github_like_pr(forge: Forge, payload: Mapping[str, Any], actions: Mapping[str, PullRequestAction]) -> ForgeEvent:
    base = _github_like_repo(payload)
    pr = payload.get("pull_request")
    if not isinstance(pr, Mapping):
        raise UsageError("pull_request event without a `pull_request` object")
    action = actions.get(_text(payload, "action"), PullRequestAction.OTHER)
    # A head repository that differs from the base, or is gone (a deleted fork: `repo: null`), is a fork.
    head_repo = _text(pr, "head", "repo", "full_name")
    base_repo = _text(pr, "base", "repo", "full_name") or _text(payload, "repository", "full_name")
    head_id, base_id = _int(pr, "head", "repo_id"), _int(pr, "base", "repo_id")
    if head_repo:
        from_fork = head_repo.lower() != base_repo.lower()
    elif head_id is not None and base_id is not None:
        from_fork = head_id != base_id
    else:
        head = _get(pr, "head")
        from_fork = isinstance(head, Mapping) and "repo" in head and head["repo"] is None
    return ForgeEvent(
        forge=forge.value,
        kind=EventKind.PULL_REQUEST,
        branch=_text(pr, "head", "ref"),
        sha=_text(pr, "head", "sha"),
        base_branch=_text(pr, "base", "ref"),
        pr_number=_int(pr, "number") or _int(payload, "number"),
        pr_action=action,
        pr_title=_text(pr, "title"),
        pr_merged=_get(pr, "merged") is True,
        pr_from_fork=from_fork,
        message=_text(pr, "title"),
        **base,
    )


# --- Gitea ----------------------------------------------------------------------------

_GITEA_PR_ACTIONS = {
    "opened": PullRequestAction.OPENED,
    "synchronized": PullRequestAction.SYNCHRONIZED,
    "reopened": PullRequestAction.REOPENED,
    "closed": PullRequestAction.CLOSED,
}


def parse_gitea(event: str, payload: Mapping[str, Any]) -> ForgeEvent:
    """A Gitea delivery: `event` is the `X-Gitea-Event` header."""
    if event == "push":
        base = _github_like_repo(payload)
        commits = payload.get("commits")
        total = _int(payload, "total_commits")
        truncated = isinstance(commits, list) and total is not None and total > len(commits)
        ev = _ref_event(
            Forge.GITEA,
            _text(payload, "ref"),
            _text(payload, "before"),
            _text(payload, "after"),
            base,
            commits,
            truncated=truncated,
        )
        return _with_message(ev, _text(payload, "head_commit", "message"))
    if event in ("pull_request", "pull_request_sync"):
        return _github_like_pr(Forge.GITEA, payload, _GITEA_PR_ACTIONS)
    if event == "ping":
        return ForgeEvent(forge=Forge.GITEA.value, kind=EventKind.PING)
    return ForgeEvent(forge=Forge.GITEA.value, kind=EventKind.OTHER, extra={"event": event[:100]})


# --- GitLab ---------------------------------------------------------------------------

_GITLAB_MR_ACTIONS = {
    "open": PullRequestAction.OPENED,
    "reopen": PullRequestAction.REOPENED,
    "close": PullRequestAction.CLOSED,
    "merge": PullRequestAction.CLOSED,
}


def _gitlab_project(payload: Mapping[str, Any]) -> dict[str, Any]:
    project = payload.get("project")
    if not isinstance(project, Mapping):
        raise UsageError("GitLab payload has no `project` object; is this a project webhook?")
    return {
        "repo_urls": _urls(project, "web_url", "git_http_url", "git_ssh_url", "http_url", "ssh_url"),
        "repo_name": _text(project, "path_with_namespace"),
        "default_branch": _text(project, "default_branch"),
        "sender": _text(payload, "user_username") or _text(payload, "user", "username"),
    }


def parse_gitlab(event: str, payload: Mapping[str, Any]) -> ForgeEvent:
    """A GitLab delivery: `event` is the `X-Gitlab-Event` header (e.g. `Push Hook`)."""
    kind = _text(payload, "object_kind")
    if event in ("Push Hook", "Tag Push Hook") or kind in ("push", "tag_push"):
        base = _gitlab_project(payload)
        commits = payload.get("commits")
        total = _int(payload, "total_commits_count")
        truncated = isinstance(commits, list) and total is not None and total > len(commits)
        ev = _ref_event(
            Forge.GITLAB,
            _text(payload, "ref"),
            _text(payload, "before"),
            _text(payload, "checkout_sha") or _text(payload, "after"),
            base,
            commits,
            truncated=truncated,
        )
        if _text(payload, "after") == ZERO_SHA:
            ev = replace(ev, kind=EventKind.DELETE)
        message = ""
        if isinstance(commits, list) and commits:
            message = _text(commits[-1], "message")
        return _with_message(ev, message)
    if event == "Merge Request Hook" or kind == "merge_request":
        base = _gitlab_project(payload)
        attrs = payload.get("object_attributes")
        if not isinstance(attrs, Mapping):
            raise UsageError("GitLab merge request event without `object_attributes`")
        raw = _text(attrs, "action")
        action = _GITLAB_MR_ACTIONS.get(raw, PullRequestAction.OTHER)
        # `update` is both "new commits" (it then carries `oldrev`) and "title edited".
        if raw == "update" and _get(attrs, "oldrev"):
            action = PullRequestAction.SYNCHRONIZED
        return ForgeEvent(
            forge=Forge.GITLAB.value,
            kind=EventKind.PULL_REQUEST,
            branch=_text(attrs, "source_branch"),
            sha=_text(attrs, "last_commit", "id"),
            base_branch=_text(attrs, "target_branch"),
            pr_number=_int(attrs, "iid"),
            pr_action=action,
            pr_title=_text(attrs, "title"),
            pr_merged=raw == "merge",
            pr_from_fork=_int(attrs, "source_project_id") != _int(attrs, "target_project_id"),
            message=_text(attrs, "title"),
            **base,
        )
    return ForgeEvent(forge=Forge.GITLAB.value, kind=EventKind.OTHER, extra={"event": event[:100]})


PARSERS = {Forge.GITHUB: parse_github, Forge.GITEA: parse_gitea, Forge.GITLAB: parse_gitlab}
