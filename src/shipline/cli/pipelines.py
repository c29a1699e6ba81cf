"""`shipline run`: a pipeline run in this process, with its progress (`validate` and `schema` are in `definitions`)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import click
from rich.console import Console

from shipline.cli.progress import RunView, live_terminal, plain_lines, summary
from shipline.cli.wiring import Wiring
from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.logs import read_log
from shipline.exceptions import UsageError


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"-p {item!r}: write -p NAME=VALUE")
        params[name] = value
    return params


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A param value; repeat for more.")
@click.option("--json", "as_json", is_flag=True, help="Progress goes to stderr; the run record is printed last on stdout.")
@click.pass_obj
def run(wiring: Wiring, file: Path, params: tuple[str, ...], as_json: bool) -> None:
    """Run a pipeline and show its progress until it ends.

    Exit status: 0 when the run succeeded, 1 when it failed or was
    cancelled, 2 for a bad definition or bad params.  Ctrl-C cancels the run
    (finally tasks still run); a second Ctrl-C stops at once.

    \b
      shipline run examples/hello.yaml
      shipline run examples/hello.yaml -p greeting=hi --json | jq .status
    """
    pipeline = load_pipeline(file)
    given = parse_params(params)
    engine = wiring.engine
    engine.recover()
    engine.check_secrets(pipeline)
    run_id = engine.submit(pipeline, given, claim=True)
    record = drive_with_progress(wiring, run_id, as_json)
    sys.exit(0 if record.status == RunStatus.SUCCEEDED else 1)


def drive_with_progress(wiring: Wiring, run_id: int, as_json: bool) -> RunRecord:
    """Drive a queued run in this process, with the live view on a terminal."""
    console = Console(stderr=as_json, highlight=False)
    engine = wiring.engine
    pipeline, _ = wiring.store.load_spec(run_id)
    view = RunView(run_id, pipeline)

    async def main() -> RunRecord:
        done = asyncio.Event()
        sub = engine.bus.subscribe()
        if console.is_terminal:
            shower = asyncio.create_task(live_terminal(sub, view, console, done))
        else:
            shower = asyncio.create_task(plain_lines(sub, view, sys.stderr if as_json else sys.stdout, done))
        driver = asyncio.create_task(engine.drive(run_id))
        loop = asyncio.get_running_loop()
        interrupts = 0

        def interrupt() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                console.print("[yellow]cancelling: finally tasks still run (Ctrl-C again to stop at once)[/]")
                engine.cancel(run_id)
            else:
                driver.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        try:
            try:
                record = await driver
            except asyncio.CancelledError:
                record = wiring.store.get_run(run_id)
            return record
        finally:
            done.set()
            await shower
            sub.close()

    record = asyncio.run(main())
    summary(record, console)
    if record.status == RunStatus.FAILED:
        show_failure_tails(wiring, record, console)
    if as_json:
        click.echo(record_json(record))
    return record


def show_failure_tails(wiring: Wiring, record: RunRecord, console: Console, lines: int = 8) -> None:
    """The last lines each failed task printed: usually the reason, without another command."""
    failed = {t.name for t in record.tasks if t.status == TaskStatus.FAILED}
    last_step: dict[str, str] = {}
    for task, _attempt, _index, _name, path in wiring.store.log_paths(record.id):
        if task in failed:
            last_step[task] = path
    for task, path in last_step.items():
        tail = [line.text for line in read_log(Path(path))][-lines:]
        if tail:
            console.print(f"[bold red]{task}[/] last lines:", highlight=False)
            for text in tail:
                console.print(f"  {text}", markup=False, highlight=False)


def record_json(record: RunRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=2)
