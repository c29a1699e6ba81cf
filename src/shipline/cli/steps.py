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

from shipline.cli.errors import ShiplineGroup


@click.group(cls=ShiplineGroup)
def step() -> None:
    """Commands the catalog's tasks run inside their steps (not for interactive use)."""


from shipline.cli.steps_cluster import env_apply, env_diff, env_prune, env_validate, env_verify  # noqa: E402
from shipline.cli.steps_envs import env_render  # noqa: E402  (registered on the group above)

step.add_command(env_render)
step.add_command(env_validate)
step.add_command(env_diff)
step.add_command(env_apply)
step.add_command(env_prune)
step.add_command(env_verify)
