"""Service pipeline benchmark: the scaffolded service's whole pipeline on the testbed.

    python bench/service.py            # 1 cold + 3 warm releases
    python bench/service.py --quick    # 1 cold + 1 warm

Needs the testbed running (`shipline testbed up`). Scaffolds `shipline init service
bench-hello` into a bare git repository, then runs its `.shipline/pipeline.yaml`
with `shipline run` once with an empty Go build cache (cold) and then after each of
a few `fix:` commits (warm: the Go build cache is shared, as
docs/pipelines.md shows), each one a real release: tag, image and chart pushed.

For each run:
- wall: the run's own start to end (the run record's timestamps);
- tools: the time during which at least one step process was running, from the
  step records (git, go, buildah, helm, skopeo... and the `shipline step` helpers);
- helpers: the CPU time of the `shipline step ...` processes themselves (Python's
  start and end, shipline's own logic in the steps; not the tools they start),
  measured by a wrapper on PATH;
- shipline's share = (wall - tools) + helpers, over wall: the engine's scheduling
  and bookkeeping between steps plus shipline's own code inside them.

Prints a table and writes bench/results/service.json. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
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
from shipline.cli import main
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


def one_run(pipeline: Path, url: str, env: dict[str, str], log: Path) -> dict[str, Any]:
    log.write_text("")
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
    per_command: dict[str, float] = {}
    for line in log.read_text().splitlines():
        name, _, seconds = line.rpartition(" ")
        per_command[name] = per_command.get(name, 0.0) + float(seconds)
    helpers = sum(per_command.values())
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
        "share_pct": round(100 * (wall - tools + helpers) / wall, 2),
        "tasks_s": tasks,
        "helpers_cpu_s": {k: round(v, 3) for k, v in sorted(per_command.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
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

        rows: list[dict[str, Any]] = []
        rows.append({"kind": "cold", **one_run(pipeline, url, env, log)})
        for i in range(warm_runs):
            sh(*git, "commit", "--quiet", "--allow-empty", "-m", f"fix: change {i + 1}")
            sh(*git, "push", "--quiet", str(bare), "main")
            rows.append({"kind": "warm", **one_run(pipeline, url, env, log)})
        shutil.rmtree(root / "home", ignore_errors=True)

    warm = [r for r in rows if r["kind"] == "warm"]
    summary = {
        "warm_wall_s_median": statistics.median(r["wall_s"] for r in warm),
        "warm_share_pct_median": statistics.median(r["share_pct"] for r in warm),
        "cold_wall_s": rows[0]["wall_s"],
    }
    print(f"{'run':<6}{'version':<10}{'wall s':>8}{'tools s':>9}{'engine gap s':>14}{'helpers s':>11}{'shipline %':>12}")
    for r in rows:
        print(
            f"{r['kind']:<6}{r['version']:<10}{r['wall_s']:>8.2f}{r['tools_s']:>9.2f}{r['engine_gap_s']:>14.3f}"
            f"{r['helpers_s']:>11.3f}{r['share_pct']:>12.2f}"
        )
    slowest = max(warm[-1]["tasks_s"].items(), key=lambda kv: kv[1])
    print(
        f"warm median: {summary['warm_wall_s_median']:.2f} s wall, shipline's share {summary['warm_share_pct_median']:.2f} %"
        f" (slowest task: {slowest[0]} {slowest[1]:.2f} s)"
    )
    print("helpers' own CPU in the last run: " + ", ".join(f"{k} {v:.3f} s" for k, v in warm[-1]["helpers_cpu_s"].items()))
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
