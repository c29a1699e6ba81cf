"""Gitea: a repository made through its API, a git push to it, and the push webhook it sends."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipline.testbed.fixtures import GiteaClient, GiteaRepo

pytestmark = pytest.mark.testbed


class _Hooks:
    def __init__(self) -> None:
        self.received: queue.Queue[tuple[dict[str, str], dict[str, Any]]] = queue.Queue()


@pytest.fixture
def hook_listener() -> Iterator[tuple[str, _Hooks]]:
    hooks = _Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hooks.received.put(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/gitea", hooks
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def test_push_to_a_new_repo_sends_a_push_webhook(
    gitea: GiteaClient, gitea_repo: GiteaRepo, hook_listener: tuple[str, _Hooks], tmp_path: Path
) -> None:
    url, hooks = hook_listener
    gitea.request(
        "POST",
        f"/repos/{gitea_repo.owner}/{gitea_repo.name}/hooks",
        {"type": "gitea", "active": True, "events": ["push"], "config": {"url": url, "content_type": "json", "secret": "s3cret"}},
    )
    work = tmp_path / "work"
    work.mkdir()
    _git("init", "-b", "main", cwd=work)
    (work / "README.md").write_text("hello from the testbed\n")
    _git("add", "README.md", cwd=work)
    _git("-c", "user.name=Test", "-c", "user.email=test@example.invalid", "commit", "-m", "first commit", cwd=work)
    sha = _git("rev-parse", "HEAD", cwd=work).strip()
    _git("push", gitea_repo.clone_url, "main", cwd=work)

    headers, payload = hooks.received.get(timeout=60)
    assert headers["x-gitea-event"] == "push"
    assert "x-gitea-signature" in headers
    assert payload["ref"] == "refs/heads/main"
    assert payload["after"] == sha
    assert payload["repository"]["full_name"] == f"{gitea_repo.owner}/{gitea_repo.name}"
    assert [c["message"].strip() for c in payload["commits"]] == ["first commit"]

    branch = gitea.request("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}/branches/main")
    assert branch["commit"]["id"] == sha
