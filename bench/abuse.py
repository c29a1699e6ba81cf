"""Abuse run: hostile inputs against a real `shipline serve`, watching its memory and `/healthz`.

Starts the server as a subprocess on 127.0.0.1 (loopback only), registers one
repository, then sends, one kind after another and each a bounded number of
times: oversized webhook bodies (declared and chunked), unauthenticated and
oversized API bodies, JSON nested 100,000 deep (signed and not), wrongly
signed webhooks, hostile definitions (billion laughs, deep nesting, a large
file) registered through the API, and a run with a 100 MB log read whole by
three clients at once.  Meanwhile one thread asks `/healthz` every 20 ms and
another reads the server's RSS from /proc.

Prints a table and writes bench/results/abuse.json.  Targets: peak RSS under
300 MB, `/healthz` p99 under 100 ms.  Bounded in count and in time (--timeout).

    .venv/bin/python bench/abuse.py
    .venv/bin/python bench/abuse.py --scale 0.2     # smaller bodies, fewer requests
"""

from __future__ import annotations

import argparse
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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "server"))
from abusekit import nested, push, repeat  # noqa: E402  (shared with the tests)

MB = 1024 * 1024
SECRET = "abuse-secret"
REPO_URL = "https://github.example/abuse/app.git"
PIPELINE = """\
name: abuse
tasks:
  - name: loud
    steps:
      - run: head -c 100000000 /dev/zero | tr '\\0' x | fold -w 200
"""
RSS_TARGET_MB = 300
HEALTHZ_P99_TARGET_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Watch:
    """`/healthz` every 20 ms and the server's RSS every 50 ms, in threads, until stopped."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.latencies: list[float] = []
        self.stamps: list[float] = []
        self.failures = 0
        self.rss: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._healthz, daemon=True), threading.Thread(target=self._rss, daemon=True)]

    def __enter__(self) -> Watch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _healthz(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - t0
                if ok:
                    self.latencies.append(took)
                    self.stamps.append(t0)
                else:
                    self.failures += 1
                self.stop.wait(max(0.0, 0.02 - took))

    def _rss(self) -> None:
        while not self.stop.is_set():
            self.rss.append(rss_kb(self.pid))
            self.stop.wait(0.05)


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies body sizes and request counts")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "abuse.json")
    args = parser.parse_args()

    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    home = Path(tempfile.mkdtemp(prefix="shipline-abuse-"))
    (home / "pipeline.yaml").write_text(PIPELINE)
    port = free_port()
    env = {**os.environ, "SHIPLINE_HOME": str(home), "SHIPLINE_LOG_LEVEL": "warning"}
    env.pop("SHIPLINE_DATABASE_URL", None)
    env.pop("SHIPLINE_CONFIG", None)
    cli = [sys.executable, "-m", "shipline"]
    token = subprocess.run(
        [*cli, "tokens", "create", "--name", "abuse", "--role", "operator"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    log = (home / "server.log").open("w")
    server = subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.timeout
    auth = {"Authorization": f"Bearer {token}"}
    rows: list[dict[str, Any]] = []
    watch: Watch | None = None

    def scenario(name: str, count: int, one: Callable[[int], tuple[int, int]], parallel: int = 1) -> None:
        """Send `count` of one kind (at most `parallel` at once); each returns (status, body bytes sent)."""
        if time.monotonic() > deadline:
            rows.append({"scenario": name, "requests": 0, "statuses": {}, "sent_mb": 0.0, "seconds": 0.0, "skipped": True})
            return
        t0 = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            outcomes = list(pool.map(one, range(count)))
        t1 = time.perf_counter()
        statuses = Counter(str(s) for s, _ in outcomes)
        during = [lat * 1000 for at, lat in zip(watch.stamps, watch.latencies, strict=False) if t0 <= at <= t1] if watch else []
        rows.append(
            {
                "scenario": name,
                "requests": count,
                "statuses": dict(statuses),
                "sent_mb": round(sum(b for _, b in outcomes) / MB, 1),
                "seconds": round(t1 - t0, 2),
                "healthz_p99_ms": round(pct(during, 99), 1) if during else None,
                "rss_mb": round(rss_kb(server.pid) / 1024, 1),
            }
        )

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
        with httpx.Client(base_url=url, headers=auth, timeout=60) as c:
            c.post(
                "/api/v1/repositories",
                json={
                    "name": "abuse",
                    "url": REPO_URL,
                    "forge": "github",
                    "secret": SECRET,
                    "pipeline": str(home / "pipeline.yaml"),
                },
            ).raise_for_status()
        baseline_kb = rss_kb(server.pid)
        big = int(500 * MB * args.scale)
        hook = {"X-GitHub-Event": "push", "Content-Type": "application/json"}

        with Watch(url, server.pid) as watch:
            with httpx.Client(base_url=url, headers=auth, timeout=60) as c:
                runs: list[int] = []

                def loud_run(_: int) -> tuple[int, int]:
                    runs.append(run := c.post("/api/v1/runs", json={"pipeline": "abuse"}).json()["id"])
                    while (record := c.get(f"/api/v1/runs/{run}").json())["status"] in ("queued", "running"):
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                    return (200 if record["status"] == "succeeded" else 500), 0

                scenario("a run whose step prints 100 MB (log capped at 50 MB)", 1, loud_run)
                loud = runs[0]
            scenario(
                "webhook, declared 500 MB",
                n(3),
                lambda _: _pushed(push(url, "/hooks/github", repeat(b"x" * 65536, big), hook, chunked=False, length=big)),
            )
            scenario(
                "webhook, chunked 500 MB", n(3), lambda _: _pushed(push(url, "/hooks/github", repeat(b"x" * 65536, big), hook))
            )
            scenario(
                "POST /api/v1/runs, no token, chunked 400 MB",
                n(3),
                lambda _: _pushed(
                    push(
                        url,
                        "/api/v1/runs",
                        repeat(b"[" * 65536, int(400 * MB * args.scale)),
                        {"Content-Type": "application/json"},
                    )
                ),
            )
            scenario(
                "POST /api/v1/runs, operator, chunked 50 MB",
                n(3),
                lambda _: _pushed(
                    push(
                        url,
                        "/api/v1/runs",
                        repeat(b" " * 65536, int(50 * MB * args.scale)),
                        {**auth, "Content-Type": "application/json"},
                    )
                ),
            )
            deep = nested(100_000)
            with httpx.Client(base_url=url, timeout=60) as c:
                scenario(
                    "webhook, nested 100,000 deep, unsigned",
                    n(50),
                    lambda _: (c.post("/hooks/github", content=deep, headers=sign(deep, "wrong")).status_code, len(deep)),
                    parallel=4,
                )
                scenario(
                    "webhook, nested 100,000 deep, signed",
                    n(50),
                    lambda _: (c.post("/hooks/github", content=deep, headers=sign(deep)).status_code, len(deep)),
                    parallel=4,
                )
                push_body = json.dumps(
                    {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"clone_url": REPO_URL}, "commits": []}
                ).encode()
                scenario(
                    "webhook, wrong signature",
                    n(300),
                    lambda _: (
                        c.post("/hooks/github", content=push_body, headers=sign(push_body, "guess")).status_code,
                        len(push_body),
                    ),
                    parallel=8,
                )
            files = _hostile_definitions(home)
            with httpx.Client(base_url=url, headers=auth, timeout=120) as c:
                for label, path in files.items():
                    scenario(
                        f"register a pipeline: {label}",
                        n(5),
                        lambda i, p=path: (
                            c.post(
                                "/api/v1/repositories",
                                json={
                                    "name": f"bad-{uuid.uuid4().hex[:8]}",
                                    "url": f"https://github.example/x/{uuid.uuid4().hex}.git",
                                    "forge": "github",
                                    "secret": "s",
                                    "pipeline": str(p),
                                },
                            ).status_code,
                            0,
                        ),
                    )
            with httpx.Client(base_url=url, timeout=300) as c:

                def read_all(_: int) -> tuple[int, int]:
                    size = 0
                    with c.stream("GET", f"/api/v1/runs/{loud}/logs", params={"format": "text"}) as r:
                        for chunk in r.iter_bytes():
                            size += len(chunk)
                    return r.status_code, size

                def first_page(_: int) -> tuple[int, int]:
                    r = c.get(f"/api/v1/runs/{loud}/logs", params={"limit": 10_000})
                    return r.status_code, len(r.content)

                scenario("GET logs of a 50 MB log, text, 3 at once", 3, read_all, parallel=3)
                scenario("GET logs, JSON page of 10,000 lines, 3 at once", 3, first_page, parallel=3)
        peak_kb = rss_kb(server.pid, "VmHWM")
        final_ready = httpx.get(url + "/readyz", timeout=10).status_code
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)  # its store and the 100 MB log: nothing is read from them after this

    lat_ms = [x * 1000 for x in watch.latencies]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "scale": args.scale,
        "scenarios": rows,
        "rss_mb": {
            "baseline": round(baseline_kb / 1024, 1),
            "peak": round(peak_kb / 1024, 1),
            "max_sampled": round(max(watch.rss, default=0) / 1024, 1),
            "target": RSS_TARGET_MB,
        },
        "healthz_ms": {
            "count": len(lat_ms),
            "failed": watch.failures,
            "p50": round(pct(lat_ms, 50), 1),
            "p99": round(pct(lat_ms, 99), 1),
            "max": round(max(lat_ms, default=float("nan")), 1),
            "mean": round(statistics.fmean(lat_ms), 1) if lat_ms else None,
            "target_p99": HEALTHZ_P99_TARGET_MS,
        },
        "ready_after": final_ready,
    }
    result["met"] = bool(
        result["rss_mb"]["peak"] < RSS_TARGET_MB
        and lat_ms
        and pct(lat_ms, 99) < HEALTHZ_P99_TARGET_MS
        and watch.failures == 0
        and final_ready == 200
    )

    width = max(len(r["scenario"]) for r in rows)
    print(f"{'scenario':<{width}}  {'n':>4}  {'answers':<14} {'sent MB':>8} {'s':>7} {'healthz p99 ms':>15} {'RSS MB':>7}")
    for r in rows:
        answers = ", ".join(f"{k}x{v}" for k, v in sorted(r["statuses"].items())) or "skipped"
        print(
            f"{r['scenario']:<{width}}  {r['requests']:>4}  {answers:<14} {r['sent_mb']:>8} {r['seconds']:>7} "
            f"{r.get('healthz_p99_ms') or '-':>15} {r.get('rss_mb', '-'):>7}"
        )
    rss, hz = result["rss_mb"], result["healthz_ms"]
    print(f"\nserver RSS: baseline {rss['baseline']} MB, peak {rss['peak']} MB (target < {RSS_TARGET_MB} MB)")
    print(
        f"/healthz: {hz['count']} answered, {hz['failed']} failed; p50 {hz['p50']} ms, p99 {hz['p99']} ms, "
        f"max {hz['max']} ms (target p99 < {HEALTHZ_P99_TARGET_MS} ms)"
    )
    print(f"/readyz afterwards: {final_ready}; targets {'met' if result['met'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["met"] else 1


def _pushed(p: Any) -> tuple[int, int]:
    return int(p.status), int(p.sent)


def _hostile_definitions(home: Path) -> dict[str, Path]:
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    files = {
        "billion laughs (8 levels)": "\n".join(laughs)
        + "\nname: x\ntasks:\n  - name: t\n    env: {X: *a8}\n    steps: [{run: echo}]\n",
        "nested 100,000 deep": "name: x\ntasks: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "10 MB file": "name: x\ntasks:\n" + "".join(f"  - name: t{i}\n    steps: [{{run: echo {i}}}]\n" for i in range(200_000)),
    }
    out = {}
    for i, (label, text) in enumerate(files.items()):
        path = home / f"hostile-{i}.yaml"
        path.write_text(text)
        out[label] = path
    return out


if __name__ == "__main__":
    raise SystemExit(main())
