"""What anyone may read (the anonymous API and event stream, run params, logs) holds no secret (issue 12)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from serverkit import Live, github_push, signed
from sqlalchemy import text

VALUE = "tok-5e6f7a8b9c0d"
TOKEN = "ghp_Zq4cJ8x2LbN7vR1tY6wE3uK9pA0sD5fG"

RETRIED = """
name: leaky
tasks:
  - name: fetch
    retries: 1
    env: {TOKEN: "${{ secrets.api-token }}"}
    steps:
      - run: echo "$TOKEN" >> "$SHIPLINE_OUTPUT"   # not name=value: the task fails, and is retried
"""

SHOWS_URL = """
name: shows-url
params:
  repo_url: {default: ""}
  branch: {default: ""}
tasks:
  - name: show
    env: {URL: "${{ params.repo_url }}"}
    steps:
      - run: echo "cloning $URL"
"""


def test_a_retry_message_on_the_anonymous_event_stream_is_masked(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        assert c.put("/api/v1/secrets/api-token", json={"value": VALUE}).status_code == 200
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "leaky",
                "url": "https://github.example/acme/leaky.git",
                "forge": "github",
                "secret": "s",
                "pipeline": str(pipeline_file(RETRIED)),
            },
        )
        assert r.status_code == 201, r.text
        with httpx.stream("GET", f"{live.url}/api/v1/events", params={"logs": "true"}, timeout=60) as events:  # no token
            lines = events.iter_lines()
            assert next(lines) == "event: hello"
            run_id = c.post("/api/v1/runs", json={"pipeline": "leaky"}).json()["id"]
            seen = []
            for line in lines:
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    seen.append(line)
                    if data.get("run_id") == run_id and "task" not in data and data.get("status") == "failed":
                        break
    retry = [s for s in seen if '"attempt": 1' in s and "malformed" in s]
    assert retry, seen  # the retry went out, with its reason...
    assert all(VALUE not in s for s in seen), [s for s in seen if VALUE in s]  # ...masked, like everything else
    assert "***" in retry[0]
    record = live.wait_run(run_id, {"failed"})
    assert VALUE not in json.dumps(record)
    assert VALUE not in httpx.get(f"{live.url}/api/v1/runs/{run_id}/logs", params={"format": "text"}).text


def test_a_token_in_a_repository_url_is_refused_by_the_api(live: Live, pipeline_file: Callable[..., Path]) -> None:
    url = f"https://{TOKEN}@github.com/acme/priv.git"
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "priv",
                "url": url,
                "forge": "git",
                "pipeline": str(pipeline_file(SHOWS_URL)),
                "poll_seconds": 60,
            },
        )
    assert r.status_code == 400
    assert "carries credentials" in r.json()["message"] and "~/.git-credentials" in r.json()["message"]
    assert TOKEN not in r.text
    assert httpx.get(live.url + "/api/v1/repositories").json() == []


def test_a_token_stored_by_an_older_version_is_shown_to_no_one(live: Live, pipeline_file: Callable[..., Path]) -> None:
    """A URL with a token that is already in the database: not in listings, run params or step logs."""
    clean = "https://github.example/acme/priv.git"
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "priv",
                "url": clean,
                "forge": "github",
                "secret": "s",
                "pipeline": str(pipeline_file(SHOWS_URL)),
            },
        )
        assert r.status_code == 201, r.text
    with live.server.sql.engine.begin() as conn:  # what an older version let in
        conn.execute(text("UPDATE repositories SET url = :url"), {"url": f"https://{TOKEN}@github.example/acme/priv.git"})
    listed = httpx.get(live.url + "/api/v1/repositories")
    assert listed.json()[0]["repository"]["url"] == clean and TOKEN not in listed.text
    assert TOKEN not in httpx.get(live.url + "/api/v1/repositories/priv").text
    body, headers = signed("s", github_push(clean))
    run_id = httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()["runs"][0]
    record = live.wait_run(run_id, {"succeeded"})
    assert record["params"]["repo_url"] == clean
    logs = httpx.get(f"{live.url}/api/v1/runs/{run_id}/logs", params={"format": "text"}).text
    assert f"cloning {clean}" in logs and TOKEN not in logs
