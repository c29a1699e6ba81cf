"""A bounded burst on loopback: 500 signed deliveries -> exactly 500 runs, none lost, none doubled.

Counts only: timings are bench/webhooks.py's business, never a test's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from serverkit import BUILD, Live, github_push, signed

URL = "https://github.example/acme/load.git"
SECRET = "load"
N = 500


async def burst(url: str, items: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        responses = await asyncio.gather(*(client.post("/hooks/github", content=b, headers=h) for b, h in items))
    await asyncio.sleep(0.1)  # let the closed connections' transports finish closing before the loop goes
    return responses


def test_500_deliveries_make_exactly_500_runs(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "load",
                "url": URL,
                "forge": "github",
                "secret": SECRET,
                "pipeline": str(pipeline_file(BUILD)),
                "triggers": [{"on": "push", "concurrency": "parallel"}],
            },
        )
        assert r.status_code == 201
    items = [signed(SECRET, github_push(URL, "main"), delivery=str(uuid.uuid4())) for _ in range(N)]
    first = asyncio.run(burst(live.url, items))
    again = asyncio.run(burst(live.url, items))  # every delivery redelivered
    assert {r.status_code for r in first} == {202}
    assert {r.json()["result"] for r in again} == {"duplicate"}
    run_ids = [r.json()["runs"][0] for r in first]
    assert len(set(run_ids)) == N

    runs = []
    before = None
    with live.client() as c:
        while True:
            page = c.get("/api/v1/runs", params={"limit": 500, **({"before": before} if before else {})}).json()
            runs.extend(page["runs"])
            before = page["next_before"]
            if before is None:
                break
    assert len(runs) == N
    deliveries = [run["trigger"]["delivery"] for run in runs]
    assert sorted(deliveries) == sorted(h["X-GitHub-Delivery"] for _, h in items)
    assert sorted(r["id"] for r in runs) == sorted(run_ids)


FIVE = "name: five\ntasks:\n" + "".join(f"  - name: t{i}\n    steps: [{{run: 'true'}}]\n" for i in range(5))
RUNS = 200


async def submit_all(url: str, token: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=50)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as client:
        responses = await asyncio.gather(*(client.post("/api/v1/runs", json={"pipeline": "five"}) for _ in range(n)))
    await asyncio.sleep(0.1)
    return responses


def test_a_burst_of_api_runs_finishes_each_run_exactly_once(live: Live, pipeline_file: Callable[..., Path]) -> None:
    with live.client(live.operator_token) as c:
        r = c.post(
            "/api/v1/repositories",
            json={
                "name": "five",
                "url": "https://forge.example/acme/five.git",
                "forge": "git",
                "pipeline": str(pipeline_file(FIVE, "five.yaml")),
            },
        )
        assert r.status_code == 201, r.text
    responses = asyncio.run(submit_all(live.url, live.operator_token, RUNS))
    assert {r.status_code for r in responses} == {201}
    run_ids = [r.json()["id"] for r in responses]
    assert len(set(run_ids)) == RUNS
    for run_id in run_ids:
        live.wait_run(run_id, {"succeeded", "failed", "cancelled"}, timeout=300)

    runs = []
    before = None
    with live.client() as c:
        while True:
            page = c.get("/api/v1/runs", params={"limit": 50, **({"before": before} if before else {})}).json()
            runs.extend(page["runs"])
            before = page["next_before"]
            if before is None:
                break
    assert sorted(r["id"] for r in runs) == sorted(run_ids)  # none lost, none doubled, none extra
    assert {r["status"] for r in runs} == {"succeeded"}
    assert all([t["status"] for t in r["tasks"]] == ["succeeded"] * 5 for r in runs)
    assert all(len(t["steps"]) == 1 and t["steps"][0]["exit_code"] == 0 for r in runs for t in r["tasks"])
