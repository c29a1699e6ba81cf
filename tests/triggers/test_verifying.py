from __future__ import annotations

import hashlib
import hmac

from shipline.triggers.events import Forge
from shipline.triggers.verifying import read_headers, sign, verify

BODY = b'{"ref": "refs/heads/main"}'


def test_github_signature() -> None:
    good = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert verify(Forge.GITHUB, "s3cret", BODY, good)
    assert not verify(Forge.GITHUB, "other", BODY, good)
    assert not verify(Forge.GITHUB, "s3cret", BODY + b" ", good)
    assert not verify(Forge.GITHUB, "s3cret", BODY, good.removeprefix("sha256="))
    assert not verify(Forge.GITHUB, "s3cret", BODY, None)
    assert not verify(Forge.GITHUB, "", BODY, "sha256=" + sign("", BODY))


def test_gitea_signature_and_gitlab_token() -> None:
    assert verify(Forge.GITEA, "k", BODY, sign("k", BODY))
    assert not verify(Forge.GITEA, "k", BODY, "sha256=" + sign("k", BODY))
    assert verify(Forge.GITLAB, "tok", BODY, "tok")
    assert not verify(Forge.GITLAB, "tok", BODY, "tok2")


def test_delivery_ids() -> None:
    gh = read_headers(Forge.GITHUB, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "abc"}, BODY)
    assert (gh.event, gh.delivery_id, gh.signature) == ("push", "abc", None)
    gt = read_headers(Forge.GITEA, {"x-gitea-event": "push", "x-gitea-delivery": "d1", "x-gitea-signature": "ff"}, BODY)
    assert (gt.event, gt.delivery_id, gt.signature) == ("push", "d1", "ff")
    gl = read_headers(
        Forge.GITLAB,
        {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u1", "Idempotency-Key": "k1", "X-Gitlab-Token": "t"},
        BODY,
    )
    assert (gl.event, gl.delivery_id, gl.signature) == ("Push Hook", "k1", "t")
    # No id at all: the same body is the same delivery.
    a = read_headers(Forge.GITLAB, {"X-Gitlab-Event": "Push Hook"}, BODY)
    b = read_headers(Forge.GITLAB, {"X-Gitlab-Event": "Push Hook"}, BODY)
    assert a.delivery_id == b.delivery_id != read_headers(Forge.GITLAB, {}, BODY + b"x").delivery_id
