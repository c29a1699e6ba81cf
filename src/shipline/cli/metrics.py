"""`shipline metrics ...`: delivery performance read from shipline's own records.

`metrics dora` reads the store directly (the same database a server reads),
so it works with or without a server running.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shipline.cli.wiring import Wiring
from shipline.domain.dora import WINDOWS, Band, Metrics, Report, Times

_BAND_STYLE = {Band.ELITE: "green", Band.HIGH: "cyan", Band.MEDIUM: "yellow", Band.LOW: "red"}


@click.group()
def metrics() -> None:
    """Delivery metrics from shipline's own records (DORA's four keys).

    \b
      shipline metrics dora                       # last 30 days, every environment and service
      shipline metrics dora --window 7d --environment prod
      shipline metrics dora --service api --json
    """


def duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: 45s, 12m, 3.5h, 2.1d."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _band(band: Band | None) -> str:
    return f"[{_BAND_STYLE[band]}]{band.value}[/]" if band else "[dim]-[/]"


def _times(t: Times, band: Band | None) -> str:
    if not t.count:
        return "[dim]-[/]"
    return f"{duration(t.median_seconds)} / {duration(t.p90_seconds)} {_band(band)}"


def _row(table: Table, scope: str, m: Metrics) -> None:
    rate = f"{m.change_failure_rate:.0%} ({m.failed_changes}/{m.changes})" if m.change_failure_rate is not None else "-"
    table.add_row(
        scope,
        str(m.deployments),
        f"{m.deployment_frequency:.2f} {_band(m.deployment_frequency_band)}",
        _times(m.lead_time, m.lead_time_band),
        f"{rate} {_band(m.change_failure_rate_band)}",
        _times(m.time_to_restore, m.time_to_restore_band),
        str(m.unrestored) if m.unrestored else "",
    )


def print_report(result: Report, console: Console) -> None:
    console.print(
        f"[bold]DORA metrics[/], last {result.window_days} days "
        f"({result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC); times are median / p90"
    )
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("scope", "deploys", "per day", "lead time", "change failure rate", "time to restore", "unrestored"):
        table.add_column(col)
    overall = result.overall
    label = "all"
    if overall.environment or overall.service:
        label = "all of " + " ".join(
            p
            for p in (overall.environment and f"env {overall.environment}", overall.service and f"service {overall.service}")
            if p
        )
    _row(table, label, overall)
    for m in result.environments:
        _row(table, f"env {m.environment}", m)
    for m in result.services:
        _row(table, f"service {m.service}", m)
    console.print(table)
    if not result.environments and not result.services:
        console.print("[dim]nothing recorded in this window: environments count once they sync (`shipline env sync NAME`)[/]")


@metrics.command("dora")
@click.option(
    "--window", "window", type=click.Choice(list(WINDOWS)), default="30d", show_default=True, help="How far back to count."
)
@click.option("--environment", default="", help="Only this environment.")
@click.option("--service", default="", help="Only this service (figures from its promotions).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (the API's shape).")
@click.pass_obj
def dora_cmd(wiring: Wiring, window: str, environment: str, service: str, as_json: bool) -> None:
    """Deployment frequency, lead time, change failure rate and time to restore, with DORA's bands."""
    from shipline.gitops.measuring import dora

    result = dora(wiring.store, WINDOWS[window], environment=environment.strip(), service=service.strip())
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    console = Console(highlight=False)
    print_report(result, console if console.is_terminal else Console(highlight=False, width=200))
