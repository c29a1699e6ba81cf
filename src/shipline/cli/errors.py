"""Turn shipline's errors into a message and an exit code: no traceback for a user mistake."""

from __future__ import annotations

import sys
from typing import Any

import click

from shipline.exceptions import DefinitionError, ShiplineError


class ShiplineGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DefinitionError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            count = len(exc.problems)
            click.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
            sys.exit(exc.exit_code)
        except ShiplineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
