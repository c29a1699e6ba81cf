"""`shipline secrets ...`: the values pipelines reference as ${{ secrets.NAME }}.

They write the store directly (the same database a server reads), so a
secret set here is used by the next run, wherever it starts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from shipline.cli.wiring import Wiring
from shipline.exceptions import UsageError
from shipline.store.secrets import check_name


@click.group()
def secrets() -> None:
    """Secrets for pipelines: set, list, delete.  Values are never printed.

    A pipeline names a secret where it needs it, and the step gets the value
    in an environment variable, masked as *** in logs, results and records:

    \b
      env:
        REGISTRY_TOKEN: ${{ secrets.registry-token }}

    \b
      shipline secrets set registry-token < token.txt
      shipline secrets set gitea-token --from-env GITEA_TOKEN
      shipline secrets list

    Values are encrypted in the store with the key in $SHIPLINE_SECRET_KEY,
    else $SHIPLINE_HOME/secret.key (made on first use; back it up).
    """


@secrets.command("set")
@click.argument("name")
@click.option("--from-env", "from_env", metavar="VAR", help="Take the value from this environment variable.")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Take the value from this file (one trailing newline is dropped).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the secret's record (name and times) as JSON.")
@click.pass_obj
def set_secret(wiring: Wiring, name: str, from_env: str | None, from_file: Path | None, as_json: bool) -> None:
    """Create or replace secret NAME.

    Without --from-env or --from-file the value is read from stdin: typed
    (hidden) on a terminal, or piped.  It is never a command-line argument,
    where `ps` and shell history would show it.

    \b
      printf %s "$TOKEN" | shipline secrets set registry-token
      shipline secrets set kube-token --from-file /run/keys/token
    """
    check_name(name)  # before asking for a value that a bad name would throw away
    value = read_value(from_env, from_file, prompt=f"value of {name}")
    info = wiring.engine.secrets.set(name, value)
    if as_json:
        click.echo(info.model_dump_json(indent=2))
    else:
        click.echo(f"secret {info.name} set; use it as ${{{{ secrets.{info.name} }}}}", err=True)


def read_value(from_env: str | None, from_file: Path | None, prompt: str) -> str:
    """A secret value from one of: an environment variable, a file, stdin (hidden prompt on a terminal)."""
    if from_env and from_file:
        raise UsageError("give --from-env or --from-file, not both")
    if from_env:
        value = os.environ.get(from_env, "")
        if not value:
            raise UsageError(f"--from-env {from_env}: that variable is not set or empty")
        return value
    if from_file:
        return _one_newline_off(from_file.read_text())
    if sys.stdin.isatty():
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True, err=True))
    value = _one_newline_off(sys.stdin.read())
    if not value:
        raise UsageError('no value on stdin: pipe it in (printf %s "$VALUE" | ...) or use --from-env / --from-file')
    return value


def _one_newline_off(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print names and times as a JSON list.")
@click.pass_obj
def list_secrets(wiring: Wiring, as_json: bool) -> None:
    """Secret names and when each was set (never the values)."""
    items = wiring.engine.secrets.all()
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in items], indent=2))
        return
    if not items:
        click.echo("no secrets yet: set one with `shipline secrets set NAME`", err=True)
        return
    width = max(len(s.name) for s in items)
    for s in items:
        click.echo(f"{s.name:{width}}  updated {s.updated_at.astimezone():%Y-%m-%d %H:%M:%S}")


@secrets.command("delete")
@click.argument("name")
@click.pass_obj
def delete_secret(wiring: Wiring, name: str) -> None:
    """Delete secret NAME; runs that use it fail at their start until it is set again."""
    wiring.engine.secrets.delete(name)
    click.echo(f"deleted secret {name}", err=True)
