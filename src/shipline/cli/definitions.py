"""`shipline validate` and `shipline schema`: pipeline definitions checked and described.

Neither needs the store, the engine or the live view: kept apart from `shipline run`
(`pipelines`), whose imports (SQLAlchemy, rich) were most of a `validate` run's 0.3 s,
so that an editor's or a pre-commit hook's check starts at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shipline.engine.loading import load_pipeline, pipeline_schema, task_schema
from shipline.exceptions import DefinitionError, Problem


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check pipeline definitions without running them.

    Every problem is reported as FILE:LINE:COL: message, and exit status is 2
    when there is any.  Checked: YAML syntax, unknown keys, types, `needs`
    that name no task or form a cycle, every ${{ }} reference, and the
    inputs of reusable tasks.

    \b
      shipline validate .shipline/*.yaml
    """
    problems: list[Problem] = []
    for file in files:
        try:
            load_pipeline(file)
        except DefinitionError as exc:
            problems += exc.problems
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in problems], indent=2))
    else:
        for problem in problems:
            click.echo(str(problem), err=True)
    if problems:
        click.echo(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {len({p.file for p in problems})} file(s)", err=True
        )
        sys.exit(2)
    if not as_json:
        click.echo(f"{len(files)} definition{'s' if len(files) != 1 else ''} OK", err=True)


@click.command()
@click.option("--task", "for_task", is_flag=True, help="The schema of a reusable task file (uses: ./tasks/x.yaml) instead.")
def schema(for_task: bool) -> None:
    """Print the JSON Schema of a pipeline file, for editors.

    With --task: the schema of a reusable task file (`uses: ./tasks/x.yaml`).

    \b
      shipline schema > .shipline/schema.json
      shipline schema --task > tasks/schema.json
      # VS Code (YAML extension):  # yaml-language-server: $schema=./schema.json
    """
    click.echo(json.dumps(task_schema() if for_task else pipeline_schema(), indent=2))
