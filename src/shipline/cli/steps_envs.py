"""`shipline step env-render`: the environment archetype's render task.

It turns a checkout of an environment repository into a directory of
manifests, one object per file in apply order, which the cluster steps
(`env-validate`, `env-diff`, `env-apply`) read.  Bad content exits 2 with
the file and the cause; nothing has touched a cluster by then.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import click
import yaml

from shipline.cli.steps import write_results
from shipline.domain.environments import key_of
from shipline.exceptions import UsageError
from shipline.gitops.rendering import render

try:
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # PyYAML built without libyaml
    _Dumper = yaml.SafeDumper


def dump_yaml(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=False))


def _file_name(index: int, obj: dict[str, Any]) -> str:
    key = key_of(obj)
    slug = re.sub(r"[^a-z0-9.-]+", "-", f"{key.kind}-{key.namespace + '-' if key.namespace else ''}{key.name}".lower())
    return f"{index:04d}-{slug[:120]}.yaml"


def write_manifests(out: Path, objects: list[dict[str, Any]], sources: list[str]) -> None:
    """One object per file, named in apply order; a file's first line says where it came from."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for i, (obj, source) in enumerate(zip(objects, sources, strict=True)):
        (out / _file_name(i, obj)).write_text(f"# Source: {source}\n{dump_yaml(obj)}", encoding="utf-8")


@click.command("env-render")
@click.option("--dir", "checkout", required=True, type=click.Path(path_type=Path), help="The environment repository's checkout.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the manifests (replaced).")
@click.option("--namespace", default="", help="The environment's namespace (with --cluster: for objects that name none).")
@click.option("--cluster", is_flag=True, help="The environment is a whole cluster: objects keep the namespaces they name.")
@click.option("--release", default=None, help="Release name for an umbrella chart (default: the chart's name).")
def env_render(checkout: Path, out: Path, namespace: str, cluster: bool, release: str | None) -> None:
    """Render an environment repository (manifests/, a Chart.yaml or a helmfile.yaml) to manifests.

    Results: layout, objects (how many).
    """
    if not checkout.is_dir():
        raise UsageError(f"--dir {checkout}: no such directory (the checkout of the environment repository)")
    if not namespace:
        if not cluster:
            raise UsageError("--namespace is required unless --cluster is given")
        namespace = "default"
    rendered = render(checkout, namespace, cluster=cluster, release=release or None)
    click.echo(f"layout: {rendered.layout.value}")
    for obj, source in zip(rendered.objects, rendered.sources, strict=True):
        click.echo(f"  {key_of(obj)}  ({source})")
    write_manifests(out, rendered.objects, rendered.sources)
    click.echo(f"rendered {len(rendered.objects)} object{'s' if len(rendered.objects) != 1 else ''} into {out}")
    write_results({"layout": rendered.layout.value, "objects": str(len(rendered.objects))})
