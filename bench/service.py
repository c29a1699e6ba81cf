"""Service pipeline benchmark: the scaffolded service's whole pipeline on the testbed.

    python bench/service.py                   # 1 cold + 3 warm `shipline run`, then 6 through a server
    python bench/service.py --quick           # 1 cold + 1 warm, then 2 through a server
    python bench/service.py --no-step-server  # each `shipline step` a process of its own (to compare)

Needs the testbed running (`shipline testbed up`). Scaffolds `shipline init service
bench-hello` into a bare git repository, then releases it: with `shipline run` once
with an empty Go build cache (cold) and then after each of a few `fix:` commits (warm:
the Go build cache is shared, as docs/pipelines.md shows); then through `shipline serve`
(the repository registered, each release started by POST /api/v1/runs), as a team runs
it: one engine, so one step server, for every release. Each run is a real release: tag,
image and chart pushed.

For each run:
- wall: the run's own start to end (the run record's timestamps);
- tools: the time during which at least one step process was running, from the
  step records (git, go, buildah, helm, skopeo... and the `shipline step` helpers);
- helpers: the CPU time of shipline's own code inside the steps: for each `shipline
  step` call served by the step server, the copy's CPU and its caller's (from the
  server's debug lines), plus the server's own CPU during the run (its start, imports
  and forks); for a call run as a process of its own, that process's CPU (a wrapper on
  PATH measures it), not that of the tools it ran.  The step's shell execs the call as
  its last command, so the CPU a caller reports includes what that bash spent before
  (its start, as every step's shell pays whatever the step runs): the start of a bare
  `bash -c 'exit 0'`, measured in the same run (shell_floor_ms in the JSON), is taken
  off each caller's figure, as the wrapper of a call run as a process of its own never
  counted its shell either;
- shipline's share = (wall - tools) + helpers, over wall: the engine's scheduling
  and bookkeeping between steps plus shipline's own code inside them.
- gaps_ms (in the JSON): the longest moments with no step running, and between which steps.

Prints a table and writes bench/results/service.json. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVICE = "bench-hello"


def sh(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def testbed_env() -> dict[str, str]:
    out = sh(sys.executable, "-m", "shipline", "testbed", "env")
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = " ".join(shlex.split(value.replace('"$PATH"', os.environ["PATH"])))
    return env


INNER = """
import atexit, os, resource, sys
def _tools():  # the CPU of what this helper ran (git, buildah, helm...), all waited for by now
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.write(int(os.environ.pop("BENCH_TOOLS_FD")), f"{r.ru_utime + r.ru_stime:.6f}".encode())
atexit.register(_tools)  # first registered, last run
sys.argv[0] = "shipline"
from shipline.launch import main
main()
"""


def wrapper(directory: Path, log: Path) -> Path:
    """A `shipline` first on PATH that records the CPU time of each `shipline step ...` process itself.

    It runs the real command as its child: the child's whole CPU time (its start, its
    work and its end, when Python tears down what it imported) comes back with the
    child, together with that of the tools it ran (buildah, helm, git); the child says
    the tools' share at its exit, and only the rest is counted as shipline's.
    """
    directory.mkdir(parents=True)
    script = directory / "shipline"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, resource, subprocess, sys\n"
        "read, write = os.pipe()\n"
        "env = {**os.environ, 'BENCH_TOOLS_FD': str(write)}\n"
        "before = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        f"code = subprocess.call([sys.executable, '-c', {INNER!r}, *sys.argv[1:]], env=env, pass_fds=(write,))\n"
        "after = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "os.close(write)\n"
        "tools = float(os.read(read, 64) or 0)\n"
        "mine = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime - tools\n"
        "name = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]\n"
        f"with open({str(log)!r}, 'a') as f: f.write(f'{{name}} {{mine:.6f}}\\n')\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)
    return directory


STEP_SERVER_LINE = re.compile(
    r"step server: `shipline (?P<command>[^`]+)` exited -?\d+, (?P<cpu>[\d.]+) s of its own CPU,"
    r" its caller (?:(?P<caller>[\d.]+) s|gone); the server: \d+ calls, (?P<server>[\d.]+) s of CPU"
)


def shell_floor(samples: int = 40) -> float:
    """The CPU of a step's shell that starts and exits (the median of `samples`), in seconds."""
    costs = []
    for _ in range(samples):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", "exit 0"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(costs)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def ts(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value).timestamp()


def run_cli(pipeline: Path, url: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """One release by `shipline run` (an engine of its own): the run record and the engine's stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "shipline", "run", str(pipeline), "-p", f"url={url}", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    start = proc.stdout.rfind("\n{")
    try:
        record = json.loads(proc.stdout[start + 1 :] if start >= 0 else proc.stdout)
    except json.JSONDecodeError:
        sys.exit(f"shipline run printed no run record:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return record, proc.stderr


class Server:
    """`shipline serve` with the service's repository registered: releases through its API, as a team runs them."""

    def __init__(self, root: Path, env: dict[str, str], pipeline: Path, url: str) -> None:
        import httpx

        self.env = {**env, "SHIPLINE_HOME": str(root / "server-home")}
        pipelines = root / "server-home" / "pipelines"
        pipelines.mkdir(parents=True)
        shutil.copy(pipeline, pipelines / "service.yaml")
        token = sh(sys.executable, "-m", "shipline", "tokens", "create", "--name", "bench", "--role", "operator", env=self.env)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.log = root / "server.log"
        self.log_file = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shipline", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=self.env,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token.strip()}"}, timeout=60
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the server did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.1)
        self.client.post(
            "/api/v1/repositories", json={"name": SERVICE, "url": url, "forge": "git", "pipeline": "service.yaml"}
        ).raise_for_status()
        self.pipeline = self.client.get("/api/v1/pipelines").json()[0]["name"]
        self.url = url
        self.read = 0

    def release(self) -> tuple[dict[str, Any], str]:
        """One release through the API: the run record and what the server logged meanwhile."""
        run = self.client.post("/api/v1/runs", json={"pipeline": self.pipeline, "params": {"url": self.url}})
        run.raise_for_status()
        while (record := self.client.get(f"/api/v1/runs/{run.json()['id']}").json())["status"] in ("queued", "running"):
            time.sleep(0.2)
        time.sleep(0.2)  # the step server's line for the last call
        text = self.log.read_text(errors="replace")
        logged, self.read = text[self.read :], len(text)
        return record, logged

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_file.close()


def measure(record: dict[str, Any], engine_log: str, helpers_log: Path, server_before: float, shell: float) -> dict[str, Any]:
    """One release's row.  `server_before`: the step server's CPU when the run started (0 for a new engine)."""
    if record["status"] != "succeeded":
        failed = [f"{t['name']}: {t.get('message', '')}" for t in record["tasks"] if t["status"] == "failed"]
        sys.exit(f"run {record['id']} {record['status']}: {failed}")
    wall = ts(record["finished_at"]) - ts(record["started_at"])
    steps = [
        (ts(s["started_at"]), ts(s["finished_at"]))
        for t in record["tasks"]
        for s in t.get("steps", [])
        if s.get("started_at") and s.get("finished_at")
    ]
    tools = union_seconds(steps)
    named = sorted(
        (ts(s["started_at"]), ts(s["finished_at"]), f"{t['name']}/{s['name']}")
        for t in record["tasks"]
        for s in t.get("steps", [])
        if s.get("started_at") and s.get("finished_at")
    )
    gaps, end, before = [], ts(record["started_at"]), "start"
    for a, b, name in named:
        if a > end:
            gaps.append((round((a - end) * 1000, 1), f"{before} -> {name}"))
        if b > end:
            end, before = b, name
    gaps.append((round((ts(record["finished_at"]) - end) * 1000, 1), f"{before} -> end"))
    per_command: dict[str, float] = {}
    for line in (helpers_log.read_text() if helpers_log.exists() else "").splitlines():
        name, _, seconds = line.rpartition(" ")
        per_command[name] = per_command.get(name, 0.0) + float(seconds)
    helpers_log.write_text("")
    # The step server's copies (one per `shipline step` call that went through it) and the
    # server itself (its start, its imports, its forks), from its debug lines in the engine's log.
    served = list(filter(None, map(STEP_SERVER_LINE.search, engine_log.splitlines())))
    server_total = server_before
    for match in served:
        command = match["command"].removeprefix("step ")
        caller = max(float(match["caller"] or 0) - shell, 0.0)
        per_command[command] = per_command.get(command, 0.0) + float(match["cpu"]) + caller
        server_total = max(server_total, float(match["server"]))
    server_cpu = server_total - server_before
    helpers = sum(per_command.values()) + server_cpu
    tasks = {
        t["name"]: round(ts(t["finished_at"]) - ts(t["started_at"]), 2)
        for t in record["tasks"]
        if t.get("started_at") and t.get("finished_at")
    }
    return {
        "version": record.get("results", {}).get("version", ""),
        "wall_s": round(wall, 2),
        "tools_s": round(tools, 2),
        "engine_gap_s": round(wall - tools, 3),
        "helpers_s": round(helpers, 3),
        "step_server_s": round(server_cpu, 3),
        "step_server_total_s": server_total,
        "served_calls": len(served),
        "share_pct": round(100 * (wall - tools + helpers) / wall, 2),
        "tasks_s": tasks,
        "gaps_ms": sorted(gaps, reverse=True)[:6],
        "helpers_cpu_s": {k: round(v, 3) for k, v in sorted(per_command.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-server", action="store_true", help="only `shipline run` releases, none through a server")
    parser.add_argument(
        "--no-step-server", action="store_true", help="each `shipline step` a process of its own (for comparison)"
    )
    args = parser.parse_args()
    warm_runs = 1 if args.quick else 3
    bed = testbed_env()
    if "SHIPLINE_REGISTRY" not in bed:
        print("bench/service.py skipped: the testbed is not running (`shipline testbed up` first)")
        return

    with tempfile.TemporaryDirectory(prefix="shipline-bench-service-") as tmp:
        root = Path(tmp)
        log = root / "helpers.log"
        gocache = root / "gocache"
        env = {
            **os.environ,
            **bed,
            "SHIPLINE_HOME": str(root / "home"),
            "PATH": f"{wrapper(root / 'wrap', log)}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{bed['PATH']}",
            "GOCACHE": str(gocache),
            "SHIPLINE_STEP_ENV": "PATH,LANG,LC_*,TZ,TMPDIR,GOCACHE",
            "SHIPLINE_LOG_LEVEL": "debug",  # the step server's line per call: what each call cost it
            "SHIPLINE_STEP_SERVER": "false" if args.no_step_server else "true",
        }
        env.pop("SHIPLINE_DATABASE_URL", None)
        work, bare = root / "work", root / "remote.git"
        sh(sys.executable, "-m", "shipline", "init", "service", SERVICE, str(work))
        sh("git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-C", str(work)]
        sh(*git, "init", "--quiet", "--initial-branch=main")
        sh(*git, "add", "-A")
        sh(*git, "commit", "--quiet", "-m", "feat: scaffold")
        sh(*git, "push", "--quiet", str(bare), "main")
        url = f"file://{bare}"
        pipeline = work / ".shipline" / "pipeline.yaml"

        def commit(message: str) -> None:
            sh(*git, "commit", "--quiet", "--allow-empty", "-m", message)
            sh(*git, "push", "--quiet", str(bare), "main")

        shell = shell_floor()
        rows: list[dict[str, Any]] = []
        rows.append({"kind": "cold", **measure(*run_cli(pipeline, url, env), log, 0.0, shell)})
        for i in range(warm_runs):
            commit(f"fix: change {i + 1}")
            rows.append({"kind": "warm", **measure(*run_cli(pipeline, url, env), log, 0.0, shell)})
        if not args.no_server:
            server = Server(root, env, pipeline, url)
            try:
                total = 0.0
                # The first release teaches the step server what each command imports; the server
                # imports it during the second. From the third on, a release costs what every later
                # one does: five rows after the first make that the median.
                for i in range(2 if args.quick else 6):
                    commit(f"fix: change {warm_runs + i + 1}")
                    row = measure(*server.release(), log, total, shell)
                    total = row["step_server_total_s"]
                    rows.append({"kind": "server first" if i == 0 else "server", **row})
            finally:
                server.close()
        shutil.rmtree(root / "home", ignore_errors=True)
        shutil.rmtree(root / "server-home", ignore_errors=True)

    warm = [r for r in rows if r["kind"] == "warm"]
    served = [r for r in rows if r["kind"] == "server"]
    summary: dict[str, Any] = {
        "warm_wall_s_median": statistics.median(r["wall_s"] for r in warm),
        "warm_share_pct_median": statistics.median(r["share_pct"] for r in warm),
        "cold_wall_s": rows[0]["wall_s"],
        "cold_share_pct": rows[0]["share_pct"],
        "shell_floor_ms": round(shell * 1000, 2),
    }
    if served:
        summary["server_wall_s_median"] = statistics.median(r["wall_s"] for r in served)
        summary["server_share_pct_median"] = statistics.median(r["share_pct"] for r in served)
    print(
        f"{'run':<14}{'version':<10}{'wall s':>8}{'tools s':>9}{'engine gap s':>14}{'helpers s':>11}"
        f"{'step server s':>15}{'shipline %':>12}"
    )
    for r in rows:
        print(
            f"{r['kind']:<14}{r['version']:<10}{r['wall_s']:>8.2f}{r['tools_s']:>9.2f}{r['engine_gap_s']:>14.3f}"
            f"{r['helpers_s']:>11.3f}{r['step_server_s']:>15.3f}{r['share_pct']:>12.2f}"
        )
    for label, group in (("shipline run, warm", warm), ("through the server", served)):
        if not group:
            continue
        slowest = max(group[-1]["tasks_s"].items(), key=lambda kv: kv[1])
        print(
            f"{label}: median {statistics.median(r['wall_s'] for r in group):.2f} s wall, shipline's share "
            f"{statistics.median(r['share_pct'] for r in group):.2f} % (slowest task: {slowest[0]} {slowest[1]:.2f} s)"
        )
        print(
            "  helpers' own CPU in the last run: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in group[-1]["helpers_cpu_s"].items())
            + f"; the step server {group[-1]['step_server_s']:.3f} s ({group[-1]['served_calls']} calls served)"
        )
    print(f"  (each served call's caller figure is net of its shell's start: {shell * 1000:.2f} ms, measured above)")
    out = REPO / "bench" / "results" / "service.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "runs": rows,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
