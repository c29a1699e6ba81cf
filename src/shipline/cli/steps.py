"""`shipline step ...`: the Python side of the catalog's tasks.

Catalog tasks (`uses: shipline/NAME`) are shell steps, so they show in runs,
logs and the dashboard like any step; where a step needs more than a shell
one-liner (versions, JUnit reports, OCI pushes, CloudEvents, Kubernetes), it
calls one of these commands.  They read inputs from flags and environment
variables, print progress as log lines, and write results to
$SHIPLINE_OUTPUT.  Not meant to be typed by hand.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

import click

from shipline.cli.errors import ShiplineGroup
from shipline.domain.outputs import format_results

COMMANDS = {
    "image": "shipline.cli.steps_artifacts:image",
    "chart": "shipline.cli.steps_artifacts:chart",
    "publish": "shipline.cli.steps_artifacts:publish",
    "notify": "shipline.cli.steps_artifacts:notify",
    "version": "shipline.cli.steps_service:version",
    "test-report": "shipline.cli.steps_service:test_report",
    "tag": "shipline.cli.steps_service:tag",
    "withdraw": "shipline.cli.steps_service:withdraw",
    "env-render": "shipline.cli.steps_envs:env_render",
    "env-validate": "shipline.cli.steps_cluster:env_validate",
    "env-diff": "shipline.cli.steps_cluster:env_diff",
    "env-apply": "shipline.cli.steps_cluster:env_apply",
    "env-prune": "shipline.cli.steps_cluster:env_prune",
    "env-verify": "shipline.cli.steps_cluster:env_verify",
}
"""Each command's module is imported only when that command runs: every `shipline step X`
is a process of its own inside a step, so what it imports is paid on each call (the
artifact commands' HTTP and OCI clients cost about 0.3 s of CPU that `version` does not need,
the environment commands' Kubernetes client 0.25 s that no service step needs)."""


class LazySteps(ShiplineGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attr = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazySteps)
def step() -> None:
    """Commands the catalog's tasks run inside their steps (not for interactive use)."""


def write_results(results: Mapping[str, str], *, show: bool = False) -> None:
    """Append `results` to $SHIPLINE_OUTPUT for the engine (nothing outside a step); with `show`, print
    them as `result name=value` lines too, so the step's log (or a hand-run command) says what it gave."""
    text = format_results(results)
    if target := os.environ.get("SHIPLINE_OUTPUT"):
        with open(target, "a", encoding="utf-8") as out:
            out.write(text)
    if show:
        for name, value in results.items():
            click.echo(f"result {name}={value}")
