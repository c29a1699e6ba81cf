"""Showing a run as it happens: a live table on a terminal, plain lines elsewhere.

Both views only listen to the engine's events; neither reads the store
while the run goes on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shipline.cli.tracing import release_trace
from shipline.domain.runs import RunRecord, RunStatus, TaskRecord, TaskStatus
from shipline.engine.events import Event, Subscription

if TYPE_CHECKING:
    from shipline.domain.pipelines import ResolvedPipeline

STYLE = {
    "pending": ("·", "dim"),
    "queued": ("·", "dim"),
    "running": ("●", "yellow"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("–", "dim"),
    "cancelled": ("⊘", "magenta"),
}


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def status_text(status: str) -> Text:
    icon, style = STYLE.get(status, ("?", ""))
    return Text(f"{icon} {status}", style=style)


@dataclass
class _TaskView:
    name: str
    status: str = "pending"
    started: datetime | None = None
    finished: datetime | None = None
    attempt: int = 0
    message: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=3))


class RunView:
    """The state of one run as seen through its events."""

    def __init__(self, run_id: int, pipeline: ResolvedPipeline) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.status = "queued"
        self.note = ""  # e.g. which run holds the concurrency group this one waits for
        self.started: datetime | None = None
        self.tasks = {t.name: _TaskView(t.name) for t in pipeline.tasks}

    def apply(self, event: Event) -> None:
        data = event.data
        if event.kind == "run":
            self.status = data["status"]
            self.note = data.get("message", "") if self.status == "queued" else ""
            if self.status == "running" and self.started is None:
                self.started = event.at
            return
        view = self.tasks.get(data.get("task", ""))
        if view is None:
            return
        if event.kind == "task":
            view.status = data["status"]
            # Each event says the whole message: a new attempt or the end replaces an
            # earlier attempt's failure instead of carrying it on.
            view.message = data.get("message", "")
            if view.status == "running":
                view.started = view.started or event.at
                view.attempt = data.get("attempt", view.attempt)
            elif view.status != "pending":
                view.finished = event.at
        elif event.kind == "log":
            view.tail.append(data["line"])

    def render(self) -> RenderableType:
        head = Text.assemble(
            (f"run {self.run_id} ", "bold"),
            (self.pipeline.name, "cyan"),
            "  ",
            status_text(self.status),
            f"  {duration(self.started, None)}",
            (f"  {self.note}" if self.note else "", "yellow"),
        )
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(overflow="ellipsis", no_wrap=True, max_width=80)
        for view in self.tasks.values():
            icon, style = STYLE.get(view.status, ("?", ""))
            name = view.name + ("  (finally)" if self.pipeline.task(view.name).is_finally else "")
            if view.attempt > 1:
                name += f"  attempt {view.attempt}"
            detail = view.tail[-1] if view.status == "running" and view.tail else view.message
            table.add_row(
                Text(icon, style=style),
                Text(name, style=style if view.status != "running" else "bold"),
                duration(view.started, view.finished if view.status != "running" else None),
                Text(detail, style="dim"),
            )
        return Group(head, table)


async def live_terminal(sub: Subscription, view: RunView, console: Console, done: asyncio.Event) -> None:
    with Live(view.render(), console=console, refresh_per_second=8, transient=True) as live:
        while not done.is_set() or not sub.queue.empty():
            try:
                event = await asyncio.wait_for(sub.queue.get(), 0.125)
            except TimeoutError:
                live.update(view.render())
                continue
            view.apply(event)
            live.update(view.render())


async def plain_lines(sub: Subscription, view: RunView, out: TextIO, done: asyncio.Event) -> None:
    """One line per change and per log line: readable in CI logs and files."""
    while not done.is_set() or not sub.queue.empty():
        try:
            event = await asyncio.wait_for(sub.queue.get(), 0.25)
        except TimeoutError:
            continue
        view.apply(event)
        line = _plain(event, view)
        if line is not None:
            print(line, file=out, flush=True)


def _plain(event: Event, view: RunView) -> str | None:
    stamp = event.at.astimezone().strftime("%H:%M:%S")
    data = event.data
    if event.kind == "run":
        if data["status"] == "running":
            return f"{stamp} run {view.run_id} ({view.pipeline.name}) started"
        if data["status"] == "queued" and data.get("message"):
            return f"{stamp} run {view.run_id} ({view.pipeline.name}) {data['message']}"
        return None  # the summary says how it ended
    task = data.get("task", "")
    if event.kind == "log":
        return f"{stamp} {task} | {data['line']}"
    if event.kind == "task":
        t = view.tasks[task]
        status = data["status"]
        if status == "running" and data.get("retrying"):
            return f"{stamp} {task} attempt {data.get('attempt', 1)} failed: {data.get('message', '')}; retrying"
        if status == "running":
            attempt = data.get("attempt", 1)
            return f"{stamp} {task} started" + (f" (attempt {attempt})" if attempt > 1 else "")
        extra = f": {t.message}" if t.message else ""
        took = f" in {duration(t.started, t.finished)}" if t.started else ""
        return f"{stamp} {task} {status}{took}{extra}"
    return None


def summary(record: RunRecord, console: Console) -> None:
    """The end of a run: every task, how it ended, and what to do next."""
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("task")
    table.add_column("status")
    table.add_column("took", justify="right")
    table.add_column("results / message", overflow="fold")
    for task in record.tasks:
        table.add_row(
            task.name + (" (finally)" if task.is_finally else ""),
            status_text(task.status.value),
            duration(task.started_at, task.finished_at),
            Text(_task_detail(task)),
        )
    console.print(table)
    # The run's own results in full (digests are copied from here), then what they trace.
    for name, value in record.results.items():
        console.print(Text(f"result      {name}={value}"), soft_wrap=True)
    if trace := release_trace(record.results):
        console.print(Text(f"release     {trace}", style="bold"), soft_wrap=True)
    style = STYLE[record.status.value][1]
    took = duration(record.started_at, record.finished_at)
    line = Text.assemble((f"run {record.id} {record.status.value}", f"bold {style}"), f" in {took}")
    if record.message:
        line.append(f": {record.message}")
    console.print(line)
    if record.status != RunStatus.SUCCEEDED:
        failed = next((t.name for t in record.tasks if t.status == TaskStatus.FAILED), None)
        hint = f"shipline runs logs {record.id}" + (f" --task {failed}" if failed else "")
        console.print(Text(f"logs: {hint}    again: shipline runs rerun {record.id}", style="dim"))


def _task_detail(task: TaskRecord) -> str:
    parts = [f"{k}={v if len(v) <= 40 else v[:37] + '...'}" for k, v in task.results.items()]
    if task.attempts > 1 and "attempts)" not in task.message:
        parts.append(f"({task.attempts} attempts)")
    if task.message:
        parts.append(task.message)
    return "  ".join(parts)
