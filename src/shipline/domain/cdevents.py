"""CDEvents that a service pipeline emits: what was packaged, what was published, how the run ended.

Plain data, built from plain values, so each event's shape is checked by a unit
test; `shipline.integrations.cdevents` wraps them in CloudEvents and delivers
them.

The event types are the `0.2.0` ones (`dev.cdevents.artifact.packaged.0.2.0`,
`...artifact.published.0.2.0`, `...pipelinerun.finished.0.2.0`).  The CDEvents
release that defines exactly those is v0.4.1, so each event has that release's
shape: `context.version` and `subject.type` (v0.5.0 renamed the first
`specversion`, dropped the second, and numbered the same events `0.3.0`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shipline.exceptions import UsageError

SPEC_VERSION = "0.4.1"
ARTIFACT_PACKAGED = "dev.cdevents.artifact.packaged.0.2.0"
ARTIFACT_PUBLISHED = "dev.cdevents.artifact.published.0.2.0"
PIPELINERUN_FINISHED = "dev.cdevents.pipelinerun.finished.0.2.0"

_OUTCOMES: Mapping[str, str] = {"succeeded": "success", "failed": "failure", "cancelled": "error"}


@dataclass(frozen=True)
class CDEvent:
    """One event: the CloudEvent attributes it maps to, and the whole CDEvent as the data."""

    id: str
    type: str
    source: str
    subject: str
    timestamp: datetime
    data: dict[str, Any] = field(hash=False)

    @property
    def time(self) -> str:
        return _rfc3339(self.timestamp)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(*, id: str, type: str, source: str, timestamp: datetime, chain_id: str, subject: dict[str, Any]) -> CDEvent:
    context: dict[str, Any] = {
        "version": SPEC_VERSION,
        "id": id,
        "source": source,
        "type": type,
        "timestamp": _rfc3339(timestamp),
    }
    if chain_id:
        context["chainId"] = chain_id
    return CDEvent(id, type, source, str(subject["id"]), timestamp, {"context": context, "subject": subject})


def artifact_packaged(
    *, id: str, source: str, timestamp: datetime, purl: str, change_id: str, change_source: str = "", chain_id: str = ""
) -> CDEvent:
    """An artifact (image, chart, files) was built from a change (the commit)."""
    change = {"id": change_id, **({"source": change_source} if change_source else {})}
    subject = {"id": purl, "source": source, "type": "artifact", "content": {"change": change}}
    return _event(id=id, type=ARTIFACT_PACKAGED, source=source, timestamp=timestamp, chain_id=chain_id, subject=subject)


def artifact_published(*, id: str, source: str, timestamp: datetime, purl: str, user: str = "", chain_id: str = "") -> CDEvent:
    """An artifact is in its registry, where others can fetch it."""
    content = {"user": user} if user else {}
    subject = {"id": purl, "source": source, "type": "artifact", "content": content}
    return _event(id=id, type=ARTIFACT_PUBLISHED, source=source, timestamp=timestamp, chain_id=chain_id, subject=subject)


def run_outcome(status: str) -> str:
    """shipline's run status -> CDEvents' outcome (`success`, `failure`, `error`); an outcome passes through."""
    if status in _OUTCOMES.values():
        return status
    try:
        return _OUTCOMES[status]
    except KeyError:
        raise UsageError(f"'{status}' is not a run status (succeeded, failed, cancelled) or an outcome") from None


def pipelinerun_finished(
    *,
    id: str,
    source: str,
    timestamp: datetime,
    run: str,
    pipeline: str,
    outcome: str,
    url: str = "",
    errors: str = "",
    chain_id: str = "",
) -> CDEvent:
    """The run ended: `outcome` is `success`, `failure` or `error`."""
    content: dict[str, str] = {"pipelineName": pipeline, "outcome": outcome}
    if url:
        content["url"] = url
    if errors:
        content["errors"] = errors
    subject = {"id": run, "source": source, "type": "pipelineRun", "content": content}
    return _event(id=id, type=PIPELINERUN_FINISHED, source=source, timestamp=timestamp, chain_id=chain_id, subject=subject)


def parse_subscribers(text: str) -> list[str]:
    """Subscriber URLs separated by spaces, commas or newlines; duplicates once; only http(s)."""
    urls: list[str] = []
    for part in text.replace(",", " ").split():
        if not part.startswith(("http://", "https://")):
            raise UsageError(f"subscriber '{part}' is not an http:// or https:// URL")
        if part not in urls:
            urls.append(part)
    return urls
