"""Webhooks over real HTTP: signed deliveries start the right run, nothing else does."""

from __future__ import annotations

import hashlib
import hmac
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serverkit import BUILD, Live, github_push, signed, signed_gitea, start_server
from sqlalchemy import select, update

from shipline.settings import Settings
from shipline.store.repositories import Role
from shipline.store.server_tables import deliveries, repositories

URL = "https://github.example/acme/app.git"
SECRET = "hook-secret"


def register(live: Live, pipeline: Path, **extra: object) -> None:
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


def test_signed_push_starts_the_right_run(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    payload = github_push(URL, "main", sha="a" * 40)
    body, headers = signed(SECRET, payload)
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 202, r.text
    (run_id,) = r.json()["runs"]
    record = live.wait_run(run_id, {"succeeded", "failed"})
    assert record["status"] == "succeeded"
    assert record["pipeline"] == "build"
    assert record["params"]["branch"] == "main" and record["params"]["revision"] == "a" * 40
    assert record["trigger"]["forge"] == "github" and record["trigger"]["delivery"] == headers["X-GitHub-Delivery"]
    logs = httpx.get(f"{live.url}/api/v1/runs/{run_id}/logs", params={"format": "text"}).text
    assert f"building main at {'a' * 40}" in logs


def test_webhook_secrets_are_sealed_at_rest(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    with live.server.sql.engine.begin() as conn:
        stored = conn.execute(select(repositories.c.secret)).scalar_one()
    assert stored.startswith("fernet:") and SECRET not in stored
    # A secret stored in clear by an older shipline still verifies.
    with live.server.sql.engine.begin() as conn:
        conn.execute(update(repositories).values(secret=SECRET))
    body, headers = signed(SECRET, github_push(URL))
    assert httpx.post(live.url + "/hooks/github", content=body, headers=headers).status_code == 202


def test_wrong_or_missing_signature_is_401_and_starts_nothing(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    body, headers = signed("not-the-secret", github_push(URL))
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 401 and "does not match" in r.json()["message"]
    del headers["X-Hub-Signature-256"]
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 401 and "missing" in r.json()["message"]
    # A body changed after signing is refused too.
    body, headers = signed(SECRET, github_push(URL))
    r = httpx.post(live.url + "/hooks/github", content=body.replace(b"main", b"mainx"), headers=headers)
    assert r.status_code == 401
    assert httpx.get(live.url + "/api/v1/runs").json()["runs"] == []
    metrics = httpx.get(live.url + "/metrics").text
    assert 'shipline_webhook_deliveries_total{forge="github",result="unauthorized"} 3.0' in metrics


def test_redelivery_is_ignored(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    body, headers = signed(SECRET, github_push(URL), delivery="delivery-1")
    first = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    again = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert first.status_code == 202 and len(first.json()["runs"]) == 1
    assert again.status_code == 200 and again.json()["result"] == "duplicate" and again.json()["runs"] == []
    assert len(httpx.get(live.url + "/api/v1/runs").json()["runs"]) == 1


DEAD_SERVER = f"{socket.gethostname()}:{2**22 + 1}:0"  # a pid above Linux's pid_max: no such process


def _as_if_a_server_died_handling(live: Live, delivery: str) -> None:
    """Leave the delivery as a server killed mid-way leaves it: claimed by that (dead) server, unfinished."""
    with live.server.sql.engine.begin() as conn:
        conn.execute(
            update(deliveries).where(deliveries.c.delivery_id == delivery).values(result="received", claimed_by=DEAD_SERVER)
        )


def test_a_delivery_orphaned_by_a_crash_is_not_lost_nor_doubled(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    repo = live.server.state.get_repository("app")
    # Died after recording the delivery, before starting its run: the redelivery starts it.
    live.server.state.claim_delivery("github", "crash-before-run", repo.id, "push", DEAD_SERVER, lambda *_: False)
    body, headers = signed(SECRET, github_push(URL), delivery="crash-before-run")
    retried = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert retried.status_code == 202 and len(retried.json()["runs"]) == 1, retried.text
    # Died after starting the run, before recording that: the redelivery finds the run.
    body, headers = signed(SECRET, github_push(URL), delivery="crash-after-run")
    (first,) = httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()["runs"]
    _as_if_a_server_died_handling(live, "crash-after-run")
    again = httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()
    assert again["result"] == "duplicate" and again["runs"] == [first], again
    # A delivery that a live server is handling right now is a plain duplicate.
    live.server.state.claim_delivery("github", "in-flight", repo.id, "push", live.server.engine.owner, lambda *_: False)
    body, headers = signed(SECRET, github_push(URL), delivery="in-flight")
    assert httpx.post(live.url + "/hooks/github", content=body, headers=headers).json()["result"] == "duplicate"
    assert len(httpx.get(live.url + "/api/v1/runs").json()["runs"]) == 2


def test_ping_unknown_repo_and_rules(live: Live, pipeline_file: Callable[..., Path]) -> None:
    register(live, pipeline_file(BUILD))
    ping = {"zen": "Keep it logically awesome.", "hook_id": 1, "repository": {"full_name": "acme/app", "clone_url": URL}}
    body, headers = signed(SECRET, ping, event="ping")
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["result"] == "ping"
    body, headers = signed(SECRET, github_push("https://github.example/other/repo.git"))
    assert httpx.post(live.url + "/hooks/github", content=body, headers=headers).status_code == 404
    # Default rule: only pushes to the default branch.
    body, headers = signed(SECRET, github_push(URL, "feature/x"))
    r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["result"] == "ignored"
    # A body that is not JSON: 400 when signed with the secret, 401 (parsed not at all) when not.
    assert httpx.post(live.url + "/hooks/github", content=b"{nope", headers=headers).status_code == 401
    headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(SECRET.encode(), b"{nope", hashlib.sha256).hexdigest()
    assert httpx.post(live.url + "/hooks/github", content=b"{nope", headers=headers).status_code == 400
    assert httpx.get(live.url + "/api/v1/runs").json()["runs"] == []


def test_gitlab_token_and_pull_request_rules(live: Live, pipeline_file: Callable[..., Path]) -> None:
    pipeline = pipeline_file(BUILD.replace('  event: {default: ""}', '  event: {default: ""}\n  pr_number: {default: ""}'))
    gl_url = "http://gitlab.example/group/svc.git"
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "svc",
                "url": gl_url,
                "forge": "gitlab",
                "secret": "gl-token",
                "pipeline": str(pipeline),
                "triggers": [{"on": "pull_request"}, {"on": "tag", "tags": ["v*"]}],
            },
        )
        assert r.status_code == 201, r.text
    mr = {
        "object_kind": "merge_request",
        "user": {"username": "dev"},
        "project": {"path_with_namespace": "group/svc", "git_http_url": gl_url, "default_branch": "main"},
        "object_attributes": {
            "iid": 5,
            "title": "Add thing",
            "action": "open",
            "source_branch": "feature",
            "target_branch": "main",
            "last_commit": {"id": "c" * 40},
        },
    }
    headers = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": "wrong", "Idempotency-Key": str(uuid.uuid4())}
    assert httpx.post(live.url + "/hooks/gitlab", json=mr, headers=headers).status_code == 401
    headers["X-Gitlab-Token"] = "gl-token"
    r = httpx.post(live.url + "/hooks/gitlab", json=mr, headers=headers)
    assert r.status_code == 202, r.text
    record = live.wait_run(r.json()["runs"][0], {"succeeded"})
    assert record["params"]["pr_number"] == "5" and record["params"]["branch"] == "feature"
    assert record["params"]["event"] == "pull_request"


def test_hostile_branch_names_stay_data(live: Live, pipeline_file: Callable[..., Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    Path("/tmp/pwned").unlink(missing_ok=True)
    register(live, pipeline_file(BUILD))
    with live.client(live.operator_token) as c:
        assert c.post("/api/v1/repositories/app/triggers", json={"on": "push", "concurrency": "parallel"}).status_code == 201
    for branch in ("$(touch /tmp/pwned)", f"$(touch {marker})", "../../etc", f"`touch {marker}`;x", "a\nb"):
        body, headers = signed(SECRET, github_push(URL, branch))
        r = httpx.post(live.url + "/hooks/github", content=body, headers=headers)
        assert r.status_code == 202, r.text
        record = live.wait_run(r.json()["runs"][0], {"succeeded", "failed"})
        assert record["status"] == "succeeded" and record["params"]["branch"] == branch
        steps = httpx.get(f"{live.url}/api/v1/runs/{record['id']}/logs").json()
        text = "\n".join(line["text"] for step in steps for line in step["lines"])
        assert f"building {branch} at" in text
    assert not marker.exists() and not Path("/tmp/pwned").exists()
    # Nothing was created outside the server's home from the branch names either.
    assert not (live.server.settings.workspaces.parent.parent / "etc").exists()


def test_gitea_signature_header(live: Live, pipeline_file: Callable[..., Path]) -> None:
    url = "http://gitea.example:3000/team/app.git"
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "gt",
                "url": url,
                "forge": "gitea",
                "secret": "g",
                "pipeline": str(pipeline_file(BUILD)),
            },
        )
        assert r.status_code == 201
    body, headers = signed_gitea("g", github_push(url, "main"))
    r = httpx.post(live.url + "/hooks/gitea", content=body, headers=headers)
    assert r.status_code == 202, r.text
    # The same body to the GitHub endpoint is a different forge: no GitHub repository's secret signed it.
    assert httpx.post(live.url + "/hooks/github", content=body, headers=headers).status_code == 401


@pytest.mark.postgres
def test_webhooks_on_postgresql(settings: Settings, postgres_url: str, pipeline_file: Callable[..., Path]) -> None:
    uv, thread, server, url = start_server(settings.model_copy(update={"database_url": postgres_url, "queue_poll_seconds": 0.05}))
    try:
        _, token = server.state.create_token("pg", Role.OPERATOR)
        live = Live(url, server, token, token)
        register(live, pipeline_file(BUILD))
        body, headers = signed(SECRET, github_push(URL, "main"))
        first = httpx.post(url + "/hooks/github", content=body, headers=headers)
        again = httpx.post(url + "/hooks/github", content=body, headers=headers)
        assert first.status_code == 202 and again.json()["result"] == "duplicate"
        assert live.wait_run(first.json()["runs"][0], {"succeeded"})["params"]["branch"] == "main"
        assert len(httpx.get(url + "/api/v1/runs").json()["runs"]) == 1
    finally:
        uv.should_exit = True
        thread.join(30)
