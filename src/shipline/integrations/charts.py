"""Helm charts: stamp a copy with the release's image, lint, package with its version, push to an OCI registry.

The chart in the service repo stays as its authors wrote it: a copy gets the image
repository and tag in values.yaml, spliced in where they stand (`domain.chartvalues`),
so every other byte survives into the package (Helm packages values.yaml as it is);
keys that are not there yet are made through ruamel.yaml's round trip.  `version`
and `appVersion` are given to `helm package` (`--version`, `--app-version`): Helm
writes the packaged Chart.yaml itself, from what it parsed, so an edit of the file
would not survive anyway.  helm is the only tool: `helm lint`, `helm package`,
`helm push` (OCI, Helm >= 3.8).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from shipline.domain.artifacts import Registry
from shipline.domain.chartvalues import set_scalars
from shipline.exceptions import RegistryError, ToolError, UsageError
from shipline.integrations.registries import AuthFile, refused
from shipline.integrations.tools import Echo, run_tool

HELM = "helm"
_DIGEST = re.compile(r"^Digest:\s*(sha256:[0-9a-f]{64})", re.M)
_BLOCK_ITEM = re.compile(r"^[ \t]*- ", re.M)


@dataclass(frozen=True)
class Stamp:
    """What a release writes into its chart."""

    version: str
    app_version: str
    image_repository: str = ""
    image_tag: str = ""
    repository_key: str = "image.repository"
    tag_key: str = "image.tag"


def _yaml(indent: int = 2, offset: int = 0) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line the author wrote on one
    yaml.indent(mapping=indent, sequence=indent + offset, offset=offset)
    return yaml


def _load(text: str, path: Path) -> tuple[CommentedMap, YAML]:
    """The mapping of `text` (read from `path`) and a YAML that writes it back with the author's indentation."""
    try:
        # Guessing how the author indents a list's dashes means parsing the whole file once more:
        # only done where there is a block list to write back.
        offset = load_yaml_guess_indent(text)[2] if _BLOCK_ITEM.search(text) else 0
        indent = _mapping_indent(text)
        data = _yaml(indent, offset or 0).load(text)
    except (YAMLError, RecursionError) as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise UsageError(f"{path} must be a YAML mapping")
    return data, _yaml(indent, offset or 0)


def _mapping_indent(text: str) -> int:
    """The smallest indentation of a nested key: how far the author indents mappings (default 2)."""
    widths = [
        len(line) - len(line.lstrip(" "))
        for line in text.splitlines()
        if line.startswith(" ") and line.strip() and not line.lstrip().startswith(("#", "-"))
    ]
    return min((w for w in widths if w > 0), default=2)


def _set(data: CommentedMap, dotted: str, value: str, path: Path) -> None:
    node: Any = data
    keys = dotted.split(".")
    for key in keys[:-1]:
        if key not in node or node[key] is None:
            node[key] = CommentedMap()
        node = node[key]
        if not isinstance(node, dict):
            raise UsageError(f"{path}: '{dotted}' cannot be set: '{key}' holds a {type(node).__name__}, not a mapping")
    node[keys[-1]] = value


def stamped_copy(chart: Path, into: Path, stamp: Stamp) -> Path:
    """Copy `chart` to `into/DIR` and write the stamp's image into the copy's values; the original is not touched.

    The copy's files are hard links to the chart's where the file system allows (a copy where it
    does not): helm only reads them, and a new file costs far more than a new name for one (each
    new inode: 0.4 ms of CPU on this project's CI disk).  values.yaml, the one file that changes,
    is a new file of the copy's own: nothing is ever written through a link or into the chart.
    """
    if not (chart / "Chart.yaml").is_file():
        raise UsageError(f"{chart / 'Chart.yaml'} is missing: a chart directory holds Chart.yaml")
    inside = chart.resolve()
    for link in (p for p in chart.rglob("*") if p.is_symlink()):
        if not link.resolve().is_relative_to(inside):
            raise UsageError(f"{link} points outside the chart ({link.readlink()}): a package holds only the chart's own files")
    copy = into / inside.name
    top = os.fspath(chart)

    def values_of_the_copy(directory: str, names: list[str]) -> list[str]:
        return ["values.yaml"] if stamp.image_repository and directory == top else []

    shutil.copytree(chart, copy, symlinks=True, ignore=values_of_the_copy, copy_function=_link_or_copy)
    if stamp.image_repository:
        _stamp_values(chart / "values.yaml", copy / "values.yaml", stamp)
    return copy


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system, a file system without links, a file not ours to link
        shutil.copy2(source, target, follow_symlinks=False)


def _stamp_values(values_yaml: Path, target: Path, stamp: Stamp) -> None:
    """The chart's values.yaml with the image in it, written to `target` (a new file): a splice of the
    scalars where they are; where they are not (a key to create, or one that is not a plain one-line
    scalar), ruamel.yaml's round trip of the file."""
    edits = {stamp.repository_key: stamp.image_repository}
    if stamp.image_tag:
        edits[stamp.tag_key] = stamp.image_tag
    try:
        with values_yaml.open(encoding="utf-8", newline="") as f:  # newline="": its line endings stay
            text = f.read()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{values_yaml} cannot be read: {exc}") from exc
    edited = set_scalars(text, edits)
    if edited is None:
        values, values_out = _load(text, values_yaml) if text else (CommentedMap(), _yaml())
        for key, value in edits.items():
            _set(values, key, value, values_yaml)
        out = io.StringIO()
        values_out.dump(values, out)
        edited = out.getvalue()
    # O_EXCL|O_NOFOLLOW: a new file, never one written through (the copy left the name free).
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask: the package holds it as the chart's other files
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(edited)


def lint(chart: Path, *, shown_as: Path, echo: Echo) -> None:
    result = run_tool([HELM, "lint", str(chart)], echo=echo, needed_for="the chart task")
    if not result.ok:
        errors = [line.strip() for line in result.output.splitlines() if "[ERROR]" in line]
        raise ToolError(
            f"helm lint of the chart {shown_as} failed: {'; '.join(errors) or result.cause()}. "
            "Fix the chart (run `helm lint` on it locally to see the same)"
        )


def package(chart: Path, *, destination: Path, stamp: Stamp, echo: Echo) -> tuple[str, Path]:
    """`helm package` with the stamp's version and appVersion: the chart's name and the package."""
    destination.mkdir(parents=True, exist_ok=True)
    argv = [HELM, "package", str(chart), "--destination", str(destination)]
    before = set(destination.glob("*.tgz"))
    result = run_tool(
        argv + ["--version", stamp.version, "--app-version", stamp.app_version], echo=echo, needed_for="the chart task"
    )
    packages = sorted(p for p in destination.glob("*.tgz") if p not in before and p.is_file())
    if not result.ok or len(packages) != 1:
        raise ToolError(f"helm package of {chart.name} failed: {result.cause()}")
    # Helm names it NAME-VERSION.tgz, NAME from Chart.yaml.
    name = packages[0].name.removesuffix(f"-{stamp.version}.tgz")
    if name == packages[0].name or not name:
        raise ToolError(f"helm package of {chart.name} made {packages[0].name}, not NAME-{stamp.version}.tgz")
    return name, packages[0]


def push(package: Path, *, registry: Registry, auth: AuthFile | None, echo: Echo) -> str:
    """`helm push` to `oci://REGISTRY/charts`; return the manifest digest helm reports."""
    argv = [HELM, "push", str(package), registry.charts()]
    if registry.plain_http:
        argv.append("--plain-http")
    if auth:
        argv += ["--registry-config", str(auth.path)]
    result = run_tool(argv, echo=echo, needed_for="the chart task")
    if not result.ok:
        raise refused(f"helm push of {package.name}", registry, result.cause())
    found = _DIGEST.search(result.output)
    if not found:
        raise RegistryError(f"helm push of {package.name} to {registry.host} printed no digest: {result.cause()}")
    return found.group(1)
