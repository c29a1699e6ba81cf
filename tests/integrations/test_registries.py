"""Auth files and the binary CloudEvents envelope: parsing and building, without a network."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from shipline.domain import cdevents
from shipline.exceptions import UsageError
from shipline.integrations.cdevents import Retry, envelope
from shipline.integrations.registries import Credentials, load_auth_file


def test_auth_files_in_docker_and_containers_format(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    token = base64.b64encode(b"ci:pa:ss").decode()
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "127.0.0.1:5000": {"auth": token},
                    "https://registry.example": {"username": "bot", "password": "pw"},
                }
            }
        )
    )
    auth = load_auth_file(str(path))
    assert auth is not None
    assert auth.credentials("127.0.0.1:5000") == Credentials("ci", "pa:ss")
    assert auth.credentials("registry.example") == Credentials("bot", "pw")
    assert auth.credentials("other:5000") is None
    assert "pa:ss" not in repr(auth) and "pa:ss" not in repr(auth.credentials("127.0.0.1:5000"))
    assert load_auth_file("") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not JSON"), ('{"auths": []}', "an 'auths' mapping"), (None, "does not exist")],
)
def test_bad_auth_files_are_named_without_their_content(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "auth.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message) as info:
        load_auth_file(path)
    assert str(path) in str(info.value)
    assert content is None or content not in str(info.value)


def test_the_envelope_is_binary_mode_and_reads_back() -> None:
    event = cdevents.artifact_published(
        id="e1",
        source="/shipline/pipelines/hello",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        purl="pkg:oci/hello@sha256:" + "a" * 64 + "?repository_url=127.0.0.1:5000/hello",
    )
    headers, body = envelope(event)
    assert headers["ce-type"] == "dev.cdevents.artifact.published.0.2.0"
    assert headers["ce-id"] == "e1" and headers["content-type"] == "application/json"
    assert json.loads(body) == event.data
    back = from_http_event(HTTPMessage(headers, body))
    assert back.get_subject() == event.subject
    assert back.get_time() == event.timestamp


def test_backoff_doubles_up_to_its_cap() -> None:
    retry = Retry(attempts=6, backoff=1.0, max_backoff=5.0)
    assert [retry.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
