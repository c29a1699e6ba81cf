"""`shipline runs ...`: list, show, follow logs of, cancel, rerun and prune pipeline runs."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shipline.cli.progress import duration, status_text, summary
from shipline.cli.wiring import Wiring
from shipline.domain.runs import RunStatus
from shipline.engine.logs import logs_elsewhere, parse_line
from shipline.exceptions import Conflict, NotFound
from shipline.files import open_regular


@click.group()
def runs() -> None:
    """Pipeline runs: list, show, logs, cancel, rerun, prune.

    \b
      shipline runs list --status failed
      shipline runs logs 12 --task build --follow
      shipline runs rerun 12
      shipline runs prune --older-than 7d --dry-run
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
    wiring.recover()
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
        table.add_row(
            str(r.id), r.pipeline, status_text(r.status.value), started, duration(r.started_at, r.finished_at), r.message
        )
    Console(highlight=False).print(table)


@runs.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.pass_obj
def show(wiring: Wiring, run_id: int, as_json: bool) -> None:
    """One run: its params, tasks, results and timings."""
    from shipline.cli.pipelines import record_json

    wiring.recover()
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
        gone = "" if wiring.store.known_runs([record.rerun_of]) else "  (pruned)"
        console.print(f"rerun of    {record.rerun_of}{gone}")
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
    if elsewhere := logs_elsewhere(store, wiring.settings.logs, run_id):
        raise Conflict(elsewhere.why)
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
        with open_regular(Path(path), text=True) as f:
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
    from shipline.cli.pipelines import record_json

    store = wiring.store
    record = store.get_run(run_id)
    if record.status.done:
        click.echo(f"run {run_id} already {record.status.value}", err=True)
    else:
        record = wiring.engine.cancel(run_id)
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
    from shipline.cli.pipelines import drive_with_progress

    new_id = wiring.engine.rerun(run_id, claim=True)
    click.echo(f"run {new_id}: rerun of run {run_id}", err=True)
    record = drive_with_progress(wiring, new_id, as_json)
    sys.exit(0 if record.status == RunStatus.SUCCEEDED else 1)


class Duration(click.ParamType[timedelta]):
    """A span of time written as a whole number and a unit: 7d, 12h, 30m, 90s."""

    name = "duration"
    UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"(\d+)([dhms])", str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration: write a whole number and a unit, e.g. 7d, 12h, 30m or 90s", param, ctx)
        try:
            span = timedelta(**{self.UNITS[match[2]]: int(match[1])})
            datetime.now(UTC) - span  # the cutoff must still be a date (year 1 or later)
        except OverflowError:
            self.fail(f"{value!r} reaches back before the year 1: write a shorter duration", param, ctx)
        return span


@runs.command()
@click.option(
    "--older-than",
    type=Duration(),
    default="30d",
    show_default=True,
    help="Only runs that finished longer ago than this: 7d, 12h, 30m, 90s.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=10,
    metavar="N",
    show_default=True,
    help="Keep the newest N finished runs of each pipeline, however old.",
)
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option(
    "--workspaces-only",
    is_flag=True,
    help="Remove only the workspaces (and step homes); records and logs stay, so history is still browsable.",
)
@click.option("--dry-run", is_flag=True, help="Print what would go; remove nothing.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"runs": [ids], "leftovers": [paths], "bytes_freed": N, "dry_run": ..., "failed": [{"id", "error"}]}.',
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def prune(
    wiring: Wiring,
    older_than: timedelta,
    keep: int,
    pipeline: str | None,
    workspaces_only: bool,
    dry_run: bool,
    as_json: bool,
    yes: bool,
) -> None:
    """Remove runs that are over and old: their records, workspaces and logs.

    A run goes when it succeeded, failed or was cancelled longer ago than
    --older-than, unless it is one of the newest --keep finished runs of its
    pipeline.  Queued and running runs are never touched.  Removing a run
    removes its workspaces/RUN, step-homes/RUN and logs/RUN under
    $SHIPLINE_HOME, then its record; a run whose files cannot be removed
    keeps its record and is listed on stderr, and the exit status is 1.

    Folders of runs the store has no record of go too once they are older
    than --older-than (not with --pipeline): workspaces/N, step-homes/N and
    logs/N whose record was removed some other way, and what was set aside
    under leftovers/ (files found under a new run's id, from an earlier store).

    On a terminal it asks first (not with --yes, --dry-run or --json); when
    stdin is not a terminal (a script, cron) it goes ahead without asking.

    \b
      shipline runs prune --dry-run                    # what the defaults would remove
      shipline runs prune --older-than 7d --keep 3 --yes
      shipline runs prune --workspaces-only --older-than 12h
      shipline runs prune --pipeline nightly --json | jq .bytes_freed
      0 3 * * * shipline runs prune --older-than 14d   # crontab: every night
    """
    from shipline.engine import pruning

    wiring.engine.recover()
    settings, store = wiring.settings, wiring.store
    before = datetime.now(UTC) - older_than
    chosen = pruning.prunable(store, settings, before=before, keep=keep, pipeline=pipeline, workspaces_only=workspaces_only)
    leftover = [] if pipeline else pruning.leftovers(store, settings, before=before, workspaces_only=workspaces_only)
    what = "workspaces" if workspaces_only else "records, workspaces and logs"
    if (chosen or leftover) and sys.stdin.isatty() and not (yes or dry_run or as_json):
        also = f" and {_count(len(leftover), 'folder')} of runs without a record" if leftover else ""
        click.confirm(f"Remove the {what} of {_count(len(chosen))}{also}?", abort=True)
    outcome = pruning.prune(store, settings, chosen, leftover=leftover, workspaces_only=workspaces_only, dry_run=dry_run)
    for failure in outcome.failed:
        click.echo(f"{f'run {failure.run_id}' if failure.run_id else 'a folder'}: not removed: {failure.error}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "runs": [run.id for run in outcome.runs],
                    "bytes_freed": outcome.bytes_freed,
                    "dry_run": dry_run,
                    "leftovers": [str(path) for path in outcome.leftovers],
                    "failed": [{"id": f.run_id or None, "error": f.error} for f in outcome.failed],
                },
                indent=2,
            )
        )
    else:
        for run in outcome.runs:
            finished = run.finished_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{'would remove' if dry_run else 'removed'} run {run.id}  {run.pipeline}  finished {finished}")
        for path in outcome.leftovers:
            click.echo(f"{'would remove' if dry_run else 'removed'} {path}  (no run record)")
        freed = f"{_bytes_text(outcome.bytes_freed)} {'would be freed' if dry_run else 'freed'}"
        kept = " (records and logs kept)" if workspaces_only else ""
        folders = f", {_count(len(outcome.leftovers), 'folder')} without a record" if outcome.leftovers else ""
        click.echo(f"{_count(len(outcome.runs))}{folders}, {freed}{kept}" + (", nothing removed: dry run" if dry_run else ""))
    if outcome.failed:
        sys.exit(1)


def _count(n: int, what: str = "run") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _bytes_text(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    size, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
