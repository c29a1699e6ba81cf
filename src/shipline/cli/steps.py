"""`shipline step ...`: the Python side of the catalog's tasks.

Catalog tasks (`uses: shipline/NAME`) are shell steps, so they show in runs,
logs and the dashboard like any step; where a step needs more than a shell
one-liner (versions, JUnit reports, OCI pushes, CloudEvents, Kubernetes), it
calls one of these commands.  They read inputs from flags and environment
variables, print progress as log lines, and write results to
$SHIPLINE_OUTPUT.  Not meant to be typed by hand.
"""

from __future__ import annotations

import click

from shipline.cli import steps_artifacts, steps_service
from shipline.cli.errors import ShiplineGroup


@click.group(cls=ShiplineGroup)
def step() -> None:
    """Commands the catalog's tasks run inside their steps (not for interactive use)."""


step.add_command(steps_artifacts.image)
step.add_command(steps_artifacts.chart)
step.add_command(steps_artifacts.publish)
step.add_command(steps_artifacts.notify)
step.add_command(steps_service.version)
step.add_command(steps_service.test_report)
step.add_command(steps_service.tag)
step.add_command(steps_service.withdraw)
