"""`shipline runs ...`: list, show, follow logs of, cancel and rerun pipeline runs."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shipline.cli.pipelines import drive_with_progress, record_json
from shipline.cli.progress import duration, status_text, summary
from shipline.cli.wiring import Wiring
from shipline.domain.runs import RunStatus
from shipline.engine.logs import parse_line
from shipline.exceptions import NotFound


@click.group()
def runs() -> None:
    """Pipeline runs: list, show, logs, cancel, rerun.

    \b
      shipline runs list --status failed
      shipline runs logs 12 --task build --follow
      shipline runs rerun 12
    """


@runs.command("list")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs with this status.")
@click.option("--limit", default=20, show_default=True, help="How many runs (newest first).")
@click.option("--before", type=int, help="Page back: only runs with a smaller id.")
@click.option("--json", "as_json", is_flag=True, help="Print run records as a JSON list.")
@click.pass_obj
def list_runs(wiring: Wiring, pipeline: str | None, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """The newest runs first."""
    wiring.engine.recover()
    records = wiring.store.list_runs(pipeline=pipeline, status=status, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        click.echo("no runs yet: start one with `shipline run FILE`", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("id", "pipeline", "status", "started", "took", "message"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for r in records:
        started = r.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""
        table.add_row(str(r.id), r.pipeline, status_text(r.status.value), started, duration(r.started_at, r.finished_at), r.message)
    Console(highlight=False).print(table)


@runs.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.pass_obj
def show(wiring: Wiring, run_id: int, as_json: bool) -> None:
    """One run: its params, tasks, results and timings."""
    wiring.engine.recover()
    record = wiring.store.get_run(run_id)
    if as_json:
        click.echo(record_json(record))
        return
    console = Console(highlight=False)
    console.print(Text.assemble((f"run {record.id} ", "bold"), (record.pipeline, "cyan"), "  ", status_text(record.status.value)))
    if record.source:
        console.print(f"definition  {record.source}")
    for name, value in record.params.items():
        console.print(f"param       {name}={value}")
    if record.rerun_of:
        console.print(f"rerun of    {record.rerun_of}")
    summary(record, console)


@runs.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--task", help="Only this task's steps.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--timestamps", is_flag=True, help="Show when each line was written.")
@click.pass_obj
def logs(wiring: Wiring, run_id: int, task: str | None, follow: bool, timestamps: bool) -> None:
    """Print a run's step logs, step after step.

    \b
      shipline runs logs 12
      shipline runs logs 12 --task build -f
    """
    store = wiring.store
    record = store.get_run(run_id)
    if task is not None and task not in {t.name for t in record.tasks}:
        names = ", ".join(t.name for t in record.tasks)
        raise NotFound(f"run {run_id} has no task '{task}' (tasks: {names})")
    offsets: dict[str, int] = {}
    while True:
        for task_name, attempt, index, step_name, path in store.log_paths(run_id, task):
            if path not in offsets:
                offsets[path] = 0
                label = f"{task_name} / step {index + 1}: {step_name}" + (f" (attempt {attempt})" if attempt > 1 else "")
                click.secho(f"==> {label}", bold=True)
            offsets[path] = _print_from(path, offsets[path], timestamps)
        if not follow:
            break
        finished = store.get_run(run_id).status.done
        if finished:
            for path in offsets:
                offsets[path] = _print_from(path, offsets[path], timestamps)
            break
        time.sleep(0.3)


def _print_from(path: str, offset: int, timestamps: bool) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            while True:
                raw = f.readline()
                if not raw.endswith("\n"):
                    break  # a line still being written: print it next time
                line = parse_line(raw)
                prefix = line.at.astimezone().strftime("%H:%M:%S.%f")[:-3] + " " if timestamps else ""
                click.echo(prefix + line.text)
                offset = f.tell()
    except FileNotFoundError:
        pass
    return offset


@runs.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the run has stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.pass_obj
def cancel(wiring: Wiring, run_id: int, wait: bool, as_json: bool) -> None:
    """Cancel a queued or running run: its processes (and their children) are stopped.

    Finally tasks still run.  Works from any shell: the engine driving the run
    notices the request within a second.
    """
    store = wiring.store
    record = store.get_run(run_id)
    if record.status.done:
        click.echo(f"run {run_id} already {record.status.value}", err=True)
    else:
        record = store.request_cancel(run_id)
        deadline = time.monotonic() + 60
        while wait and not record.status.done and time.monotonic() < deadline:
            time.sleep(0.2)
            wiring.engine.recover()
            record = store.get_run(run_id)
        click.echo(f"run {run_id}: {record.status.value if record.status.done else 'cancel requested'}", err=True)
    if as_json:
        click.echo(record_json(record))


@runs.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--json", "as_json", is_flag=True, help="Progress goes to stderr; the new run record is printed last on stdout.")
@click.pass_obj
def rerun(wiring: Wiring, run_id: int, as_json: bool) -> None:
    """Run the same definition with the same params again, as a new run.

    The definition is the one stored with the original run, so a rerun does
    what the original did even if the file changed since.
    """
    new_id = wiring.engine.rerun(run_id)
    click.echo(f"run {new_id}: rerun of run {run_id}", err=True)
    record = drive_with_progress(wiring, new_id, as_json)
    sys.exit(0 if record.status == RunStatus.SUCCEEDED else 1)
