"""Helpers for server tests: a real shipline server on 127.0.0.1 (uvicorn in a thread), signed payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from shipline.engine.loading import load_pipeline
from shipline.engine.recording import now
from shipline.server.app import Server, create_app
from shipline.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    url: str
    server: Server
    operator_token: str
    read_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait_run(self, run_id: int, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                record: dict[str, Any] = c.get(f"/api/v1/runs/{run_id}").json()
                if record["status"] in statuses:
                    return record
                if time.monotonic() > deadline:
                    raise AssertionError(f"run {run_id} still {record['status']}, wanted {statuses}")
                time.sleep(0.05)


def start_server(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, Server, str]:
    port = free_port()
    app_server = Server.build(settings)
    app = create_app(settings, app_server)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on", timeout_keep_alive=75
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return server, thread, app_server, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


BUILD = """
name: build
params:
  branch: {default: ""}
  revision: {default: ""}
  event: {default: ""}
tasks:
  - name: show
    steps:
      - run: echo "building $BRANCH at $REV"
    env:
      BRANCH: ${{ params.branch }}
      REV: ${{ params.revision }}
"""


def github_push(url: str, branch: str = "main", sha: str | None = None, name: str = "acme/app") -> dict[str, Any]:
    sha = sha or uuid.uuid4().hex + "00000000"
    return {
        "ref": f"refs/heads/{branch}",
        "before": "0" * 39 + "1",
        "after": sha,
        "repository": {"full_name": name, "html_url": url.removesuffix(".git"), "clone_url": url, "default_branch": "main"},
        "pusher": {"name": "dev"},
        "sender": {"login": "dev"},
        "commits": [{"id": sha, "message": "change", "added": [], "removed": [], "modified": ["src/app.py"]}],
        "head_commit": {"id": sha, "message": "change"},
    }


def gitea_push(clone_url: str, html_url: str, branch: str = "main", **repository: str) -> dict[str, Any]:
    """Gitea's push payload (tests/triggers/payloads/gitea_push.json) to `branch` of this repository."""
    payload: dict[str, Any] = json.loads((Path(__file__).parents[1] / "triggers" / "payloads" / "gitea_push.json").read_text())
    payload["ref"] = f"refs/heads/{branch}"
    payload["repository"].update(clone_url=clone_url, html_url=html_url, default_branch="main", **repository)
    return payload


def signed_gitea(secret: str, payload: dict[str, Any], event: str = "push") -> tuple[bytes, dict[str, str]]:
    """The body and headers of a Gitea delivery signed with `secret`."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Gitea-Event": event,
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    return body, headers


def signed(
    secret: str, payload: dict[str, Any], event: str = "push", delivery: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sig,
    }
    return body, headers


def run_of_another_server(live: Live, definition: Path) -> int:
    """A finished run whose step ran under another server sharing this store: its log is in that server's home."""
    store = live.server.sql
    run_id = store.create_run(load_pipeline(definition), {}, owner="builder-2.example:4242:1")
    task = store.get_run(run_id).tasks[0].name
    store.start_step(
        run_id, task, 1, 0, name="build", log_path=f"/srv/shipline-2/logs/{run_id}/{task}.1.0.log", started_at=now(), pid=None
    )
    store.update_run(run_id, status="succeeded")
    return run_id
