"""shipline/notify: CDEvents as binary CloudEvents to a real HTTP listener on loopback, retried, recorded."""

from __future__ import annotations

import json

import pytest
from artifactkit import event_sink, free_port, log_text
from helpers import RunFn

from shipline.domain.runs import RunStatus
from shipline.settings import Settings

IMAGE_DIGEST = "sha256:" + "a" * 64
CHART_DIGEST = "sha256:" + "b" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _pipeline(subscribers: str, *, extra: str = "") -> str:
    return f"""
        name: hello
        tasks:
          - name: notify
            uses: shipline/notify
            with:
              subscribers: "{subscribers}"
              commit: {COMMIT}
              source: http://127.0.0.1:3000/org/hello.git
              image: 127.0.0.1:5000/hello:1.2.0
              image-digest: "{IMAGE_DIGEST}"
              chart: oci://127.0.0.1:5000/charts/hello
              chart-digest: "{CHART_DIGEST}"
              backoff: "0.05"
              {extra}
        """


def test_sends_cdevents_for_image_chart_and_run(run_pipeline: RunFn, settings: Settings) -> None:
    with event_sink() as first, event_sink() as second:
        record = run_pipeline(_pipeline(f"{first.url}, {second.url}"))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "notify")
    image_purl = f"pkg:oci/hello@{IMAGE_DIGEST}?repository_url=127.0.0.1:5000/hello"
    chart_purl = f"pkg:oci/hello@{CHART_DIGEST}?repository_url=127.0.0.1:5000/charts/hello"
    expected = [
        ("dev.cdevents.artifact.packaged.0.2.0", image_purl),
        ("dev.cdevents.artifact.published.0.2.0", image_purl),
        ("dev.cdevents.artifact.packaged.0.2.0", chart_purl),
        ("dev.cdevents.artifact.published.0.2.0", chart_purl),
        ("dev.cdevents.pipelinerun.finished.0.2.0", str(record.id)),
    ]
    for sink in (first, second):
        got = [(r.headers["ce-type"], r.headers["ce-subject"]) for r in sink.received]
        assert got == expected
    for received in first.received:
        # Binary mode: the CloudEvent's attributes in ce-* headers, the whole CDEvent as the JSON body.
        assert received.headers["ce-specversion"] == "1.0"
        assert received.headers["content-type"].startswith("application/json")
        event = received.json()
        assert event["context"]["type"] == received.headers["ce-type"]
        assert event["context"]["id"] == received.headers["ce-id"]
        assert event["context"]["source"] == received.headers["ce-source"] == "/shipline/pipelines/hello"
        assert event["subject"]["id"] == received.headers["ce-subject"]
    packaged = first.received[0].json()
    assert packaged["subject"]["type"] == "artifact"
    assert packaged["subject"]["content"]["change"] == {"id": COMMIT, "source": "http://127.0.0.1:3000/org/hello.git"}
    finished = first.received[-1].json()
    assert finished["subject"]["type"] == "pipelineRun"
    assert finished["subject"]["content"] == {"pipelineName": "hello", "outcome": "success"}
    # One chain links the events of one notification.
    assert len({r.json()["context"]["chainId"] for r in first.received}) == 1

    delivered = json.loads(record.task("notify").results["delivered"])
    assert len(delivered) == 10
    assert {d["url"] for d in delivered} == {first.url, second.url}
    assert all(d["status"] == 202 and d["attempts"] == 1 for d in delivered)
    assert json.loads(record.task("notify").results["undelivered"]) == []
    assert f"delivered dev.cdevents.artifact.published.0.2.0 {image_purl} to {first.url}: HTTP 202" in log_text(
        settings, record, "notify"
    )


def test_a_subscriber_that_fails_twice_gets_each_event_at_least_once(run_pipeline: RunFn, settings: Settings) -> None:
    with event_sink(fail_first=2) as sink:
        record = run_pipeline(_pipeline(sink.url))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "notify")
    assert sink.refused == 2
    assert [r.headers["ce-type"] for r in sink.received][0] == "dev.cdevents.artifact.packaged.0.2.0"
    assert len(sink.received) == 5
    delivered = json.loads(record.task("notify").results["delivered"])
    assert delivered[0]["attempts"] == 3 and all(d["attempts"] == 1 for d in delivered[1:])
    log = log_text(settings, record, "notify")
    assert "retrying dev.cdevents.artifact.packaged.0.2.0 to" in log and "HTTP 503" in log and "(attempt 2 of 5)" in log


def test_an_unreachable_subscriber_fails_the_task_or_only_warns(run_pipeline: RunFn, settings: Settings) -> None:
    down = f"http://127.0.0.1:{free_port()}/events"
    failed = run_pipeline(_pipeline(down, extra='attempts: "2"'))
    assert failed.status == RunStatus.FAILED
    log = log_text(settings, failed, "notify")
    assert f"5 of 5 event(s) not delivered after up to 2 tries: {down}: ConnectError" in log
    assert "Check that the subscribers run" in log

    warned = run_pipeline(_pipeline(down, extra='attempts: "1"\n              on-failure: warn'))
    assert warned.status == RunStatus.SUCCEEDED
    undelivered = json.loads(warned.task("notify").results["undelivered"])
    assert len(undelivered) == 5 and all(u["url"] == down and u["status"] is None for u in undelivered)


def test_a_failed_run_is_reported_as_a_failure(run_pipeline: RunFn, settings: Settings) -> None:
    with event_sink() as sink:
        record = run_pipeline(f"""
            name: hello
            tasks:
              - name: build
                steps: [{{run: "exit 1"}}]
            finally:
              - name: notify
                uses: shipline/notify
                with: {{subscribers: "{sink.url}", errors: "build failed"}}
            """)
    assert record.status == RunStatus.FAILED
    assert record.task("notify").status.value == "succeeded", log_text(settings, record, "notify")
    [finished] = [r.json() for r in sink.received]
    assert finished["context"]["type"] == "dev.cdevents.pipelinerun.finished.0.2.0"
    assert finished["subject"]["content"] == {"pipelineName": "hello", "outcome": "failure", "errors": "build failed"}


def test_a_loopback_subscriber_is_not_reached_through_the_proxy(
    run_pipeline: RunFn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a proxy that is down
    with event_sink() as sink:
        record = run_pipeline(_pipeline(sink.url, extra='attempts: "1"'))
    assert record.status == RunStatus.SUCCEEDED, log_text(settings, record, "notify")
    assert len(sink.received) == 5
