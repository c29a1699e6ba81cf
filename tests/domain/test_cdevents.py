"""The CDEvents a service pipeline emits: types, shapes (CDEvents v0.4.1, the release of the 0.2.0 events)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shipline.domain import cdevents
from shipline.exceptions import UsageError

WHEN = datetime(2026, 11, 28, 17, 0, 0, 123456, tzinfo=UTC)
PURL = "pkg:oci/hello@sha256:" + "a" * 64 + "?repository_url=127.0.0.1:5000/hello"


def test_artifact_packaged() -> None:
    event = cdevents.artifact_packaged(
        id="e1",
        source="/shipline/pipelines/hello",
        timestamp=WHEN,
        purl=PURL,
        change_id="abc",
        change_source="http://git/hello.git",
        chain_id="c1",
    )
    assert (event.type, event.subject, event.time) == ("dev.cdevents.artifact.packaged.0.2.0", PURL, "2026-11-28T17:00:00.123Z")
    assert event.data == {
        "context": {
            "version": "0.4.1",
            "id": "e1",
            "source": "/shipline/pipelines/hello",
            "type": "dev.cdevents.artifact.packaged.0.2.0",
            "timestamp": "2026-11-28T17:00:00.123Z",
            "chainId": "c1",
        },
        "subject": {
            "id": PURL,
            "source": "/shipline/pipelines/hello",
            "type": "artifact",
            "content": {"change": {"id": "abc", "source": "http://git/hello.git"}},
        },
    }


def test_artifact_published_and_pipelinerun_finished() -> None:
    published = cdevents.artifact_published(id="e2", source="/s", timestamp=WHEN, purl=PURL)
    assert published.data["subject"] == {"id": PURL, "source": "/s", "type": "artifact", "content": {}}
    assert "chainId" not in published.data["context"]
    finished = cdevents.pipelinerun_finished(
        id="e3",
        source="/s",
        timestamp=WHEN,
        run="42",
        pipeline="hello",
        outcome="failure",
        errors="tests failed",
        url="http://ci/runs/42",
    )
    assert finished.type == "dev.cdevents.pipelinerun.finished.0.2.0"
    assert finished.data["subject"] == {
        "id": "42",
        "source": "/s",
        "type": "pipelineRun",
        "content": {"pipelineName": "hello", "outcome": "failure", "url": "http://ci/runs/42", "errors": "tests failed"},
    }


def test_run_outcomes() -> None:
    assert [cdevents.run_outcome(s) for s in ("succeeded", "failed", "cancelled", "success")] == [
        "success",
        "failure",
        "error",
        "success",
    ]
    with pytest.raises(UsageError, match="'running' is not a run status"):
        cdevents.run_outcome("running")


def test_subscribers() -> None:
    assert cdevents.parse_subscribers(" http://a/x, https://b/y\nhttp://a/x ") == ["http://a/x", "https://b/y"]
    assert cdevents.parse_subscribers("") == []
    with pytest.raises(UsageError, match="'file:///etc/passwd' is not an http"):
        cdevents.parse_subscribers("http://a file:///etc/passwd")
