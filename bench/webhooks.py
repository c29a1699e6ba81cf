"""Load test: a burst of signed GitHub push webhooks against a real `shipline serve` on SQLite.

Starts the server as a subprocess on 127.0.0.1 (loopback only), registers one
repository, sends N deliveries at once (bounded concurrency), sends every one
of them again (redeliveries must start nothing), waits for the runs to end,
then checks that exactly N runs exist, one per delivery, and prints:

  - delivery -> queued: the webhook's HTTP round trip (the run exists when it answers)
  - delivery -> running: from sending the webhook to the run's `started_at`

Figures go to stdout and, as JSON, to bench/results/webhooks.json.

    .venv/bin/python bench/webhooks.py                  # 500 deliveries
    .venv/bin/python bench/webhooks.py -n 200 --max-parallel 8
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
REPO_URL = "https://github.example/bench/app.git"
PIPELINE = """\
name: bench
params:
  branch: {default: main}
  revision: {default: ""}
tasks:
  - name: build
    steps:
      - run: echo "build $REV"
    env:
      REV: ${{ params.revision }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def payload(sha: str) -> bytes:
    return json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "repository": {"full_name": "bench/app", "clone_url": REPO_URL, "default_branch": "main"},
            "pusher": {"name": "bench"},
            "sender": {"login": "bench"},
            "commits": [{"id": sha, "message": "bench", "added": [], "removed": [], "modified": ["x"]}],
            "head_commit": {"id": sha, "message": "bench"},
        }
    ).encode()


async def deliver(
    client: httpx.AsyncClient, sem: asyncio.Semaphore, delivery: str, body: bytes
) -> tuple[str, float, float, int, list[int]]:
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sig,
        "Content-Type": "application/json",
    }
    async with sem:
        sent = time.time()
        t0 = time.perf_counter()
        r = await client.post("/hooks/github", content=body, headers=headers)
        took = time.perf_counter() - t0
    runs = r.json().get("runs", []) if r.headers.get("content-type", "").startswith("application/json") else []
    return delivery, sent, took, r.status_code, runs


async def burst(url: str, items: list[tuple[str, bytes]], concurrency: int) -> list[tuple[str, float, float, int, list[int]]]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        results = await asyncio.gather(*(deliver(client, sem, d, b) for d, b in items))
    await asyncio.sleep(0.1)  # let closed connections finish closing before the loop goes
    return results


def all_runs(client: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if before is not None:
            params["before"] = before
        page = client.get("/api/v1/runs", params=params).json()
        out.extend(page["runs"])
        before = page["next_before"]
        if before is None:
            return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--deliveries", type=int, default=500)
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--max-parallel", type=int, default=None, help="the server's max_parallel (default: its own)")
    parser.add_argument(
        "--single",
        type=int,
        default=20,
        help="afterwards, this many deliveries one at a time on the idle server (latency without a queue)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "webhooks.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="shipline-bench-"))
    (home / "pipeline.yaml").write_text(PIPELINE)
    port = free_port()
    env = {**os.environ, "SHIPLINE_HOME": str(home), "SHIPLINE_LOG_LEVEL": "warning"}
    env.pop("SHIPLINE_DATABASE_URL", None)
    env.pop("SHIPLINE_CONFIG", None)
    if args.max_parallel:
        env["SHIPLINE_MAX_PARALLEL"] = str(args.max_parallel)
    cli = [sys.executable, "-m", "shipline"]
    token = subprocess.run(
        [*cli, "tokens", "create", "--name", "bench", "--role", "operator"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    log = (home / "server.log").open("w")
    server = subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print((home / "server.log").read_text()[-3000:], file=sys.stderr)
                return 2
            time.sleep(0.1)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            r = c.post(
                "/api/v1/repositories",
                json={
                    "name": "bench",
                    "url": REPO_URL,
                    "forge": "github",
                    "secret": SECRET,
                    "pipeline": str(home / "pipeline.yaml"),
                    "triggers": [{"on": "push", "concurrency": "parallel"}],
                },
            )
            r.raise_for_status()

        items = [(str(uuid.uuid4()), payload(uuid.uuid4().hex + uuid.uuid4().hex[:8])) for _ in range(args.deliveries)]
        t_start = time.perf_counter()
        first = asyncio.run(burst(url, items, args.concurrency))
        burst_seconds = time.perf_counter() - t_start
        again = asyncio.run(burst(url, items, args.concurrency))

        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                runs = all_runs(c)
                if (
                    runs
                    and all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs)
                    and len(runs) >= args.deliveries
                ):
                    break
                if time.monotonic() > deadline:
                    print("timed out waiting for runs to end", file=sys.stderr)
                    break
                time.sleep(0.5)
            single: list[float] = []
            for _ in range(args.single):
                delivery, body = str(uuid.uuid4()), payload(uuid.uuid4().hex + uuid.uuid4().hex[:8])
                _, sent, _, code, ids = asyncio.run(burst(url, [(delivery, body)], 1))[0]
                assert code == 202 and ids, code
                while not (run := c.get(f"/api/v1/runs/{ids[0]}").json())["started_at"]:
                    time.sleep(0.005)
                single.append(datetime.fromisoformat(run["started_at"]).timestamp() - sent)
                while run["status"] not in ("succeeded", "failed", "cancelled"):
                    time.sleep(0.02)
                    run = c.get(f"/api/v1/runs/{ids[0]}").json()
            metrics = c.get("/metrics").text
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    sent_at = {d: sent for d, sent, _, _, _ in first}
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_delivery.setdefault(str((run.get("trigger") or {}).get("delivery")), []).append(run)
    lost = [d for d in sent_at if d not in by_delivery]
    doubled = [d for d, rs in by_delivery.items() if len(rs) > 1]
    first_codes = sorted({code for *_, code, _ in first})
    again_codes = sorted({code for *_, code, _ in again})
    again_runs = sum(len(r) for *_, r in again)
    to_running = []
    for d, sent in sent_at.items():
        for run in by_delivery.get(d, []):
            if run["started_at"]:
                to_running.append(datetime.fromisoformat(run["started_at"]).timestamp() - sent)
    http = [took for _, _, took, _, _ in first]
    queue_wait = [
        datetime.fromisoformat(r["started_at"]).timestamp() - datetime.fromisoformat(r["created_at"]).timestamp()
        for r in runs
        if r["started_at"]
    ]
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    result = {
        "deliveries": args.deliveries,
        "concurrency": args.concurrency,
        "database": "sqlite",
        "runs": len(runs),
        "run_statuses": statuses,
        "lost": len(lost),
        "doubled": len(doubled),
        "first_burst_http_statuses": first_codes,
        "redelivery_http_statuses": again_codes,
        "runs_started_by_redeliveries": again_runs,
        "burst_seconds": round(burst_seconds, 3),
        "deliveries_per_second": round(args.deliveries / burst_seconds, 1),
        "delivery_to_queued_seconds": {
            "p50": round(pct(http, 50), 4),
            "p99": round(pct(http, 99), 4),
            "max": round(max(http), 4),
        },
        "delivery_to_running_seconds": {
            "p50": round(pct(to_running, 50), 4),
            "p99": round(pct(to_running, 99), 4),
            "max": round(max(to_running), 4),
            "mean": round(statistics.fmean(to_running), 4),
        }
        if to_running
        else None,
        "queued_to_running_seconds": {"p50": round(pct(queue_wait, 50), 4), "p99": round(pct(queue_wait, 99), 4)}
        if queue_wait
        else None,
        "delivery_to_running_min_seconds": round(min(to_running), 4) if to_running else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "git": shutil.which("git") is not None},
        "max_parallel": args.max_parallel or "server default",
        "webhook_metrics": [line for line in metrics.splitlines() if line.startswith("shipline_webhook_deliveries_total")],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.deliveries} deliveries in {burst_seconds:.2f}s ({result['deliveries_per_second']}/s), "
        f"{args.concurrency} in flight, SQLite"
    )
    print(f"runs: {len(runs)} (lost {len(lost)}, doubled {len(doubled)}); redeliveries started {again_runs}; statuses {statuses}")
    q = result["delivery_to_queued_seconds"]
    print(f"delivery -> queued  (HTTP answer): p50 {q['p50'] * 1000:.1f} ms   p99 {q['p99'] * 1000:.1f} ms")
    if to_running:
        rr = result["delivery_to_running_seconds"]
        assert rr is not None
        print(
            f"delivery -> running (started_at):  p50 {rr['p50'] * 1000:.1f} ms   p99 {rr['p99'] * 1000:.1f} ms"
            f"   (min {min(to_running) * 1000:.1f} ms)"
        )
        qw = result["queued_to_running_seconds"]
        assert isinstance(qw, dict)
        print(f"queued  -> running (in the queue): p50 {qw['p50'] * 1000:.1f} ms   p99 {qw['p99'] * 1000:.1f} ms")
    print(f"written: {args.out}")
    if single:
        result["single_delivery_to_running_seconds"] = {
            "n": len(single),
            "p50": round(pct(single, 50), 4),
            "p99": round(pct(single, 99), 4),
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"one at a time, idle server ({len(single)}): delivery -> running p50 {pct(single, 50) * 1000:.1f} ms"
            f"   p99 {pct(single, 99) * 1000:.1f} ms"
        )
    ok = len(runs) == args.deliveries and not lost and not doubled and again_runs == 0
    shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
