"""`kill -9` of a real `shipline serve` in the middle of a webhook burst: no delivery lost, none doubled.

The forge's side is played as GitHub plays it: a delivery that got no answer
is delivered again (here, every delivery is, once the server is back).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from helpers import Background
from serverkit import free_port, github_push, signed

URL = "https://github.example/acme/crash.git"
SECRET = "crash-secret"
N = 200
KILL_AFTER = 40  # answers
KILLS = 3  # the kill lands between recording a delivery and starting its run only now and then

SLOW = """
name: slow
params:
  branch: {default: ""}
  revision: {default: ""}
tasks:
  - name: work
    steps: [{run: sleep 0.3}]
"""


def serve(port: int, output: Path) -> subprocess.Popen[bytes]:
    """A `shipline serve`, its output in `output`: a server that does not start says why."""
    server = Background("serve", "--port", str(port), output=output)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server.proc
        except httpx.TransportError:
            pass
        assert server.proc.poll() is None and time.monotonic() < deadline, f"the server did not start: {server.why()}"
        time.sleep(0.1)


async def deliver(url: str, items: list[tuple[bytes, dict[str, str]]], kill: subprocess.Popen[bytes] | None) -> dict[str, Any]:
    """Send every delivery (50 in flight); with `kill`, SIGKILL that server after KILL_AFTER answers."""
    answers: dict[str, Any] = {}
    sem = asyncio.Semaphore(50)

    async def one(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> None:
        async with sem:
            try:
                r = await client.post("/hooks/github", content=body, headers=headers)
            except httpx.TransportError:
                return  # no answer: the forge will deliver it again
            answers[headers["X-GitHub-Delivery"]] = r.json()
            if kill is not None and len(answers) == KILL_AFTER:
                os.kill(kill.pid, signal.SIGKILL)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=50)) as client:
        await asyncio.gather(*(one(client, b, h) for b, h in items))
    await asyncio.sleep(0.1)
    return answers


def all_runs(url: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    before = None
    while True:
        page = httpx.get(url + "/api/v1/runs", params={"limit": 500, **({"before": before} if before else {})}).json()
        runs += page["runs"]
        if (before := page["next_before"]) is None:
            return runs


def test_a_killed_server_loses_and_doubles_no_delivery(home: Path, tmp_path: Path) -> None:
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(SLOW)
    env = {**os.environ, "HOOK_SECRET": SECRET}
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "shipline",
            "repos",
            "add",
            "crash",
            URL,
            "--forge",
            "github",
            "--pipeline",
            str(pipeline),
            "--secret-env",
            "HOOK_SECRET",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    subprocess.run(
        [sys.executable, "-m", "shipline", "repos", "trigger", "add", "crash", "--on", "push", "--concurrency", "parallel"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    items = [signed(SECRET, github_push(URL, "main", name="acme/crash"), delivery=str(uuid.uuid4())) for _ in range(N)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    for kill in range(KILLS):  # each time the forge delivers again what got no answer, and more
        victim = serve(port, tmp_path / f"server-{kill}.out")
        answered = asyncio.run(deliver(url, items, kill=victim))
        victim.wait(30)
        assert victim.returncode == -signal.SIGKILL
        assert KILL_AFTER <= len(answered) < N, "the kill came too late to test anything"

    survivor = serve(port, tmp_path / "server-last.out")
    try:
        again = asyncio.run(deliver(url, items, kill=None))
        assert len(again) == N, "the restarted server answered every redelivery"
        deadline = time.monotonic() + 180
        runs = all_runs(url)
        while any(r["status"] in ("queued", "running") for r in runs):
            assert time.monotonic() < deadline, "runs did not finish"
            time.sleep(0.5)
            runs = all_runs(url)
    finally:
        survivor.terminate()
        survivor.wait(60)

    per_delivery = Counter(run["trigger"]["delivery"] for run in runs)
    sent = {h["X-GitHub-Delivery"] for _, h in items}
    assert set(per_delivery) == sent, f"{len(sent - set(per_delivery))} deliveries lost"
    assert max(per_delivery.values()) == 1, "a delivery started two runs"
    # The dead server's runs are marked interrupted (they can be rerun); every other run ran.
    outcomes = Counter("interrupted" if r["message"].startswith("interrupted") else r["status"] for r in runs)
    assert set(outcomes) <= {"succeeded", "interrupted"} and outcomes["succeeded"] > N // 2, outcomes
