"""Forge payloads (shapes as each forge sends them) become the same typed event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipline.exceptions import UsageError
from shipline.triggers.events import EventKind, PullRequestAction
from shipline.triggers.parsing import decode, parse_gitea, parse_github, parse_gitlab

PAYLOADS = Path(__file__).parent / "payloads"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def test_github_push() -> None:
    ev = parse_github("push", load("github_push.json"))
    assert ev.kind is EventKind.PUSH
    assert ev.branch == "main" and ev.default_branch == "main"
    assert ev.sha == "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
    assert "https://github.com/baxterthehacker/public-repo.git" in ev.repo_urls
    assert ev.repo_name == "baxterthehacker/public-repo"
    assert ev.paths == ("README.md",) and ev.paths_known
    assert ev.message == "Update README.md"


def test_github_tag_and_delete() -> None:
    payload = load("github_push.json") | {"ref": "refs/tags/v1.2.0"}
    ev = parse_github("push", payload)
    assert ev.kind is EventKind.TAG and ev.tag == "v1.2.0" and ev.branch == ""
    deleted = parse_github("push", load("github_push.json") | {"after": "0" * 40, "deleted": True})
    assert deleted.kind is EventKind.DELETE


def test_github_pull_request_and_ping() -> None:
    ev = parse_github("pull_request", load("github_pull_request.json"))
    assert ev.kind is EventKind.PULL_REQUEST
    assert ev.pr_action is PullRequestAction.SYNCHRONIZED
    assert (ev.branch, ev.base_branch, ev.pr_number) == ("changes", "main", 1)
    assert ev.pr_title.startswith("Update the README")
    assert not ev.paths_known
    assert parse_github("ping", load("github_ping.json")).kind is EventKind.PING
    assert parse_github("issues", {"action": "opened"}).kind is EventKind.OTHER


def test_gitea_push_and_pull_request() -> None:
    ev = parse_gitea("push", load("gitea_push.json"))
    assert ev.kind is EventKind.PUSH and ev.branch == "develop" and ev.default_branch == "master"
    assert set(ev.paths) == {"src/new.py", "docs/index.md"} and ev.paths_known
    assert "http://localhost:3000/gitea/webhooks.git" in ev.repo_urls
    pr = parse_gitea("pull_request", load("gitea_pull_request.json"))
    assert pr.pr_action is PullRequestAction.SYNCHRONIZED and pr.branch == "feature/x" and pr.base_branch == "master"


def test_gitlab_push_tag_and_merge_request() -> None:
    ev = parse_gitlab("Push Hook", load("gitlab_push.json"))
    assert ev.kind is EventKind.PUSH and ev.branch == "master" and ev.sender == "jsmith"
    assert "http://example.com/mike/diaspora.git" in ev.repo_urls and ev.repo_name == "mike/diaspora"
    # 4 commits pushed, 2 listed: the file list is partial, so path filters cannot be trusted.
    assert not ev.paths_known
    tag = parse_gitlab("Tag Push Hook", load("gitlab_tag_push.json"))
    assert tag.kind is EventKind.TAG and tag.tag == "v1.0.0" and tag.sha.startswith("82b3d5")
    mr = parse_gitlab("Merge Request Hook", load("gitlab_merge_request.json"))
    assert mr.kind is EventKind.PULL_REQUEST and mr.pr_action is PullRequestAction.SYNCHRONIZED
    assert (mr.branch, mr.base_branch, mr.pr_number) == ("ms-viewport", "master", 1)
    edited = load("gitlab_merge_request.json")
    del edited["object_attributes"]["oldrev"]
    assert parse_gitlab("Merge Request Hook", edited).pr_action is PullRequestAction.OTHER


def test_bad_payloads_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not JSON"):
        decode(b"payload=%7B%7D")
    with pytest.raises(UsageError, match="not an object"):
        decode(b"[1]")
    with pytest.raises(UsageError, match="repository"):
        parse_github("push", {"ref": "refs/heads/main"})
    with pytest.raises(UsageError, match="refs/heads"):
        parse_github("push", load("github_push.json") | {"ref": "refs/notes/x"})


def test_hostile_values_stay_data() -> None:
    hostile = "$(touch /tmp/pwned)"
    ev = parse_github("push", load("github_push.json") | {"ref": f"refs/heads/{hostile}"})
    assert ev.branch == hostile
    ev = parse_github("push", load("github_push.json") | {"ref": "refs/heads/../../etc"})
    assert ev.branch == "../../etc"
    # Wrong types never crash the parser: they become empty values.
    weird = load("github_push.json") | {"head_commit": {"message": ["x"]}, "commits": "nope"}
    ev = parse_github("push", weird)
    assert ev.message == "" and not ev.paths_known
