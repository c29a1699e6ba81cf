"""The root command group; each subcommand lives in a module of its own.

Subcommands are imported when they are run, not when `shipline` starts: the
engine, SQLAlchemy and FastAPI take most of a second to import, and
`shipline --version`, `--help` or `validate` should not wait for what they do
not use.  `COMMANDS` names each command's module and its one-line help (a
test checks that the line matches the command's own).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os

import click

from shipline import __version__
from shipline.cli.errors import ShiplineGroup

# The first time pydantic builds a model it reads the entry points of every installed
# package, looking for plugins (about 20 ms of each command that loads shipline's models):
# shipline uses none.  A documented pydantic setting; one given in the environment wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# As the process exits, Python's collector walks every object of every module imported,
# several times: 0.09 s of a 1-task `shipline run` (0.4 s), 0.03 s of each `shipline step`.
# Frozen first, they are left to the OS.  Registered first, so it runs after every other
# exit handler; objects are still freed as their counts drop, files closed as always.
atexit.register(gc.freeze)

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:attribute", short help shown by `shipline --help`)
    "validate": ("shipline.cli.definitions:validate", "Check pipeline definitions without running them."),
    "schema": ("shipline.cli.definitions:schema", "Print the JSON Schema of a pipeline file, for editors."),
    "run": ("shipline.cli.pipelines:run", "Run a pipeline and show its progress until it ends."),
    "runs": ("shipline.cli.runs:runs", "Pipeline runs: list, show, logs, cancel, rerun, prune."),
    "serve": ("shipline.cli.serve:serve", "Run the server: webhooks in, runs out, dashboard and API to watch them."),
    "repos": ("shipline.cli.repos:repos", "Repositories the server starts runs for, and their trigger rules."),
    "tokens": (
        "shipline.cli.repos:tokens",
        "API tokens for the server: `read` may look, `operator` may also change things.",
    ),
    "previews": (
        "shipline.cli.previews:previews",
        "Preview environments: one namespace per pull request, while it is open.",
    ),
    "secrets": ("shipline.cli.secrets:secrets", "Secrets for pipelines: set, list, delete."),
    "env": (
        "shipline.cli.envs:env",
        "Environments: a namespace or a cluster whose state lives in a git repository.",
    ),
    "metrics": ("shipline.cli.metrics:metrics", "Delivery metrics from shipline's own records (DORA's four keys)."),
    "testbed": (
        "shipline.cli.testbed:testbed",
        "The local OCI registry, Gitea and Kubernetes control plane, on 127.0.0.1.",
    ),
    "demo": (
        "shipline.cli.demo:demo",
        "The whole chain on the testbed: service run, artifacts, pull requests, dev, staging, prod.",
    ),
    "init": ("shipline.cli.init:init", "Start a new repository from a template."),
    "step": (
        "shipline.cli.steps:step",
        "Commands the catalog's tasks run inside their steps (not for interactive use).",
    ),
}


class LazyGroup(ShiplineGroup):
    """A group whose subcommands are imported only when one is run (or its help is asked for)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        if not gc.isenabled():  # off for start-up (`shipline.launch.main`), which ends here
            gc.freeze()
            gc.enable()
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="shipline")
@click.pass_context
def main(ctx: click.Context) -> None:
    """shipline: pipelines for cloud-native delivery, from a laptop to a cluster.

    \b
    Start here:
      shipline demo          # the whole chain on the local testbed, built if needed
      shipline validate examples/hello.yaml
      shipline run examples/hello.yaml -p greeting=hi
      shipline runs list

    State lives under $SHIPLINE_HOME (default ~/.shipline); set
    SHIPLINE_DATABASE_URL=postgresql://... to keep it in PostgreSQL.
    """
    if ctx.invoked_subcommand in ("step", "init"):
        # No settings, store or engine: a `shipline step` runs inside a step, several
        # times per run, and pydantic's import alone is a tenth of a second of CPU.
        return
    from shipline.cli.wiring import Wiring  # builds (and imports) the engine only when a command asks

    ctx.obj = Wiring()
