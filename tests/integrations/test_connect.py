"""Choosing a forge adapter from the settings, and the server's public URL."""

from __future__ import annotations

import pytest

from shipline.exceptions import UsageError
from shipline.integrations.forges import RepoRef, connect, has_token, repo_ref, serves
from shipline.integrations.forges.gitea import GiteaForge
from shipline.integrations.forges.github import GitHubForge
from shipline.settings import load_settings


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings({"SHIPLINE_HOME": "/nonexistent/shipline-home", **env})


def test_connect_names_the_missing_setting() -> None:
    with pytest.raises(UsageError, match="SHIPLINE_GITEA_URL and SHIPLINE_GITEA_TOKEN"):
        connect(settings(), "gitea")
    with pytest.raises(UsageError, match="SHIPLINE_GITHUB_TOKEN"):
        connect(settings(), "github")
    with pytest.raises(UsageError, match="no API adapter for forge 'gitlab'"):
        connect(settings(), "gitlab")
    assert not has_token(settings(SHIPLINE_GITEA_TOKEN="t"), "gitea")  # a token without the URL is no use


def test_connect_picks_the_adapter_and_its_api() -> None:
    gitea = connect(settings(SHIPLINE_GITEA_URL="http://127.0.0.1:3000/", SHIPLINE_GITEA_TOKEN="t"), "gitea")
    assert isinstance(gitea, GiteaForge) and str(gitea.http.client.base_url) == "http://127.0.0.1:3000/api/v1/"
    github = connect(settings(SHIPLINE_GITHUB_TOKEN="t", SHIPLINE_GITHUB_API_URL="https://ghe.example/api/v3"), "github")
    assert isinstance(github, GitHubForge) and str(github.http.client.base_url) == "https://ghe.example/api/v3/"
    gitea.close()
    github.close()


def test_repo_ref_from_any_spelling() -> None:
    for url in (
        "https://gitea.example/team/app.git",
        "git@github.com:team/app",
        "http://127.0.0.1:3000/team/app/",
        "ssh://git@forge.example:2222/team/app.git",
    ):
        assert repo_ref(url) == RepoRef("team", "app"), url
    for bad in ("https://gitea.example/app", "/srv/git/../x", "https://forge.example/team/.."):
        with pytest.raises(UsageError):
            repo_ref(bad)


def test_public_url() -> None:
    assert settings().server_url == "http://127.0.0.1:8080"
    assert settings(SHIPLINE_HOST="0.0.0.0", SHIPLINE_PORT="9000").server_url == "http://127.0.0.1:9000"
    assert settings(SHIPLINE_PUBLIC_URL="https://ci.example/shipline/").server_url == "https://ci.example/shipline"
    for bad in ("ci.example", "https://user:pw@ci.example", "ftp://ci.example"):
        with pytest.raises(UsageError, match="public_url"):
            settings(SHIPLINE_PUBLIC_URL=bad)


def test_a_token_serves_its_own_host_only() -> None:
    gitea = settings(SHIPLINE_GITEA_URL="http://127.0.0.1:3000", SHIPLINE_GITEA_TOKEN="t")
    assert serves(gitea, "gitea", "http://127.0.0.1:3000/team/app.git")
    assert serves(gitea, "gitea", "git@127.0.0.1:team/app.git")
    assert not serves(gitea, "gitea", "https://gitea.example/team/app.git")
    github = settings(SHIPLINE_GITHUB_TOKEN="t")
    assert serves(github, "github", "https://github.com/team/app") and serves(github, "github", "git@github.com:team/app.git")
    assert not serves(github, "github", "https://gitea.example/team/app")
    ghe = settings(SHIPLINE_GITHUB_TOKEN="t", SHIPLINE_GITHUB_API_URL="https://ghe.example/api/v3")
    assert serves(ghe, "github", "https://ghe.example/team/app") and not serves(ghe, "github", "https://github.com/team/app")
