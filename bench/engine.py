"""Engine benchmarks: overhead per task, burst throughput, peak memory.

    python bench/engine.py            # all, SQLite and PostgreSQL
    python bench/engine.py --quick    # fewer repetitions

(a) overhead: a 50-task sequential pipeline of `true` steps, against the same
    50 `bash -c true` started one after another by a bare shell loop; reported
    as the ratio and as milliseconds of engine overhead per task.
(b) throughput: 200 runs of a 5-task pipeline submitted at once; runs per
    second, and a check that every run ended `succeeded` (none lost).
(c) peak memory (max RSS) of the engine process, children excluded.

Prints a table and writes bench/results/engine.json.  Not a test: nothing
here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shipline.domain.runs import RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import load_settings
from shipline.store.sql import SqlStore
from shipline.testbed.postgres import ThrowawayPostgres

SEQUENTIAL_TASKS = 50
BURST_RUNS = 200
BURST_TASKS = 5


def _pipeline(directory: Path, name: str, tasks: int) -> Path:
    body = "\n".join(f"  - name: t{i}\n    steps: [{{run: 'true'}}]" for i in range(tasks))
    path = directory / f"{name}.yaml"
    path.write_text(f"name: {name}\ntasks:\n{body}\n")
    return path


def _engine(home: Path, database: str | None) -> Engine:
    env = {"SHIPLINE_HOME": str(home)}
    if database:
        env["SHIPLINE_DATABASE_URL"] = database
    settings = load_settings(env)
    return Engine(settings, SqlStore(settings.database), LocalExecutor(), EventBus())


def shell_loop(n: int) -> float:
    script = f"for i in $(seq {n}); do bash --noprofile --norc -eo pipefail -c true; done"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def overhead(work: Path, database: str | None, repeats: int) -> dict[str, Any]:
    engine = _engine(work / "home-overhead", database)
    pipeline = load_pipeline(_pipeline(work, "sequential", SEQUENTIAL_TASKS))
    engine_times, shell_times = [], []
    for _ in range(repeats):
        shell_times.append(shell_loop(SEQUENTIAL_TASKS))
        start = time.perf_counter()
        record = asyncio.run(engine.drive(engine.submit(pipeline, {})))
        engine_times.append(time.perf_counter() - start)
        assert record.status == RunStatus.SUCCEEDED, record.message
    engine_s, shell_s = statistics.median(engine_times), statistics.median(shell_times)
    engine.store.close()
    return {
        "tasks": SEQUENTIAL_TASKS,
        "repeats": repeats,
        "engine_s": round(engine_s, 4),
        "shell_loop_s": round(shell_s, 4),
        "ratio": round(engine_s / shell_s, 2),
        "overhead_ms_per_task": round((engine_s - shell_s) / SEQUENTIAL_TASKS * 1000, 2),
    }


def burst(work: Path, database: str | None, label: str) -> dict[str, Any]:
    engine = _engine(work / f"home-burst-{label}", database)
    pipeline = load_pipeline(_pipeline(work, "five", BURST_TASKS))

    async def go() -> list[RunStatus]:
        ids = [engine.submit(pipeline, {}) for _ in range(BURST_RUNS)]
        records = await asyncio.gather(*(engine.drive(i) for i in ids))
        return [r.status for r in records]

    start = time.perf_counter()
    statuses = asyncio.run(go())
    elapsed = time.perf_counter() - start
    stored = engine.store.list_runs(limit=BURST_RUNS + 10)
    engine.store.close()
    succeeded = sum(s == RunStatus.SUCCEEDED for s in statuses)
    return {
        "database": label,
        "runs": BURST_RUNS,
        "tasks_per_run": BURST_TASKS,
        "max_parallel": engine.settings.max_parallel,
        "seconds": round(elapsed, 2),
        "runs_per_s": round(BURST_RUNS / elapsed, 1),
        "tasks_per_s": round(BURST_RUNS * BURST_TASKS / elapsed, 1),
        "succeeded": succeeded,
        "stored": len(stored),
        "lost": BURST_RUNS - succeeded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition of the overhead measurement")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine.json")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="shipline-bench-") as tmp:
        work = Path(tmp)
        print("overhead: 50 sequential tasks vs a shell loop (SQLite) ...", file=sys.stderr)
        results["overhead_sqlite"] = overhead(work, None, 1 if args.quick else 5)
        print(f"burst: {BURST_RUNS} runs x {BURST_TASKS} tasks (SQLite) ...", file=sys.stderr)
        results["burst"] = [burst(work, None, "sqlite")]
        if not args.no_postgres:
            with ThrowawayPostgres() as pg:
                print("overhead and burst (PostgreSQL) ...", file=sys.stderr)
                results["overhead_postgres"] = overhead(work, pg.create_database(), 1 if args.quick else 3)
                results["burst"].append(burst(work, pg.create_database(), "postgres"))
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    o = results["overhead_sqlite"]
    print(f"\n{'measure':<44}{'value':>12}")
    print(f"{'50-task pipeline, engine (s)':<44}{o['engine_s']:>12}")
    print(f"{'same 50 commands, shell loop (s)':<44}{o['shell_loop_s']:>12}")
    print(f"{'ratio engine / shell':<44}{o['ratio']:>12}")
    print(f"{'engine overhead per task, SQLite (ms)':<44}{o['overhead_ms_per_task']:>12}")
    if "overhead_postgres" in results:
        print(f"{'engine overhead per task, PostgreSQL (ms)':<44}{results['overhead_postgres']['overhead_ms_per_task']:>12}")
    for b in results["burst"]:
        db, runs, tasks = b["database"], b["runs"], b["tasks_per_run"]
        print(f"{f'burst {runs}x{tasks}, {db} (runs/s)':<44}{b['runs_per_s']:>12}")
        print(f"{f'burst {runs}x{tasks}, {db} (tasks/s)':<44}{b['tasks_per_s']:>12}")
        print(f"{f'burst, {db}: succeeded / lost':<44}{str(b['succeeded']) + ' / ' + str(b['lost']):>12}")
    print(f"{'peak engine memory, max RSS (MiB)':<44}{results['peak_rss_mib']:>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
