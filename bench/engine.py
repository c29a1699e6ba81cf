"""Engine benchmarks: overhead per task, burst throughput, peak memory.

    python bench/engine.py            # all, SQLite and PostgreSQL
    python bench/engine.py --quick    # fewer repetitions

(a) overhead: a 50-task sequential pipeline of `true` steps, against the same
    50 `bash -c true` started one after another by a bare shell loop; reported
    as the ratio and as milliseconds of engine overhead per task.  The floor is
    the commands' own time: the loop's start (its bash and `seq`, ~2 ms: the
    same loop of no commands) is measured beside it and taken off, as is
    xargs' start for a fan-out.  Counted in, it made a 1-task run's floor
    three processes for one, and the engine's overhead at one task looked
    ~2 ms smaller than it is.
(b) throughput: 200 runs of a 5-task pipeline submitted at once; runs per
    second, and a check that every run ended `succeeded` (none lost).
(c) peak memory (max RSS) of the engine process, children excluded.
(d) the curve: engine overhead per task for sequential runs of 1 to 1,000 tasks
    and for 1 -> N -> 1 fan-outs, each beside its floor measured in the same
    run (the same commands from a bare shell loop, or `xargs -P` for a fan-out),
    median of 5 or more after a warm-up run; SQLite and PostgreSQL (through its
    socket, and over TCP to 127.0.0.1) take turns within each repetition, so their
    ratio is measured at the same moments; all the curve's runs on one event loop,
    as a server drives its runs; drawn to bench/results/engine-curve.png.
(e) start-up: `shipline --version`, `--help`, a 1-task `shipline run` and a `validate` of it,
    and one SQLite commit (the store's floor).

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

from shipline.domain.pipelines import ResolvedPipeline
from shipline.domain.runs import RunRecord, RunStatus
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


def run_once(engine: Engine, pipeline: ResolvedPipeline, loop: asyncio.AbstractEventLoop) -> RunRecord:
    """Make a run as `shipline run` does (claimed by the engine that made it) and drive it to its end
    on `loop`: one event loop for all of a bench's runs, as a server drives all of its own.

    `shipline run` makes a loop for its one run (`asyncio.run`: a SIGINT handler put in place and
    taken off, the loop's tasks and executor shut down): 0.2 ms of a 1-task run (1.40 against
    1.19 ms of overhead, alternated, 2026-12-01).  That belongs to the CLI's start, measured with
    it (`startup`: a 1-task `shipline run`'s wall time), not to the engine's cost of a task.
    Not `asyncio.run(engine.drive(...))` in any case: its end formatted the record it returned
    (`signal.getsignal` repr'd the handler, a partial holding the task), 0.19 ms more."""
    return loop.run_until_complete(engine.drive(engine.submit(pipeline, {}, claim=True)))


def shell_loop(n: int) -> float:
    """n `bash -c true` one after another: the loop's time, its own start (bash, `seq`) taken off."""
    return _loop(n) - _loop(0)


def _loop(n: int) -> float:
    script = f"for i in $(seq {n}); do bash --noprofile --norc -eo pipefail -c true; done"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def overhead(work: Path, database: str | None, repeats: int) -> dict[str, Any]:
    engine = _engine(work / ("home-overhead-postgres" if database else "home-overhead-sqlite"), database)
    pipeline = load_pipeline(_pipeline(work, "sequential", SEQUENTIAL_TASKS))
    engine_times, shell_times = [], []
    with asyncio.Runner() as runner:
        for _ in range(repeats):
            shell_times.append(shell_loop(SEQUENTIAL_TASKS))
            start = time.perf_counter()
            record = run_once(engine, pipeline, runner.get_loop())
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


CURVE_SEQUENTIAL = (1, 10, 100, 300, 1000)
CURVE_FANOUT = (10, 100, 500)


def _fanout(directory: Path, width: int) -> Path:
    leaves = "\n".join(f"  - name: leaf{i}\n    needs: [root]\n    steps: [{{run: 'true'}}]" for i in range(width))
    names = ", ".join(f"leaf{i}" for i in range(width))
    path = directory / f"fan{width}.yaml"
    path.write_text(
        f"name: fan{width}\ntasks:\n  - name: root\n    steps: [{{run: 'true'}}]\n{leaves}\n"
        f"  - name: join\n    needs: [{names}]\n    steps: [{{run: 'true'}}]\n"
    )
    return path


def parallel_floor(n: int, parallel: int) -> float:
    """n `bash -c true` with `parallel` at a time, as the engine would run a fan-out; xargs' own start taken off."""
    return _xargs(n, parallel) - _xargs(0, parallel)


def _xargs(n: int, parallel: int) -> float:
    script = f"seq {n} | xargs -P {parallel} -I{{}} bash --noprofile --norc -eo pipefail -c true"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


CURVE_REPEATS = 5
CURVE_TASKS_PER_POINT = 1000
"""A point is the median of at least CURVE_REPEATS runs, and of as many more as make about this
many tasks (60 at most): a run of one or ten tasks lasts a few milliseconds, and on this VM one
run in five or ten of any size takes several more, so the median of three small runs moved
by several milliseconds per task from one bench to the next.  With 3 runs and 300 tasks a
point, the PostgreSQL / SQLite ratio of one point read 1.04 to 1.58 in four benches of one
evening, more than any change it was meant to show; the curve now takes about three minutes."""


def curve(work: Path, stores: dict[str, str | None], repeats: int = CURVE_REPEATS) -> list[dict[str, Any]]:
    """Overhead per task against the size of the run: it should stay flat.

    Each size is run `repeats` times (more for small runs: CURVE_TASKS_PER_POINT) on every
    store in `stores` (label -> database URL, None for SQLite), one store after the other
    within each repetition, with the floor measured once per repetition beside them: the
    stores are compared at the same moments, where one store's points measured minutes
    after the other's followed this VM's speed more than the store; each goes first in every
    other repetition.  One run of each shape
    first warms what a first run pays once (imports, the SQL statements' compiled forms);
    the median of each is kept.  Runs are made as `shipline run` makes them (claimed by
    the engine that made them) and driven at once, on one event loop (`run_once`).
    """
    engines = {label: _engine(work / f"home-curve-{label}", database) for label, database in stores.items()}
    rows: list[dict[str, Any]] = []
    shapes = [("sequential", n, _pipeline(work, f"seq{n}", n)) for n in CURVE_SEQUENTIAL]
    shapes += [("fan-out", n + 2, _fanout(work, n)) for n in CURVE_FANOUT]
    max_parallel = next(iter(engines.values())).settings.max_parallel
    with asyncio.Runner() as runner:
        for shape, tasks, path in shapes:
            rows += _point(runner.get_loop(), engines, shape, tasks, load_pipeline(path), repeats, max_parallel)
    for engine in engines.values():
        engine.store.close()
    return rows


def _point(
    loop: asyncio.AbstractEventLoop,
    engines: dict[str, Engine],
    shape: str,
    tasks: int,
    pipeline: ResolvedPipeline,
    repeats: int,
    max_parallel: int,
) -> list[dict[str, Any]]:
    """One point of the curve: the runs of one shape on every store, and the floor beside them."""
    for engine in engines.values():
        run_once(engine, pipeline, loop)
    engine_times: dict[str, list[float]] = {label: [] for label in engines}
    floors = []
    for repetition in range(max(repeats, min(60, CURVE_TASKS_PER_POINT // tasks))):
        # Each store goes first in every other repetition: the first runs right after the
        # floor's shell loops, the second right after the first, and on this VM a run is
        # quicker when the CPUs were just busy (a 1-task run after 20 ms of rest: +1 ms).
        for label, engine in list(engines.items()) if repetition % 2 == 0 else list(engines.items())[::-1]:
            start = time.perf_counter()
            record = run_once(engine, pipeline, loop)
            engine_times[label].append(time.perf_counter() - start)
            assert record.status == RunStatus.SUCCEEDED, record.message
        if shape == "sequential":
            floors.append(shell_loop(tasks))
        else:
            floors.append(shell_loop(2) + parallel_floor(tasks - 2, max_parallel))
    floor = statistics.median(floors)
    rows = []
    for label, times in engine_times.items():
        elapsed = statistics.median(times)
        rows.append(
            {
                "database": label,
                "shape": shape,
                "tasks": tasks,
                "repeats": len(times),
                "engine_s": round(elapsed, 4),
                "floor_s": round(floor, 4),
                "overhead_ms_per_task": round((elapsed - floor) / tasks * 1000, 2),
            }
        )
        print(f"  {label} {shape} {tasks}: {rows[-1]['overhead_ms_per_task']} ms/task", file=sys.stderr)
    return rows


def startup(work: Path) -> dict[str, float]:
    """Wall and CPU time of the CLI's quick commands (median of 5), and one SQLite commit.

    CPU time (user + system of the command's process) is what a busy machine distorts
    least.  Python's bytecode cache is used as an installed shipline has it: a
    PYTHONDONTWRITEBYTECODE in the bench's environment (some CI and sandboxes set it)
    would make every command compile shipline's modules from source again.
    """
    import os

    env = {**os.environ, "SHIPLINE_HOME": str(work / "home-cli")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    one = _pipeline(work, "one", 1)
    shipline = [sys.executable, "-m", "shipline"]

    def timed(args: list[str]) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(shipline + args, env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return round(statistics.median(walls), 3), round(statistics.median(cpus), 3)

    store = SqlStore(f"sqlite:///{work / 'commit.db'}")
    commits = []
    with store.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    for i in range(50):
        start = time.perf_counter()
        with store.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (i,))
        commits.append(time.perf_counter() - start)
    store.close()
    timed(["run", str(one)])  # the first run creates the store and the bytecode cache: not what is measured
    version, help_, run = timed(["--version"]), timed(["--help"]), timed(["run", str(one)])
    validate = timed(["validate", str(one)])
    return {
        "version_s": version[0],
        "help_s": help_[0],
        "run_1_task_s": run[0],
        "version_cpu_s": version[1],
        "help_cpu_s": help_[1],
        "run_1_task_cpu_s": run[1],
        "validate_s": validate[0],
        "validate_cpu_s": validate[1],
        "sqlite_commit_ms": round(statistics.median(commits) * 1000, 2),
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def plot(rows: list[dict[str, Any]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for (label, shape), marker in zip(sorted({(r["database"], r["shape"]) for r in rows}), "osd^vx<>", strict=False):
        points = sorted((r["tasks"], r["overhead_ms_per_task"]) for r in rows if (r["database"], r["shape"]) == (label, shape))
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=f"{shape}, {label}")
    ax.set_xscale("log")
    ax.set_xlabel("tasks in one run")
    ax.set_ylabel("engine overhead per task (ms)")
    ax.set_title("shipline: overhead per task against the size of the run")
    ax.axhline(2.0, color="grey", linestyle="--", linewidth=0.8, label="target 2 ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def favordynmods() -> bool:
    """Whether a cgroup tree here is mounted with `favordynmods` (Linux 6.0+): then a step's shell
    joining its cgroup does not wait for an RCU grace period, which it otherwise does now and then
    (a step's spawn to its exit: p99 14.4 ms without, 1.9 ms with, on this project's VM).  It moves
    the small points of the curve, so the bench says which way the machine was."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return False
    return any(" cgroup" in line and "favordynmods" in line for line in mounts.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition of the overhead measurement")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine.json")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "cgroup_favordynmods": favordynmods(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="shipline-bench-") as tmp:
        work = Path(tmp)
        print("overhead: 50 sequential tasks vs a shell loop (SQLite) ...", file=sys.stderr)
        results["overhead_sqlite"] = overhead(work, None, 1 if args.quick else 5)
        print(f"burst: {BURST_RUNS} runs x {BURST_TASKS} tasks (SQLite) ...", file=sys.stderr)
        results["burst"] = [burst(work, None, "sqlite")]
        print("start-up of the CLI ...", file=sys.stderr)
        results["startup"] = startup(work)
        repeats = 1 if args.quick else CURVE_REPEATS
        if args.no_postgres:
            print("curve: overhead per task, 1 to 1000 tasks, sequential and fan-out (SQLite) ...", file=sys.stderr)
            results["curve"] = curve(work, {"sqlite": None}, repeats)
        else:
            with ThrowawayPostgres() as pg:
                # PostgreSQL on this machine, reached through its socket as a local client reaches
                # it by default; the curve has it over TCP (127.0.0.1) beside that.
                print("overhead and burst (PostgreSQL) ...", file=sys.stderr)
                results["overhead_postgres"] = overhead(work, pg.create_database(socket=True), 1 if args.quick else 3)
                results["burst"].append(burst(work, pg.create_database(socket=True), "postgres"))
                print("curve: overhead per task, 1 to 1000 tasks, SQLite and PostgreSQL in turn ...", file=sys.stderr)
                stores = {"sqlite": None, "postgres": pg.create_database(socket=True), "postgres-tcp": pg.create_database()}
                results["curve"] = curve(work, stores, repeats)
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
    st = results["startup"]
    print(f"{'shipline --version / --help, wall (s)':<44}{str(st['version_s']) + ' / ' + str(st['help_s']):>12}")
    print(f"{'shipline --version / --help, CPU (s)':<44}{str(st['version_cpu_s']) + ' / ' + str(st['help_cpu_s']):>12}")
    print(f"{'shipline run, 1 task, wall / CPU (s)':<44}{str(st['run_1_task_s']) + ' / ' + str(st['run_1_task_cpu_s']):>12}")
    print(f"{'shipline validate, 1 file, wall / CPU (s)':<44}{str(st['validate_s']) + ' / ' + str(st['validate_cpu_s']):>12}")
    print(f"{'  (load average then)':<44}{str(st['load'][0]):>12}")
    print(f"{'cgroups mounted with favordynmods':<44}{'yes' if results['machine']['cgroup_favordynmods'] else 'no':>12}")
    print(f"{'one SQLite commit (ms)':<44}{st['sqlite_commit_ms']:>12}")
    print(f"\n{'curve':<30}{'tasks':>7}{'engine s':>10}{'floor s':>10}{'ms/task':>10}{'x SQLite':>10}")
    sqlite = {(r["shape"], r["tasks"]): r["overhead_ms_per_task"] for r in results["curve"] if r["database"] == "sqlite"}
    for r in results["curve"]:
        base = sqlite.get((r["shape"], r["tasks"]))
        ratio = "" if r["database"] == "sqlite" or not base or base <= 0 else f"{r['overhead_ms_per_task'] / base:.2f}"
        print(
            f"{r['shape'] + ', ' + r['database']:<30}{r['tasks']:>7}{r['engine_s']:>10}{r['floor_s']:>10}"
            f"{r['overhead_ms_per_task']:>10}{ratio:>10}"
        )
    picture = plot(results["curve"], args.out.parent / "engine-curve.png")
    if picture is not None:
        # The README shows the curve: a copy outside the (ignored) results folder.
        shown = Path(__file__).resolve().parent.parent / "docs" / "img" / "engine-curve.png"
        shown.parent.mkdir(parents=True, exist_ok=True)
        shown.write_bytes(picture.read_bytes())
        print(f"plot: {picture} and {shown}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
