"""`shipline init service NAME`: a service repository that passes its own pipeline out of the box.

The files come from `shipline/scaffolds/<lang>/` and `scaffolds/common/` (the chart),
with `__NAME__` (the service's name) and `__MODULE__` (a Python identifier form of
it) filled in, and `dot-x` files written as `.x` (packaging tools drop dotfiles).
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from shipline.cli.errors import ShiplineGroup
from shipline.domain.pipelines import NAME_PATTERN
from shipline.exceptions import UsageError

LANGS = ("go", "python")


def _files(root: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            found += _files(entry, f"{name}/")
        else:
            found.append((name, entry))
    return found


def _target_path(relative: str, name: str, module: str) -> str:
    parts = [p.replace("__NAME__", name).replace("__MODULE__", module) for p in relative.split("/")]
    return "/".join("." + p.removeprefix("dot-") if p.startswith("dot-") else p for p in parts)


def scaffold(name: str, lang: str, directory: Path) -> list[Path]:
    """Write the service's files into directory (missing or empty); return them, relative."""
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"'{name}' is not a service name: lower-case letters, digits and '-' (it names the image)")
    if lang not in LANGS:
        raise UsageError(f"no scaffold for '{lang}' (choose one of: {', '.join(LANGS)})")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} exists and is not empty: choose a new directory")
    module = name.replace("-", "_")
    base = resources.files("shipline") / "scaffolds"
    written: list[Path] = []
    for source_root in (base / "common", base / lang):
        for relative, entry in _files(source_root):
            target = directory / _target_path(relative, name, module)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = entry.read_text(encoding="utf-8").replace("__NAME__", name).replace("__MODULE__", module)
            target.write_text(text, encoding="utf-8")
            written.append(target.relative_to(directory))
    return sorted(written)


@click.group(cls=ShiplineGroup)
def init() -> None:
    """Start a new repository from a template."""


@init.command("service")
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--lang",
    type=click.Choice(LANGS),
    default="go",
    show_default=True,
    help="go builds with no network (a static binary FROM scratch); python needs a Python base image.",
)
def service(name: str, directory: Path | None, lang: str) -> None:
    """Scaffold a service repository: src, tests, Dockerfile, chart/ and .shipline/pipeline.yaml.

    \b
    Example (the testbed: `eval "$(shipline testbed env)"` first):
      shipline init service hello
      cd hello && git init -b main && git add -A && git commit -m "feat: hello"
      git push http://127.0.0.1:PORT/org/hello.git main
      shipline run .shipline/pipeline.yaml -p url=http://127.0.0.1:PORT/org/hello.git
    """
    target = directory or Path(name)
    written = scaffold(name, lang, target)
    for path in written:
        click.echo(f"  {target / path}")
    click.echo(f"service '{name}' ({lang}) scaffolded in {target}: {len(written)} files")
    click.echo("next: commit it to a git repository, push, and run .shipline/pipeline.yaml with -p url=REPO_URL")
