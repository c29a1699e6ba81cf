"""The REST API, tokens, SSE log streaming, metrics and probes, over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import BUILD, Live, github_push, run_of_another_server, signed, start_server

from shipline.settings import Settings

URL = "https://github.example/acme/app.git"
SECRET = "s"

SLOW = """
name: slow
params:
  branch: {default: main}
  n: {default: "3"}
tasks:
  - name: count
    env: {N: "${{ params.n }}"}
    steps:
      - run: for i in $(seq 1 "$N"); do echo "line $i"; sleep 0.3; done
"""


def register(live: Live, pipeline: Path, **extra: Any) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "app",
                "url": URL,
                "forge": "github",
                "secret": SECRET,
                "pipeline": str(pipeline),
                **extra,
            },
        )
        assert r.status_code == 201, r.text


def test_probes_metrics_openapi_and_dashboard(live: Live, pipeline_file: Callable[..., Path]) -> None:
    assert httpx.get(live.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(live.url + "/readyz").json() == {"status": "ready"}
    register(live, pipeline_file(BUILD))
    body, headers = signed(SECRET, github_push(URL))
    live.wait_run(httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()["runs"][0], {"succeeded"})
    metrics = httpx.get(live.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for line in (
        'shipline_runs{status="succeeded"} 1.0',
        'shipline_runs{status="queued"} 0.0',
        "shipline_queue_depth 0.0",
        'shipline_task_duration_seconds_count{status="succeeded"} 1.0',
        'shipline_webhook_deliveries_total{forge="github",result="started"} 1.0',
    ):
        assert line in metrics.text.splitlines(), line
    spec = httpx.get(live.url + "/openapi.json").json()
    for path in (
        "/api/v1/runs",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/rerun",
        "/api/v1/runs/{run_id}/logs",
        "/api/v1/runs/{run_id}/logs/stream",
        "/api/v1/repositories",
        "/api/v1/triggers",
        "/api/v1/pipelines",
        "/hooks/github",
        "/hooks/gitea",
        "/hooks/gitlab",
    ):
        assert path in spec["paths"], path
    page = httpx.get(live.url + "/")
    assert page.status_code == 200 and "<title>shipline</title>" in page.text
    assert httpx.get(live.url + "/static/app.js").status_code == 200


def test_tokens_guard_every_change(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    changes = [
        ("POST", "/api/v1/runs", {"pipeline": "build"}),
        ("POST", "/api/v1/runs/1/cancel", None),
        ("POST", "/api/v1/runs/1/rerun", None),
        ("POST", "/api/v1/repositories", {"name": "x", "url": "u", "forge": "git", "pipeline": "p"}),
        ("DELETE", "/api/v1/repositories/app", None),
        ("POST", "/api/v1/repositories/app/triggers", {"on": "push"}),
        ("DELETE", "/api/v1/triggers/1", None),
        ("POST", "/api/v1/tokens", {"name": "n", "role": "operator"}),
        ("GET", "/api/v1/secrets", None),
        ("PUT", "/api/v1/secrets/token", {"value": "v"}),
        ("DELETE", "/api/v1/secrets/token", None),
    ]
    for method, path, body in changes:
        r = httpx.request(method, live.url + path, json=body)
        assert r.status_code == 401, (method, path, r.text)
        r = httpx.request(method, live.url + path, json=body, headers={"Authorization": f"Bearer {live.read_token}"})
        assert r.status_code == 403, (method, path, r.text)
        r = httpx.request(method, live.url + path, json=body, headers={"Authorization": "Bearer shp_wrong"})
        assert r.status_code == 401, (method, path, r.text)
    with live.client(live.operator_token) as c:
        r = c.post("/api/v1/runs", json={"pipeline": "build", "params": {"branch": "dev"}})
        assert r.status_code == 201, r.text
        run = live.wait_run(r.json()["id"], {"succeeded"})
        assert run["params"]["branch"] == "dev" and run["trigger"]["token"] == "tests"
        assert c.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 409
        bad = c.post("/api/v1/runs", json={"pipeline": "build", "params": {"nope": "1"}})
        assert bad.status_code == 400 and "unknown param 'nope'" in bad.json()["message"]
        assert c.post("/api/v1/runs", json={"pipeline": "missing"}).status_code == 404
        rerun = c.post(f"/api/v1/runs/{run['id']}/rerun").json()
        assert rerun["rerun_of"] == run["id"] and rerun["params"] == run["params"]


DEPLOY = """
name: deploy
params:
  branch: {default: main}
tasks:
  - name: push
    env: {TOKEN: "${{ secrets.registry-token }}"}
    steps:
      - run: echo "pushing with $TOKEN"
"""


def test_secrets_are_set_used_and_never_shown(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(DEPLOY))
    value = "tok-9f8e7d"
    with live.client(live.operator_token) as c:
        missing = c.post("/api/v1/runs", json={"pipeline": "deploy"})
        assert missing.status_code == 400 and "shipline secrets set registry-token" in missing.json()["message"]
        r = c.put("/api/v1/secrets/registry-token", json={"value": value})
        assert r.status_code == 200 and r.json()["name"] == "registry-token" and value not in r.text
        assert c.put("/api/v1/secrets/no%20spaces", json={"value": "v"}).status_code == 400
        assert [s["name"] for s in c.get("/api/v1/secrets").json()] == ["registry-token"]
        run = live.wait_run(c.post("/api/v1/runs", json={"pipeline": "deploy"}).json()["id"], {"succeeded", "failed"})
        assert run["status"] == "succeeded", run["message"]
        logs = c.get(f"/api/v1/runs/{run['id']}/logs", params={"format": "text"}).text
        assert "pushing with ***" in logs and value not in logs
        assert value not in c.get(f"/api/v1/runs/{run['id']}").text
        assert c.delete("/api/v1/secrets/registry-token").status_code == 200
        assert c.get("/api/v1/secrets").json() == []
        assert c.delete("/api/v1/secrets/registry-token").status_code == 404


def test_reading_can_require_a_token(settings: Settings, pipeline_file: Callable[..., Path]) -> None:
    from shipline.store.repositories import Role

    uv, thread, server, url = start_server(settings.model_copy(update={"anonymous_read": False}))
    try:
        _, read = server.state.create_token("r", Role.READ)
        assert httpx.get(url + "/api/v1/runs").status_code == 401
        assert httpx.get(url + "/api/v1/runs", headers={"Authorization": f"Bearer {read}"}).status_code == 200
        assert httpx.get(url + "/api/v1/runs", params={"token": read}).status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200
    finally:
        uv.should_exit = True
        thread.join(30)


def test_runs_list_filters_and_pages(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD), triggers=[{"on": "push", "concurrency": "parallel"}])
    ids = []
    for i in range(5):
        body, headers = signed(SECRET, github_push(URL, f"b{i}"))
        ids.append(httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()["runs"][0])
    for run_id in ids:
        live.wait_run(run_id, {"succeeded"})
    with live.client() as c:
        page1 = c.get("/api/v1/runs", params={"limit": 2}).json()
        assert [r["id"] for r in page1["runs"]] == ids[::-1][:2]
        page2 = c.get("/api/v1/runs", params={"limit": 2, "before": page1["next_before"]}).json()
        assert [r["id"] for r in page2["runs"]] == ids[::-1][2:4]
        page3 = c.get("/api/v1/runs", params={"limit": 2, "before": page2["next_before"]}).json()
        assert [r["id"] for r in page3["runs"]] == ids[:1] and page3["next_before"] is None
        assert len(c.get("/api/v1/runs", params={"status": "succeeded", "pipeline": "build"}).json()["runs"]) == 5
        assert c.get("/api/v1/runs", params={"status": "failed"}).json()["runs"] == []
        assert c.get("/api/v1/runs", params={"status": "bogus"}).status_code == 422
        detail = c.get(f"/api/v1/runs/{ids[0]}").json()
        assert detail["levels"] == {"show": 0} and detail["tasks"][0]["steps"][0]["status"] == "succeeded"
        assert c.get("/api/v1/runs/9999").status_code == 404
        assert c.get("/api/v1/pipelines").json()[0]["name"] == "build"
        assert c.get("/api/v1/repositories/app").json()["has_secret"] is True
        assert "secret" not in c.get("/api/v1/repositories/app").json()["repository"]


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kind, data = "", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and kind:
            events.append((kind, json.loads(data)))
            if kind == "end":
                return events
            kind, data = "", ""
    return events


def test_log_stream_from_the_first_line_while_running(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(SLOW))
    with live.client(live.operator_token) as c:
        run_id = c.post("/api/v1/runs", json={"pipeline": "slow", "params": {"n": "8"}}).json()["id"]
    # Join late: the run is already printing.
    deadline = time.monotonic() + 30
    while "line 2" not in httpx.get(f"{live.url}/api/v1/runs/{run_id}/logs", params={"format": "text"}).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/logs/stream", timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    lines = [d["text"] for k, d in events if k == "line"]
    assert lines == [f"line {i}" for i in range(1, 9)]  # from the first, none twice, none lost
    assert events[-1] == ("end", {"status": "succeeded", "message": ""})


def test_the_logs_of_a_run_another_server_ran_say_where_they_are(
    live: Live, pipeline_file: Callable[..., Path], home: Path
) -> None:
    """Servers share the store, not their logs folders: asked for the logs of a run another server
    ran, a server says so (and where), rather than answering with no lines."""
    run_id = run_of_another_server(live, pipeline_file(BUILD))
    for path in (f"/api/v1/runs/{run_id}/logs", f"/api/v1/runs/{run_id}/logs/stream"):
        r = httpx.get(live.url + path, timeout=30)
        assert r.status_code == 409, (path, r.status_code, r.text)
        said = r.json()["message"]
        assert f"the logs of run {run_id} are not here" in said and "its steps ran on builder-2.example (process 4242)" in said
    cli = subprocess.run(
        [sys.executable, "-m", "shipline", "runs", "logs", str(run_id)],
        capture_output=True,
        text=True,
        env={**os.environ, "SHIPLINE_HOME": str(home)},
        timeout=60,
    )
    assert cli.returncode == 1 and "its steps ran on builder-2.example" in cli.stderr, cli.stderr


def test_a_log_a_step_replaced_by_a_fifo_reads_as_empty_and_holds_up_no_request(
    live: Live, pipeline_file: Callable[..., Path]
) -> None:
    """Steps run as the server's user and know their run's log folder: a FIFO put in place of
    an earlier step's log would have kept each request that read it waiting for a writer."""
    register(
        live,
        pipeline_file("""
            name: swapped
            tasks:
              - name: t
                steps:
                  - run: echo before
                  - run: |
                      logs=$(dirname "$SHIPLINE_OUTPUT")
                      rm "$logs/t.1.0.log" && mkfifo "$logs/t.1.0.log"
                  - run: echo after
        """),
    )
    with live.client(live.operator_token) as c:
        run_id = c.post("/api/v1/runs", json={"pipeline": "swapped"}).json()["id"]
    live.wait_run(run_id, {"succeeded"})
    text = httpx.get(f"{live.url}/api/v1/runs/{run_id}/logs", params={"format": "text"}, timeout=10).text
    assert "after" in text and "before" not in text
    with httpx.stream("GET", f"{live.url}/api/v1/runs/{run_id}/logs/stream", timeout=10) as r:
        events = sse_events(r)
    assert [d["text"] for k, d in events if k == "line"] == ["after"]
    assert events[-1] == ("end", {"status": "succeeded", "message": ""})


def test_event_stream_and_cancel(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(SLOW))
    with live.client(live.operator_token) as c, httpx.stream("GET", f"{live.url}/api/v1/events", timeout=60) as events:
        lines = events.iter_lines()
        assert next(lines) == "event: hello"
        run_id = c.post("/api/v1/runs", json={"pipeline": "slow", "params": {"n": "100"}}).json()["id"]
        live.wait_run(run_id, {"running"})
        r = c.post(f"/api/v1/runs/{run_id}/cancel")
        assert r.status_code == 200
        seen = []
        for line in lines:
            if line.startswith("data: "):
                data = json.loads(line[6:])
                seen.append(data.get("status"))
                if data.get("status") == "cancelled" and "task" not in data:
                    break
        assert "running" in seen and "cancelled" in seen
    assert live.wait_run(run_id, {"cancelled"})["tasks"][0]["status"] == "cancelled"


@pytest.mark.parametrize("policy", ["cancel", "queue"])
def test_concurrency_per_branch(live: Live, pipeline_file: Callable[..., Path], policy: str) -> None:
    register(
        live,
        pipeline_file(SLOW.replace('n: {default: "3"}', 'n: {default: "20"}')),
        triggers=[{"on": "push", "concurrency": policy}],
    )
    first = httpx.post(
        live.url + "/hooks/github", content=(b := signed(SECRET, github_push(URL, "main")))[0], headers=b[1]
    ).json()["runs"][0]
    live.wait_run(first, {"running"})
    second = httpx.post(
        live.url + "/hooks/github", content=(b := signed(SECRET, github_push(URL, "main")))[0], headers=b[1]
    ).json()["runs"][0]
    other = httpx.post(live.url + "/hooks/github", content=(b := signed(SECRET, github_push(URL, "main")))[0], headers=b[1])
    assert other.status_code == 202
    if policy == "cancel":
        assert live.wait_run(first, {"cancelled", "succeeded"})["status"] == "cancelled"
        live.wait_run(second, {"cancelled"})  # cancelled in turn by the third push
    else:
        time.sleep(1.0)  # give the engine several chances to (wrongly) start the second run
        assert httpx.get(f"{live.url}/api/v1/runs/{second}").json()["status"] == "queued"
        assert httpx.get(f"{live.url}/api/v1/runs/{first}").json()["status"] == "running"
        with live.client(live.operator_token) as c:
            c.post(f"/api/v1/runs/{first}/cancel")
        live.wait_run(second, {"running"})


def test_bad_pipeline_file_is_reported_and_the_delivery_can_be_retried(live: Live, pipeline_file: Callable[..., Path]) -> None:
    path = pipeline_file(BUILD)
    register(live, path)
    path.write_text("name: Bad Name\ntasks: []\n")
    body, headers = signed(SECRET, github_push(URL))
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 422 and "pipeline.yaml" in r.json()["message"]
    path.write_text(BUILD)
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 202
