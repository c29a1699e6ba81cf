"""The root command group; each subcommand lives in a module of its own."""

from __future__ import annotations

import click

from shipline import __version__
from shipline.cli.testbed import testbed
from shipline.cli.repos import repos, tokens
from shipline.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shipline")
def main() -> None:
    """shipline: pipelines for cloud-native delivery, from a laptop to a cluster.

    \b
    Start here:
      shipline validate examples/hello.yaml
      shipline run examples/hello.yaml -p greeting=hi
      shipline runs list
    """


main.add_command(testbed)
main.add_command(serve)
main.add_command(repos)
main.add_command(tokens)
