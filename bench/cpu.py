"""CPU and store-work figures of the engine, which a busy machine does not distort much.

    python bench/cpu.py                  # sequential 1..1,000 tasks, a fan-out, a 200-run burst
    python bench/cpu.py --quick

Wall time on a shared machine follows the load; the engine's own CPU time
(`time.process_time()`: this process and its threads, the steps excluded; user and
system apart, as system time follows the load on the file system most) and
what it asks of the store (statements, transactions, per task and per run, counted
with SQLAlchemy events) do not.  Prints a table, writes bench/results/cpu.json.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from shipline.domain.runs import RunStatus
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.settings import load_settings
from shipline.store.sql import SqlStore

sys.path.insert(0, str(Path(__file__).parent))
from engine import _fanout, _pipeline


class Counter:
    """The statements SQLite runs for the store (sqlite3's trace callback: the store sends its
    writes to the driver directly, past SQLAlchemy's events), and the commits."""

    def __init__(self, store: SqlStore) -> None:
        self.statements = self.commits = 0
        event.listen(store.engine, "checkout", self._trace)
        event.listen(store.engine, "commit", self._commit)

    def _trace(self, dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(self._statement)

    def _statement(self, sql: str) -> None:
        if not sql.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.commits


def _engine(home: Path) -> tuple[Engine, Counter]:
    settings = load_settings({"SHIPLINE_HOME": str(home)})
    store = SqlStore(settings.database)
    return Engine(settings, store, LocalExecutor(), EventBus()), Counter(store)


def measure(engine: Engine, counter: Counter, runs: list[Any], label: str, tasks: int) -> dict[str, Any]:
    async def go() -> list[RunStatus]:
        ids = [engine.submit(p, {}) for p in runs]
        return [r.status for r in await asyncio.gather(*(engine.drive(i) for i in ids))]

    s0, c0 = counter.snapshot()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    statuses = asyncio.run(go())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    s1, c1 = counter.snapshot()
    assert all(s == RunStatus.SUCCEEDED for s in statuses), statuses
    n = len(runs) * tasks
    row = {
        "case": label,
        "runs": len(runs),
        "tasks": n,
        "cpu_ms_per_task": round(cpu / n * 1000, 3),
        "cpu_ms_per_run": round(cpu / len(runs) * 1000, 2),
        "user_ms_per_task": round(user / n * 1000, 3),
        "system_ms_per_task": round(system / n * 1000, 3),
        "statements_per_task": round((s1 - s0) / n, 2),
        "commits_per_task": round((c1 - c0) / n, 2),
        "commits_per_run": round((c1 - c0) / len(runs), 2),
        "wall_s": round(wall, 3),
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"  {label:<22} {row['cpu_ms_per_task']:>7.3f} ms CPU/task (user {row['user_ms_per_task']:.3f}, system"
        f" {row['system_ms_per_task']:.3f})  {row['commits_per_task']:>5.2f} commits/task"
        f"  {row['statements_per_task']:>5.2f} stmts/task  ({row['cpu_ms_per_run']} ms CPU/run, wall {row['wall_s']} s,"
        f" load {row['load'][0]})",
        file=sys.stderr,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["sequential", "fan-out", "burst"], action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cpu.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipline-cpu-") as tmp:
        work = Path(tmp)
        engine, counter = _engine(work / "home")
        asyncio.run(engine.drive(engine.submit(load_pipeline(_pipeline(work, "warm", 3)), {})))  # warm caches
        only = set(args.only or ["sequential", "fan-out", "burst"])
        sizes = (1, 10, 100, 300) if args.quick else (1, 10, 100, 300, 1000)
        for n in sizes if "sequential" in only else ():
            pipeline = load_pipeline(_pipeline(work, f"seq{n}", n))
            rows.append(measure(engine, counter, [pipeline], f"sequential {n}", n))
        for width in ((10, 100) if args.quick else (10, 100, 500)) if "fan-out" in only else ():
            pipeline = load_pipeline(_fanout(work, width))
            rows.append(measure(engine, counter, [pipeline], f"fan-out 1->{width}->1", width + 2))
        five = load_pipeline(_pipeline(work, "five", 5))
        burst = 100 if args.quick else 200
        if "burst" in only:
            rows.append(measure(engine, counter, [five] * burst, f"burst {burst} x 5 tasks", 5))
        engine.store.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
