"""What an attacker tried on the server (issue 12, items 4-7 and 13): each is refused early, in bounded memory."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from abusekit import nested, push, repeat
from serverkit import BUILD, Live, github_push, signed, start_server

from shipline.server.dispatching import PipelineCache
from shipline.server.observing import redact_tokens
from shipline.settings import Settings
from shipline.store.repositories import Role

URL = "https://github.example/acme/app.git"
SECRET = "s3cret"
MB = 1024 * 1024


def register(live: Live, pipeline: Path, name: str = "app", url: str = URL) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={"name": name, "url": url, "forge": "github", "secret": SECRET, "pipeline": str(pipeline)},
        )
        assert r.status_code == 201, r.text


def hook_headers(body: bytes, secret: str | None = SECRET) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4())}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return headers


# --- 4: bodies bounded while they arrive; changes authenticated before their body is read ----------


def test_chunked_webhook_body_is_refused_while_it_arrives(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    limit = live.server.settings.webhook_max_bytes
    total = 40 * limit
    pushed = push(
        live.url, "/hooks/github", repeat(b"x" * 65536, total), {"X-GitHub-Event": "push", "Content-Type": "application/json"}
    )
    assert pushed.status == 413, pushed.answer[:300]
    assert b"webhook_max_bytes" in pushed.answer
    assert pushed.sent < total // 2, f"the server read {pushed.sent} of {total} bytes before refusing"
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_anonymous_change_is_refused_before_its_body_is_read(live: Live) -> None:
    total = 200 * MB
    for chunked in (True, False):
        pushed = push(
            live.url,
            "/api/v1/runs",
            repeat(b'{"pipeline": "' + b"a" * 65536, total),
            {"Content-Type": "application/json"},
            chunked=chunked,
            length=total,
        )
        assert pushed.status == 401, pushed.answer[:300]
        assert b"operator token" in pushed.answer
        assert pushed.sent < total // 4, f"the server read {pushed.sent} of {total} bytes before its 401"


def test_operator_body_larger_than_the_api_limit_is_refused_while_it_arrives(live: Live) -> None:
    total = 50 * MB
    headers = {"Authorization": f"Bearer {live.operator_token}", "Content-Type": "application/json"}
    pushed = push(live.url, "/api/v1/runs", repeat(b" " * 65536, total), headers)
    assert pushed.status == 413 and b"api_max_bytes" in pushed.answer, pushed.answer[:300]
    assert pushed.sent < total // 2


# --- 6: signature on the raw bytes first, nesting bounded, 4xx ---------------------------------------


def test_deeply_nested_webhook_gets_4xx_signed_or_not(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    body = nested(100_000)
    r = httpx.post(live.url + "/hooks/github", content=body, headers=hook_headers(body, None))
    assert r.status_code == 401, r.text  # not parsed at all
    r = httpx.post(live.url + "/hooks/github", content=body, headers=hook_headers(body))
    assert r.status_code == 400 and "nests deeper" in r.json()["message"], r.text
    # Within what the JSON decoder takes, but deeper than any forge sends.
    payload = github_push(URL)
    payload["commits"][0]["extra"] = json.loads(nested(200))
    body = json.dumps(payload).encode()
    r = httpx.post(live.url + "/hooks/github", content=body, headers=hook_headers(body))
    assert r.status_code == 400 and "nests deeper" in r.json()["message"], r.text
    assert httpx.get(live.url + "/api/v1/runs").json()["runs"] == []


def test_registered_or_not_an_unsigned_hook_gets_the_same_answer(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    answers = []
    for url in (URL, "https://github.example/acme/nobody.git"):
        body = json.dumps(github_push(url)).encode()
        r = httpx.post(live.url + "/hooks/github", content=body, headers=hook_headers(body, "wrong"))
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 401, answers


# --- 5: logs in pages, streamed; step output capped ----------------------------------------------


LINES = """
name: chatty
tasks:
  - name: talk
    steps:
      - run: for i in $(seq 1 12000); do echo "line $i"; done
"""


def test_logs_come_in_pages_and_as_a_stream(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(LINES))
    with live.client(live.operator_token) as c:
        run = c.post("/api/v1/runs", json={"pipeline": "chatty"}).json()["id"]
    live.wait_run(run, {"succeeded"})
    got: list[str] = []
    cursor: str | None = None
    pages = 0
    with live.client() as c:
        while True:
            r = c.get(f"/api/v1/runs/{run}/logs", params={"limit": 5000, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            got += [line["text"] for step in r.json() for line in step["lines"]]
            pages += 1
            cursor = r.headers.get("X-Next-Cursor")
            if cursor is None:
                break
        assert pages == 3
        assert got == [f"line {i}" for i in range(1, 12001)]
        with c.stream("GET", f"/api/v1/runs/{run}/logs", params={"format": "text"}) as r:
            text = [line for line in r.iter_lines() if line]
        assert text == [f"[talk#0] line {i}" for i in range(1, 12001)]
        assert c.get(f"/api/v1/runs/{run}/logs", params={"cursor": "nope"}).status_code == 400


@pytest.fixture
def capped(settings: Settings) -> Iterator[Live]:
    settings = settings.model_copy(
        update={"queue_poll_seconds": 0.05, "step_log_max_bytes": 64 * 1024, "step_output_max_bytes": 4096}
    )
    uv, thread, app_server, url = start_server(settings)
    _, operator = app_server.state.create_token("tests", Role.OPERATOR)
    try:
        yield Live(url, app_server, operator, operator)
    finally:
        uv.should_exit = True
        thread.join(30)


FLOOD = """
name: flood
tasks:
  - name: loud
    steps:
      - run: head -c 2000000 /dev/zero | tr '\\0' x | fold -w 100; echo still running
  - name: big-output
    steps:
      - run: head -c 10000 /dev/zero | tr '\\0' a | sed 's/^/blob=/' >> "$SHIPLINE_OUTPUT"
"""


def test_a_step_output_and_its_results_file_are_capped(capped: Live, pipeline_file: Callable[..., Path]) -> None:
    register(capped, pipeline_file(FLOOD))
    with capped.client(capped.operator_token) as c:
        run = c.post("/api/v1/runs", json={"pipeline": "flood"}).json()["id"]
        record = capped.wait_run(run, {"succeeded", "failed"})
        tasks = {t["name"]: t for t in record["tasks"]}
        assert tasks["loud"]["status"] == "succeeded"  # the step goes on; its log stops growing
        lines = [
            line["text"] for step in c.get(f"/api/v1/runs/{run}/logs", params={"task": "loud"}).json() for line in step["lines"]
        ]
        assert "step_log_max_bytes" in lines[-1]
        assert sum(len(line) + 1 for line in lines) < 70 * 1024
        assert "still running" not in lines
        assert tasks["big-output"]["status"] == "failed"
        assert "step_output_max_bytes" in tasks["big-output"]["message"], tasks["big-output"]


# --- 7: pipelines checked at registration; no blocking work on the event loop; cache by content ---


def test_a_broken_pipeline_cannot_be_registered_through_the_api(live: Live, pipeline_file: Callable[..., Path]) -> None:
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    path = pipeline_file("\n".join(laughs) + "\nname: x\ntasks: []\n")
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories", json={"name": "app", "url": URL, "forge": "github", "secret": SECRET, "pipeline": str(path)}
        )
        assert r.status_code == 422, r.text
        assert any("aliases" in p and f"{path}:" in p for p in r.json()["problems"]), r.json()
        assert c.get("/api/v1/repositories").json() == []


def test_a_webhook_that_waits_on_its_pipeline_file_does_not_hold_the_server(
    live: Live, pipeline_file: Callable[..., Path]
) -> None:
    path = pipeline_file(BUILD)
    register(live, path)
    # The file becomes a FIFO: reading it blocks until someone writes. A handler that
    # reads it on the event loop stops the whole server; one in a worker thread does not.
    path.unlink()
    os.mkfifo(path)
    body, headers = signed(SECRET, github_push(URL))
    answer: list[httpx.Response] = []
    hook = threading.Thread(
        target=lambda: answer.append(httpx.post(live.url + "/hooks/github", content=body, headers=headers, timeout=60))
    )
    hook.start()
    try:
        assert httpx.get(live.url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(live.url + "/api/v1/runs", timeout=10).status_code == 200
    finally:
        for _ in range(3):  # the digest, then the parse, each read the file once
            if answer:
                break
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, BUILD.encode())
            os.close(fd)
            hook.join(2)
        hook.join(30)
    assert answer and answer[0].status_code == 202, answer and answer[0].text


def test_parsed_pipelines_are_cached_by_content(tmp_path: Path) -> None:
    cache = PipelineCache()
    path = tmp_path / "p.yaml"
    path.write_text(BUILD)
    first = cache.load(str(path))
    assert cache.load(str(path)) is first
    # Same size, same time stamp, other content: parsed again.
    stat = path.stat()
    path.write_text(BUILD.replace("name: build", "name: bu1ld"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.load(str(path)).name == "bu1ld"
    # A broken file is remembered as broken, not parsed on every look.
    path.write_text("name: x\ntasks: [")
    with pytest.raises(Exception) as one:
        cache.load(str(path))
    with pytest.raises(Exception) as two:
        cache.load(str(path))
    assert one.value is two.value


# --- 13: metrics, ?token=, redaction, headers, docs from the package -------------------------------


def test_metrics_need_a_token_when_anonymous_reads_are_off(settings: Settings) -> None:
    uv, thread, app_server, url = start_server(settings.model_copy(update={"anonymous_read": False}))
    try:
        _, read = app_server.state.create_token("viewer", Role.READ)
        assert httpx.get(url + "/metrics").status_code == 401
        r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {read}"})
        assert r.status_code == 200 and "shipline_runs" in r.text
    finally:
        uv.should_exit = True
        thread.join(30)


def test_token_in_the_query_is_refused_for_changes(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    for spelling in ("token", "%74oken"):
        r = httpx.post(f"{live.url}/api/v1/runs?{spelling}={live.operator_token}", json={"pipeline": "build"})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["message"], r.text
    assert httpx.get(live.url + "/api/v1/runs").json()["runs"] == []
    # Reading with ?token= still works (the browser's EventSource cannot send a header).
    assert httpx.get(f"{live.url}/api/v1/whoami?token={live.read_token}").json()["token"]["name"] == "viewer"
    assert (
        redact_tokens('"GET /api/v1/events?run=1&%74oken=shp_abc HTTP/1.1" 200')
        == '"GET /api/v1/events?run=1&%74oken=*** HTTP/1.1" 200'
    )
    assert redact_tokens("/x?t%6Fken=shp_abc&token=shp_def&tokens=1") == "/x?t%6Fken=***&token=***&tokens=1"


def test_dashboard_and_docs_carry_security_headers_and_need_no_cdn(live: Live) -> None:
    with live.client() as c:
        for path in ("/", "/api/docs", "/api/v1/runs"):
            r = c.get(path)
            assert r.status_code == 200
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        page = c.get("/api/docs").text
        assert "http://" not in page and "https://" not in page and "<script>" not in page
        for asset in ("/api/docs/assets/swagger-ui-bundle.js", "/api/docs/assets/swagger-ui.css", "/static/docs.js"):
            assert asset in page or asset == "/static/docs.js"
            r = c.get(asset)
            assert r.status_code == 200 and len(r.content) > 100, asset
        assert "SwaggerUIBundle" in c.get("/static/docs.js").text
