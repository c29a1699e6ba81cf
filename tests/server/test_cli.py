"""`shipline repos`, `shipline tokens` and `shipline serve` as a user runs them."""

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
from serverkit import BUILD, Live, free_port

from shipline.executors import cgroups


def shipline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def serving(port: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A real `shipline serve` on `port` (its output piped), once it answers /readyz."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipline", "serve", "--port", str(port)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the server did not start: " + proc.communicate()[1][-3000:])
        time.sleep(0.1)


def test_repos_and_tokens_commands(home: Path, pipeline_file: Callable[..., Path]) -> None:
    pipeline = pipeline_file(BUILD)
    r = shipline(
        "repos",
        "add",
        "app",
        "https://gitea.example/t/app.git",
        "--forge",
        "gitea",
        "--pipeline",
        str(pipeline),
        "--generate-secret",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["name"] == "app" and len(added["secret"]) == 48
    r = shipline("repos", "add", "app", "https://x/y.git", "--forge", "gitea", "--pipeline", str(pipeline), "--generate-secret")
    assert r.returncode == 1 and "already registered" in r.stderr
    r = shipline("repos", "add", "nosecret", "https://x/y.git", "--forge", "github", "--pipeline", str(pipeline))
    assert r.returncode == 2 and "needs a webhook secret" in r.stderr
    r = shipline("repos", "trigger", "add", "app", "--on", "tag", "--tag", "v*", "-p", "stage=release", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rule"]["params"] == {"stage": "release"}
    r = shipline("repos", "trigger", "add", "app", "--on", "schedule")
    assert r.returncode == 2 and "needs `cron`" in r.stderr
    listed = json.loads(shipline("repos", "list", "--json").stdout)
    assert [x["name"] for x in listed] == ["app"] and listed[0]["triggers"][0]["rule"]["on"] == "tag"
    assert "secret" not in listed[0]
    r = shipline("tokens", "create", "--name", "ci", "--role", "operator", "--json")
    token = json.loads(r.stdout)
    assert token["role"] == "operator" and token["secret"].startswith("shp_")
    assert "shp_" not in shipline("tokens", "list", "--json").stdout
    assert shipline("repos", "remove", "app").returncode == 0
    assert shipline("repos", "remove", "app").returncode == 2


def test_serve_starts_and_bad_settings_stop_it(home: Path, tmp_path: Path) -> None:
    bad = shipline("serve", env={"SHIPLINE_PORT": "99999"})
    assert bad.returncode == 2 and "port" in bad.stderr and "65535" in bad.stderr
    config = tmp_path / "config.toml"
    config.write_text('log_format = "xml"\n')
    bad = shipline("serve", env={"SHIPLINE_CONFIG": str(config)})
    assert bad.returncode == 2 and "log_format" in bad.stderr and str(config) in bad.stderr

    operator = json.loads(shipline("tokens", "create", "--name", "t", "--role", "operator", "--json").stdout)["secret"]
    (home / "pipelines").mkdir(parents=True, exist_ok=True)
    (home / "pipelines" / "one.yaml").write_text("name: one\ntasks: [{name: a, steps: [{run: 'true'}]}]\n")
    port = free_port()
    proc = serving(port)
    try:
        deadline = time.monotonic() + 60
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/runs").json()["runs"] == []
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/runs", params={"token": "shp_secretvalue"}).status_code == 401
        auth = {"Authorization": f"Bearer {operator}"}
        repo = {"name": "one", "url": "https://forge.example/acme/one.git", "forge": "git", "pipeline": "one.yaml"}
        assert httpx.post(f"http://127.0.0.1:{port}/api/v1/repositories", json=repo, headers=auth).status_code == 201
        answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/runs", json={"pipeline": "one"}, headers=auth)
        assert answer.status_code == 201, answer.text
        run = answer.json()["id"]
        while httpx.get(f"http://127.0.0.1:{port}/api/v1/runs/{run}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline + 60, "the run did not succeed"
            time.sleep(0.05)
        where = cgroups.hierarchy()
        engine_folders = [] if where is None else list(where.base.glob(f"{proc.pid}-*"))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # SIGTERM: a graceful stop, and a normal exit (exit handlers run: the engine's cgroup folder goes).
    assert proc.returncode == 0
    if where is not None:
        assert engine_folders and not any(f.exists() for f in engine_folders)
    assert any(json.loads(line).get("message") == "server stopped" for line in err.splitlines())
    assert "shp_secretvalue" not in err and "token=***" in err  # access logs never show a token
    first = json.loads(err.splitlines()[0])  # structured logs: one JSON object per line
    assert {"time", "level", "logger", "message"} <= set(first)
    assert any(json.loads(line).get("message") == "server ready" for line in err.splitlines())


def test_cron_schedule_starts_runs(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "nightly",
                "url": "/srv/none.git",
                "forge": "git",
                "pipeline": str(pipeline_file(BUILD)),
                "default_branch": "develop",
                # six fields: croniter's seconds, so the test need not wait for a minute to turn
                "triggers": [{"on": "schedule", "cron": "* * * * * *", "concurrency": "parallel"}],
            },
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while not (runs := c.get("/api/v1/runs").json()["runs"]):
            assert time.monotonic() < deadline, "the schedule never fired"
            time.sleep(0.1)
        c.delete(f"/api/v1/triggers/{r.json()['triggers'][0]['id']}")
    record = live.wait_run(runs[-1]["id"], {"succeeded"})
    assert record["trigger"]["source"] == "cron" and record["params"]["branch"] == "develop"
    assert record["params"]["event"] == "schedule"


def test_repos_add_refuses_a_token_in_the_url_and_says_how_to_give_one(home: Path, pipeline_file: Callable[..., Path]) -> None:
    token = "ghp_Zq4cJ8x2LbN7vR1tY6wE3uK9pA0sD5fG"
    pipeline = str(pipeline_file(BUILD))
    for url in (f"https://{token}@github.com/acme/priv.git", f"https://ci:{token}@github.com/acme/priv.git"):
        r = shipline("repos", "add", "priv", url, "--forge", "git", "--poll", "60", "--pipeline", pipeline)
        assert r.returncode == 2, r.stderr
        assert "carries credentials" in r.stderr and "'https://github.com/acme/priv.git'" in r.stderr
        assert "~/.git-credentials" in r.stderr and "shipline secrets set" in r.stderr
        assert token not in r.stderr + r.stdout and "Traceback" not in r.stderr
    r = shipline("repos", "add", "x", "https://github.com:abc/x.git", "--forge", "git", "--pipeline", pipeline)
    assert r.returncode == 2 and "not a port number" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(shipline("repos", "list", "--json").stdout) == []
    assert not any(token.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_serve_told_to_stop_lets_its_runs_end_and_told_again_cancels_them(home: Path) -> None:
    """SHIPLINE_DRAIN_SECONDS: a restart for an upgrade need not cancel a deploy; a second SIGTERM (or Ctrl-C) does not wait."""
    operator = json.loads(shipline("tokens", "create", "--name", "t", "--role", "operator", "--json").stdout)["secret"]
    (home / "pipelines").mkdir(parents=True, exist_ok=True)
    (home / "pipelines" / "sleeper.yaml").write_text(
        "name: sleeper\nparams: {seconds: {}}\ntasks: [{name: a, steps: [{run: 'sleep ${{ params.seconds }}'}]}]\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serving(port, {"SHIPLINE_DRAIN_SECONDS": "600"})

    def status(run_id: int) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(shipline("runs", "show", str(run_id), "--json").stdout)
        return shown

    try:
        deadline = time.monotonic() + 60
        auth = {"Authorization": f"Bearer {operator}"}
        repo = {"name": "s", "url": "https://forge.example/acme/s.git", "forge": "git", "pipeline": "sleeper.yaml"}
        assert httpx.post(f"{url}/api/v1/repositories", json=repo, headers=auth).status_code == 201
        short, long = (
            httpx.post(f"{url}/api/v1/runs", json={"pipeline": "sleeper", "params": {"seconds": s}}, headers=auth).json()["id"]
            for s in ("2", "300")
        )
        while any(httpx.get(f"{url}/api/v1/runs/{i}").json()["status"] != "running" for i in (short, long)):
            assert time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.05)
        proc.terminate()
        # It drains: its runs go on, and it still answers (not ready: a load balancer looks elsewhere).
        while httpx.get(f"{url}/api/v1/runs/{short}").json()["status"] == "running":
            assert time.monotonic() < deadline + 30 and proc.poll() is None, "the short run did not end"
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert httpx.get(f"{url}/api/v1/runs/{long}").json()["status"] == "running"
        later = httpx.post(f"{url}/api/v1/runs", json={"pipeline": "sleeper", "params": {"seconds": "0"}}, headers=auth)
        assert later.status_code == 201, later.text  # taken, and left queued for another server or the next start
        proc.terminate()  # told again: it cancels what it waited for
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    said = [json.loads(line).get("message", "") for line in err.splitlines()]
    assert "stopping: waiting up to 600s for 2 runs to end (drain_seconds); stop it again to cancel them now" in said
    assert status(short)["status"] == "succeeded"
    cancelled = status(long)
    assert cancelled["status"] == "cancelled" and "told again to stop" in cancelled["message"], cancelled
    assert status(later.json()["id"])["status"] == "queued"
