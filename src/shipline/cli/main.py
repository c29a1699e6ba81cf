"""The root command group; each subcommand lives in a module of its own."""

from __future__ import annotations

import click

from shipline import __version__
from shipline.cli.envs import env
from shipline.cli.errors import ShiplineGroup
from shipline.cli.pipelines import run, schema, validate
from shipline.cli.runs import runs
from shipline.cli.testbed import testbed
from shipline.cli.repos import repos, tokens
from shipline.cli.secrets import secrets
from shipline.cli.serve import serve
from shipline.cli.steps import step
from shipline.cli.wiring import Wiring


@click.group(cls=ShiplineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shipline")
@click.pass_context
def main(ctx: click.Context) -> None:
    """shipline: pipelines for cloud-native delivery, from a laptop to a cluster.

    \b
    Start here:
      shipline validate examples/hello.yaml
      shipline run examples/hello.yaml -p greeting=hi
      shipline runs list

    State lives under $SHIPLINE_HOME (default ~/.shipline); set
    SHIPLINE_DATABASE_URL=postgresql://... to keep it in PostgreSQL.
    """
    ctx.obj = Wiring()


main.add_command(validate)
main.add_command(schema)
main.add_command(run)
main.add_command(runs)
main.add_command(testbed)
main.add_command(serve)
main.add_command(repos)
main.add_command(tokens)
main.add_command(secrets)
main.add_command(step)
main.add_command(env)
