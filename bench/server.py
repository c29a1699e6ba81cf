"""Server benchmarks: a burst of API runs, and a store with a long history.

    python bench/server.py                 # 1,000-run bursts (3 times), 10,000 runs of history
    python bench/server.py --quick         # one burst of 200, 2,000 runs of history

Each part starts a real `shipline serve` on 127.0.0.1 (SQLite, the default
parallelism, an operator token) as a subprocess and measures it from outside.

(a) burst: N five-task runs POSTed to /api/v1/runs at once (64 requests in
    flight); every run must exist once and end `succeeded` (none lost, none
    doubled).  Runs per second from the first request to the last run's end,
    beside the floor: the same 5*N `bash -c true` through `xargs -P` with the
    server's parallelism.
(b) idle latency: one run at a time on the idle server, from sending the
    POST to the run's `started_at`; beside the floor, a GET /healthz round trip.
(c) history: H finished five-task runs with their step logs put straight into
    the store (what is measured is not how they got there), then a server on
    it: its RSS at rest and after the requests below, the first page of
    GET /api/v1/runs and of the dashboard's runs page (the HTML, its script and
    the API call it makes), other list queries, and `shipline runs list`;
    beside `python -c pass` (the CLI's floor) and one SQLite query of a page
    of rows (the store's floor).

Prints a table, writes bench/results/server.json.  Not a test: nothing here
asserts a time.  The load average is recorded with each part: the machine is
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h11
import httpx

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "shipline"]
TASKS = 5
PIPELINE = "name: five\ntasks:\n" + "".join(f"  - name: t{i}\n    steps: [{{run: 'true'}}]\n" for i in range(TASKS))
DONE = ("succeeded", "failed", "cancelled")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of the process itself, and of its children it has reaped (the steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def rss_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now, and its peak (VmHWM), in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss" if key == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024, 1)
    return out


@dataclass
class Server:
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    url: str
    token: str

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120, **kw)


def home_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "SHIPLINE_HOME": str(home), "SHIPLINE_LOG_LEVEL": "warning"}
    for name in ("SHIPLINE_DATABASE_URL", "SHIPLINE_CONFIG", "SHIPLINE_MAX_PARALLEL"):
        env.pop(name, None)
    return env


@contextmanager
def serving(home: Path) -> Iterator[Server]:
    """A `shipline serve` on `home` with a repository whose pipeline is five `true` tasks."""
    env = home_env(home)
    pipelines = home / "pipelines"
    pipelines.mkdir(parents=True, exist_ok=True)
    (pipelines / "five.yaml").write_text(PIPELINE)
    token = subprocess.run(
        [*CLI, "tokens", "create", "--name", "bench", "--role", "operator"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log)
    server = Server(home, env, proc, f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start:\n" + (home / "server.log").read_text()[-3000:])
            time.sleep(0.05)
        with server.client() as c:
            if not any(r["repository"]["name"] == "bench" for r in c.get("/api/v1/repositories").json()):
                c.post(
                    "/api/v1/repositories",
                    json={
                        "name": "bench",
                        "url": "https://forge.example/bench/app.git",
                        "forge": "git",
                        "pipeline": "five.yaml",
                    },
                ).raise_for_status()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def started_at(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["started_at"]).timestamp()


def all_runs(c: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = None
    while True:
        page = c.get("/api/v1/runs", params={"limit": 500, **({"before": before} if before else {})}).json()
        out.extend(page["runs"])
        if (before := page["next_before"]) is None:
            return out


def wait_until_done(c: httpx.Client, expected: int, timeout: float) -> None:
    """Until `expected` runs have ended (read from /metrics: one cheap query per look)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("shipline_runs{"):
                status = line.split('"')[1]
                if status in DONE:
                    done += int(float(line.rsplit(" ", 1)[1]))
        if done >= expected:
            return
        time.sleep(0.25)
    raise SystemExit(f"timed out: fewer than {expected} runs ended in {timeout:.0f}s")


# --- floors -------------------------------------------------------------------------------


def commands_floor(n: int, parallel: int) -> float:
    """n `bash -c true`, `parallel` at a time: what the steps themselves cost."""
    script = f"seq {n} | xargs -P {parallel} -I{{}} bash --noprofile --norc -eo pipefail -c true"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def default_parallel() -> int:
    from shipline.settings import load_settings

    return load_settings({}).max_parallel


def python_floor() -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- (a) and (b): the burst and the idle server ---------------------------------------------


async def _submit_all(url: str, token: str, n: int, in_flight: int) -> list[tuple[float, int, int]]:
    """(sent at, HTTP status, run id) of n POST /api/v1/runs, `in_flight` at a time.

    Over `in_flight` kept-alive connections with h11 (HTTP/1.1, the protocol library under
    httpx): httpx's async client took 9 ms of CPU per request here, a fifth of this 2-core
    machine during a burst, taken from the server it measures; this takes well under 1 ms.
    """
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"pipeline": "five"}).encode()
    headers = [
        ("Host", f"{host}:{port}"),
        ("Authorization", f"Bearer {token}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    results: list[tuple[float, int, int]] = []
    left = iter(range(n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        conn = h11.Connection(our_role=h11.CLIENT)
        try:
            for _ in left:
                sent = time.time()
                request = h11.Request(method="POST", target="/api/v1/runs", headers=headers)
                writer.write(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                status, answer = 0, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        answer += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise SystemExit("the server closed a connection in the middle of a request")
                conn.start_next_cycle()
                results.append((sent, status, json.loads(answer).get("id", -1) if status == 201 else -1))
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(min(in_flight, n))))
    return results


def burst(work: Path, n: int, in_flight: int, label: str) -> dict[str, Any]:
    with serving(work / f"home-burst-{label}") as server, server.client() as c:
        before = load()
        cpu0 = cpu_seconds(server.proc.pid)
        start = time.time()
        sent = asyncio.run(_submit_all(server.url, server.token, n, in_flight))
        answered = time.time() - start
        wait_until_done(c, n, timeout=max(600, n))
        cpu1 = cpu_seconds(server.proc.pid)
        runs = all_runs(c)
        rss = rss_mib(server.proc.pid)
    codes = sorted({code for _, code, _ in sent})
    ids = [run_id for _, _, run_id in sent]
    by_id = {r["id"]: r for r in runs}
    lost = [i for i in ids if i not in by_id]
    doubled = len(ids) - len(set(ids)) + max(0, len(runs) - len(set(ids)))
    succeeded = sum(
        r["status"] == "succeeded" and len(r["tasks"]) == TASKS and all(t["status"] == "succeeded" for t in r["tasks"])
        for r in runs
    )
    end = max(datetime.fromisoformat(r["finished_at"]).timestamp() for r in runs if r["finished_at"])
    to_running = [started_at(by_id[i]) - at for at, _, i in sent if i in by_id and by_id[i]["started_at"]]
    elapsed = end - start
    return {
        "runs": n,
        "tasks_per_run": TASKS,
        "in_flight": in_flight,
        "http_statuses": codes,
        "stored": len(runs),
        "succeeded": succeeded,
        "lost": len(lost),
        "doubled": doubled,
        "seconds": round(elapsed, 2),
        "runs_per_s": round(n / elapsed, 1),
        "tasks_per_s": round(n * TASKS / elapsed, 1),
        "all_answered_s": round(answered, 2),
        "server_cpu_ms_per_run": round((cpu1[0] - cpu0[0]) / n * 1000, 2),
        "steps_cpu_ms_per_run": round((cpu1[1] - cpu0[1]) / n * 1000, 2),
        "submit_to_running_ms": {"p50": ms(pct(to_running, 50)), "p99": ms(pct(to_running, 99))},
        "server_rss_mib": rss,
        "load_before": before,
        "load_after": load(),
    }


def idle(work: Path, n: int) -> dict[str, Any]:
    """One run at a time, each submitted once the previous has ended."""
    with serving(work / "home-idle") as server, server.client() as c:
        before = load()
        for _ in range(5):  # warm: the first requests import and cache what the rest reuse
            c.get("/healthz")
            c.post("/api/v1/runs", json={"pipeline": "five"}).raise_for_status()
        wait_until_done(c, 5, 60)
        healthz, post, running = [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            c.get("/healthz")
            healthz.append(time.perf_counter() - t0)
            time.sleep(0.05)
            sent = time.time()
            t0 = time.perf_counter()
            r = c.post("/api/v1/runs", json={"pipeline": "five"})
            post.append(time.perf_counter() - t0)
            run_id = r.json()["id"]
            while (run := c.get(f"/api/v1/runs/{run_id}").json())["status"] not in DONE:
                time.sleep(0.01)
            running.append(started_at(run) - sent)
            time.sleep(0.05)
    return {
        "runs": n,
        "submit_to_running_ms": {"p50": ms(pct(running, 50)), "p99": ms(pct(running, 99)), "max": ms(max(running))},
        "post_answer_ms": {"p50": ms(pct(post, 50)), "p99": ms(pct(post, 99))},
        "floor_healthz_ms": {"p50": ms(pct(healthz, 50)), "p99": ms(pct(healthz, 99))},
        "load_before": before,
        "load_after": load(),
    }


# --- (c) history ----------------------------------------------------------------------------


def seed(home: Path, n: int) -> float:
    """n finished five-task runs, each step with a 20-line log, put straight into the store."""
    from sqlalchemy import insert

    from shipline.engine.loading import load_pipeline
    from shipline.settings import load_settings
    from shipline.store.sql import SqlStore
    from shipline.store.tables import run_events, runs, step_runs, task_runs

    start = time.perf_counter()
    settings = load_settings(home_env(home))
    store = SqlStore(settings.database)
    (home / "pipelines").mkdir(parents=True, exist_ok=True)
    (home / "pipelines" / "five.yaml").write_text(PIPELINE)
    spec = load_pipeline(home / "pipelines" / "five.yaml").model_dump(mode="json", by_alias=True)
    t0 = datetime.now(UTC) - timedelta(days=30)
    batch = 500
    for first in range(0, n, batch):
        run_rows, task_rows, step_rows, event_rows = [], [], [], []
        for i in range(first, min(n, first + batch)):
            rid = i + 1
            at = t0 + timedelta(seconds=i * 60)
            status = "failed" if i % 10 == 9 else "succeeded"
            run_rows.append(
                {
                    "id": rid,
                    "pipeline": "five",
                    "status": status,
                    "params": {},
                    "spec": spec,
                    "source": str(home / "pipelines" / "five.yaml"),
                    "message": "task t4 failed" if status == "failed" else "",
                    "trigger": {"source": "api", "event": "manual", "token": "bench", "repository_name": "bench"},
                    "rerun_of": None,
                    "created_at": at,
                    "started_at": at,
                    "finished_at": at + timedelta(seconds=5),
                    "owner": "bench:1:1",
                    "heartbeat_at": at,
                    "cancel_requested": False,
                    "results": {},
                    "concurrency_group": None,
                    "holds_group": False,
                }
            )
            event_rows.append({"run_id": rid, "kind": "run", "task": None, "status": "queued", "data": {}, "created_at": at})
            event_rows.append({"run_id": rid, "kind": "run", "task": None, "status": "running", "data": {}, "created_at": at})
            for j in range(TASKS):
                task_status = "failed" if status == "failed" and j == TASKS - 1 else "succeeded"
                ts = at + timedelta(seconds=j)
                task_rows.append(
                    {
                        "run_id": rid,
                        "name": f"t{j}",
                        "position": j,
                        "is_finally": False,
                        "needs": [f"t{j - 1}"] if j else [],
                        "status": task_status,
                        "results": {},
                        "attempts": 1,
                        "message": "",
                        "started_at": ts,
                        "finished_at": ts + timedelta(seconds=1),
                    }
                )
                log_path = settings.logs / str(rid) / f"t{j}" / "1.0.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text(
                    "".join(f"{(ts + timedelta(milliseconds=k)).isoformat()} line {k} of step t{j}\n" for k in range(20))
                )
                step_rows.append(
                    {
                        "run_id": rid,
                        "task": f"t{j}",
                        "attempt": 1,
                        "idx": 0,
                        "name": "true",
                        "status": task_status,
                        "exit_code": 1 if task_status == "failed" else 0,
                        "pid": None,
                        "log_path": str(log_path),
                        "started_at": ts,
                        "finished_at": ts + timedelta(seconds=1),
                    }
                )
                for st in ("running", task_status):
                    event_rows.append(
                        {"run_id": rid, "kind": "task", "task": f"t{j}", "status": st, "data": {}, "created_at": ts}
                    )
            event_rows.append({"run_id": rid, "kind": "run", "task": None, "status": status, "data": {}, "created_at": at})
        with store.transaction() as conn:
            conn.execute(insert(runs), run_rows)
            conn.execute(insert(task_runs), task_rows)
            conn.execute(insert(step_runs), step_rows)
            conn.execute(insert(run_events), event_rows)
    store.close()
    return time.perf_counter() - start


def timed_gets(c: httpx.Client, paths: list[str], repeats: int) -> dict[str, float]:
    """Wall time of fetching `paths` one after another (a page and what it loads), median and p99."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for path in paths:
            r = c.get(path)
            r.raise_for_status()
        times.append(time.perf_counter() - t0)
    return {"p50_ms": ms(pct(times, 50)), "p99_ms": ms(pct(times, 99))}


def page_floor(database: Path, repeats: int) -> float:
    """One SQLite query of a page of 50 runs with their tasks, by the sqlite3 module alone."""
    times = []
    with sqlite3.connect(database) as db:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 50")]
            marks = ",".join("?" * len(ids))
            db.execute(f"SELECT * FROM runs WHERE id IN ({marks})", ids).fetchall()
            db.execute(f"SELECT * FROM task_runs WHERE run_id IN ({marks})", ids).fetchall()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def history(work: Path, n: int, repeats: int) -> dict[str, Any]:
    home = work / "home-history"
    seconds = seed(home, n)
    out: dict[str, Any] = {"runs": n, "seed_s": round(seconds, 1), "load_before": load()}
    with serving(home) as server, server.client() as c:
        out["server_rss_mib_at_start"] = rss_mib(server.proc.pid)
        c.get("/api/v1/runs").raise_for_status()  # warm
        out["api_runs_first_page"] = timed_gets(c, ["/api/v1/runs"], repeats)
        out["dashboard_runs_page"] = timed_gets(c, ["/", "/static/app.js", "/static/style.css", "/api/v1/runs?limit=50"], repeats)
        out["api_runs_failed_first_page"] = timed_gets(c, ["/api/v1/runs?status=failed"], repeats)
        out["api_runs_by_pipeline"] = timed_gets(c, ["/api/v1/runs?pipeline=five"], repeats)
        out["api_runs_deep_page"] = timed_gets(c, [f"/api/v1/runs?before={n // 10}"], repeats)
        out["api_run_and_logs"] = timed_gets(c, [f"/api/v1/runs/{n // 2}", f"/api/v1/runs/{n // 2}/logs"], repeats)
        out["metrics"] = timed_gets(c, ["/metrics"], repeats)
        out["floor_healthz"] = timed_gets(c, ["/healthz"], repeats)
        for _ in range(3):
            all_runs(c)  # every page, to see what the whole history costs the server's memory
        out["server_rss_mib_after"] = rss_mib(server.proc.pid)
        out["load_after"] = load()
        cli: dict[str, list[float]] = {"list": [], "list_failed": [], "version": []}
        for _ in range(5):
            for key, args in (
                ("list", ["runs", "list"]),
                ("list_failed", ["runs", "list", "--status", "failed"]),
                ("version", ["--version"]),
            ):
                t0 = time.perf_counter()
                subprocess.run([*CLI, *args], env=server.env, check=True, capture_output=True)
                cli[key].append(time.perf_counter() - t0)
    out["cli_runs_list_s"] = round(statistics.median(cli["list"]), 3)
    out["cli_runs_list_failed_s"] = round(statistics.median(cli["list_failed"]), 3)
    out["cli_version_s"] = round(statistics.median(cli["version"]), 3)
    out["floor_python_s"] = round(python_floor(), 3)
    out["floor_sqlite_page_ms"] = ms(page_floor(home / "shipline.db", repeats))
    return out


# --- the report -----------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    b = results["burst"]
    rows.append(
        (
            f"burst {b['runs']} runs x {TASKS} tasks via the API (runs/s)",
            str(b["runs_per_s"]),
            str(results["floor_commands_runs_per_s"]),
            ">= 100",
        )
    )
    rows.append(
        (
            "  server CPU per run, its steps' CPU per run (ms)",
            f"{b['server_cpu_ms_per_run']} / {b['steps_cpu_ms_per_run']}",
            "",
            "",
        )
    )
    rows.append(
        (
            "  runs stored / succeeded / lost / doubled",
            f"{b['stored']}/{b['succeeded']}/{b['lost']}/{b['doubled']}",
            "",
            f"{b['runs']}/{b['runs']}/0/0",
        )
    )
    rows.append(
        (
            "  submission -> running under the burst, p50 / p99 (ms)",
            f"{b['submit_to_running_ms']['p50']} / {b['submit_to_running_ms']['p99']}",
            "",
            "",
        )
    )
    rows.append(("  server RSS after the burst (MiB)", str(b["server_rss_mib"]["rss"]), "", ""))
    i = results["idle"]
    rows.append(
        (
            "idle server: submission -> running, p50 / p99 (ms)",
            f"{i['submit_to_running_ms']['p50']} / {i['submit_to_running_ms']['p99']}",
            f"{i['floor_healthz_ms']['p50']} / {i['floor_healthz_ms']['p99']}",
            "p99 < 20",
        )
    )
    h = results["history"]
    rows.append(
        (
            f"history of {h['runs']} runs: server RSS at start / after (MiB)",
            f"{h['server_rss_mib_at_start']['rss']} / {h['server_rss_mib_after']['rss']}",
            "",
            "< 200",
        )
    )
    floor_http = h["floor_healthz"]["p50_ms"]
    for key, label in (
        ("api_runs_first_page", "GET /api/v1/runs, first page (ms)"),
        ("dashboard_runs_page", "dashboard runs page, 4 requests (ms)"),
        ("api_runs_failed_first_page", "GET /api/v1/runs?status=failed (ms)"),
        ("api_runs_by_pipeline", "GET /api/v1/runs?pipeline=five (ms)"),
        ("api_runs_deep_page", "GET /api/v1/runs?before=N/10 (ms)"),
        ("api_run_and_logs", "GET one run + its logs (ms)"),
        ("metrics", "GET /metrics (ms)"),
    ):
        target = "< 100" if key in ("api_runs_first_page", "dashboard_runs_page") else ""
        rows.append((f"  {label}, p50", str(h[key]["p50_ms"]), f"{floor_http} (healthz)", target))
    rows.append(("  one SQLite query of that page, sqlite3 alone (ms)", str(h["floor_sqlite_page_ms"]), "", ""))
    rows.append(("  shipline runs list (s)", str(h["cli_runs_list_s"]), f"{h['floor_python_s']} (python -c pass)", "< 0.5"))
    rows.append(("  shipline runs list --status failed (s)", str(h["cli_runs_list_failed_s"]), "", ""))
    rows.append(("  shipline --version (s)", str(h["cli_version_s"]), "", ""))
    widths = [max(len(r[k]) for r in rows + [("measure", "shipline", "floor", "target")]) for k in range(4)]
    head = ("measure", "shipline", "floor", "target")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)))
    print(f"load average: {results['load']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one burst of 200 runs, 2,000 runs of history")
    parser.add_argument("--runs", type=int, default=1000, help="runs in a burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts to measure (the median is reported)")
    parser.add_argument("--history", type=int, default=10_000, help="finished runs in the store for (c)")
    parser.add_argument("--idle", type=int, default=50, help="runs submitted one at a time for (b)")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight at once in the burst")
    parser.add_argument("--only", choices=["burst", "idle", "history"], action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "server.json")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.bursts, args.history, args.idle = 200, 1, 2000, 20
    parts = set(args.only or ["burst", "idle", "history"])

    parallel = default_parallel()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "max_parallel": parallel,
        "load": load(),
    }
    with tempfile.TemporaryDirectory(prefix="shipline-bench-") as tmp:
        work = Path(tmp)
        if "burst" in parts:
            bursts = []
            floors = []
            for k in range(args.bursts):
                print(f"burst {k + 1}/{args.bursts}: {args.runs} runs x {TASKS} tasks through the API ...", file=sys.stderr)
                bursts.append(burst(work, args.runs, args.in_flight, str(k)))
                floors.append(commands_floor(args.runs * TASKS, parallel))
                print(
                    f"  {bursts[-1]['runs_per_s']} runs/s, server CPU {bursts[-1]['server_cpu_ms_per_run']} ms/run, "
                    f"lost {bursts[-1]['lost']}, floor "
                    f"{args.runs / floors[-1]:.1f} runs/s, load {load()}",
                    file=sys.stderr,
                )
            ordered = sorted(bursts, key=lambda b: b["runs_per_s"])
            results["burst"] = ordered[len(ordered) // 2]
            results["bursts_runs_per_s"] = [b["runs_per_s"] for b in bursts]
            results["floor_commands_runs_per_s"] = round(args.runs / statistics.median(floors), 1)
        if "idle" in parts:
            print(f"idle server: {args.idle} runs one at a time ...", file=sys.stderr)
            results["idle"] = idle(work, args.idle)
        if "history" in parts:
            print(f"history: {args.history} finished runs in the store ...", file=sys.stderr)
            results["history"] = history(work, args.history, 30)
    results["load_end"] = load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if parts == {"burst", "idle", "history"}:
        report(results)
    else:
        print(json.dumps(results, indent=2))
    print(f"\nwritten: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
