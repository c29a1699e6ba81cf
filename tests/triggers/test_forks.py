"""Pull requests from forks are told apart, on every forge (their runs get no secrets)."""

from __future__ import annotations

from typing import Any

from shipline.triggers.parsing import parse_gitea, parse_github, parse_gitlab


def github_like(head_repo: Any, base_repo: str = "acme/app") -> dict[str, Any]:
    head: dict[str, Any] = {"ref": "feature", "sha": "1" * 40}
    if head_repo is not ...:
        head["repo"] = None if head_repo is None else {"full_name": head_repo}
    return {
        "action": "opened",
        "number": 5,
        "pull_request": {"number": 5, "title": "t", "head": head, "base": {"ref": "main", "repo": {"full_name": base_repo}}},
        "repository": {"full_name": base_repo, "html_url": f"https://forge.example/{base_repo}"},
    }


def test_github_and_gitea() -> None:
    for parse in (parse_github, parse_gitea):
        assert not parse("pull_request", github_like("acme/app")).pr_from_fork
        assert not parse("pull_request", github_like("Acme/App")).pr_from_fork
        fork = parse("pull_request", github_like("mallory/app"))
        assert fork.pr_from_fork and fork.summary()["fork"] is True
        assert parse("pull_request", github_like(None)).pr_from_fork  # the fork was deleted
        assert "fork" not in parse("pull_request", github_like("acme/app")).summary()


def test_gitea_repo_ids() -> None:
    payload = github_like(...)
    payload["pull_request"]["head"]["repo_id"] = 7
    payload["pull_request"]["base"] = {"ref": "main", "repo_id": 7}
    assert not parse_gitea("pull_request", payload).pr_from_fork
    payload["pull_request"]["head"]["repo_id"] = 8
    assert parse_gitea("pull_request", payload).pr_from_fork


def test_gitlab() -> None:
    def mr(source: int) -> dict[str, Any]:
        return {
            "object_kind": "merge_request",
            "project": {"path_with_namespace": "acme/app", "web_url": "https://gitlab.example/acme/app"},
            "object_attributes": {
                "action": "open",
                "iid": 3,
                "source_branch": "f",
                "target_branch": "main",
                "source_project_id": source,
                "target_project_id": 10,
                "last_commit": {"id": "2" * 40},
            },
        }

    assert not parse_gitlab("Merge Request Hook", mr(10)).pr_from_fork
    assert parse_gitlab("Merge Request Hook", mr(11)).pr_from_fork
