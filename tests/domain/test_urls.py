from __future__ import annotations

import pytest
from pydantic import ValidationError

from shipline.domain.urls import check_url, public_url, url_key
from shipline.exceptions import UsageError
from shipline.triggers.rules import TriggerRule


def test_url_key_is_one_spelling_per_repository() -> None:
    keys = {
        url_key("https://Forge.example/o/r.git"),
        url_key("https://forge.example/o/r"),
        url_key("https://forge.example/o/r/"),
        url_key("git@forge.example:o/r.git"),
        url_key("ssh://git@forge.example/o/r.git"),
        url_key("https://bob:secret@forge.example/o/r.git"),
        url_key("https://ghp_XXXX@forge.example/o/r.git"),
    }
    assert keys == {"forge.example/o/r"}
    assert url_key("http://127.0.0.1:3000/org/service.git") == "127.0.0.1:3000/org/service"
    assert url_key("/srv/git/infra.git") == "/srv/git/infra"
    assert url_key("https://forge.example/o/r2") != url_key("https://forge.example/o/r")


@pytest.mark.parametrize("url", ["https://github.com:abc/x.git", "https://user:p/ss@github.com/a/b.git", "http://[::1/x"])
def test_url_key_of_a_broken_payload_url_is_an_answer_not_an_exception(url: str) -> None:
    assert isinstance(url_key(url), str)


def test_public_url_drops_every_credential_but_keeps_ssh_users() -> None:
    assert public_url("https://bob:tok3n@forge.example/o/r.git") == "https://forge.example/o/r.git"
    assert public_url("https://ghp_XXXX@github.com/acme/priv.git") == "https://github.com/acme/priv.git"
    assert public_url("HTTP://x:y@127.0.0.1:3000/o/r") == "HTTP://127.0.0.1:3000/o/r"
    assert public_url("https://forge.example/o/r.git") == "https://forge.example/o/r.git"
    assert public_url("git@forge.example:o/r.git") == "git@forge.example:o/r.git"
    assert public_url("ssh://git@forge.example/o/r.git") == "ssh://git@forge.example/o/r.git"
    assert public_url("ssh://git:pw@forge.example/o/r.git") == "ssh://git@forge.example/o/r.git"
    assert public_url("/srv/git/a@b.git") == "/srv/git/a@b.git"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://ghp_XXXX@github.com/acme/priv.git", "carries credentials"),
        ("https://bob:tok3n@forge.example/o/r.git", "carries credentials"),
        ("ssh://git:pw@forge.example/o/r.git", "carries credentials"),
        ("https://user:p/ss@github.com/a/b.git", r"'https://\*\*\*@github.com/a/b.git': '\*\*\*' after the host is not a port"),
        ("https://github.com:abc/x.git", "'abc' after the host is not a port number"),
        ("https:///o/r.git", "names no host"),
        ("--upload-pack=touch /tmp/x", "not a URL or path git can use"),
    ],
)
def test_check_url_refuses_credentials_and_says_what_to_do(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        check_url(url)
    assert "ghp_XXXX" not in str(info.value) and "tok3n" not in str(info.value) and ":pw@" not in str(info.value)
    assert "p/ss" not in str(info.value), "no part of a password is echoed"
    if "credentials" in message:
        assert "~/.git-credentials" in str(info.value) and "shipline secrets set" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/app.git",
        "git@github.com:acme/app.git",
        "ssh://git@host:2222/o/r.git",
        "http://127.0.0.1:3000/org/s.git",
        "http://[::1]:3000/o/r.git",
        "/srv/git/infra.git",
        "file:///srv/git/x.git",
    ],
)
def test_check_url_takes_urls_without_credentials(url: str) -> None:
    assert check_url(url) == url


def test_a_trigger_rule_takes_no_credentials_in_its_params_and_shows_none_it_had() -> None:
    given = {"on": "push", "params": {"url": "https://ci:tok3n@forge.example/o/r.git"}}
    with pytest.raises(ValidationError, match="param 'url' is a URL with credentials") as info:
        TriggerRule.model_validate(given)
    assert all("tok3n" not in e["msg"] for e in info.value.errors())  # what the API and CLI show
    stored = TriggerRule.model_validate(given, context={"stored": True})  # kept by an older version
    assert stored.params == {"url": "https://forge.example/o/r.git"}
