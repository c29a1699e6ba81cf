"""`shipline testbed`: the local registry, forge and cluster, built once and run on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from shipline.exceptions import ShiplineError
from shipline.testbed import running
from shipline.testbed.building import build as build_parts
from shipline.testbed.layout import Layout, layout_from_env
from shipline.testbed.parts import ALL_PART_NAMES, GO_PARTS
from shipline.testbed.ports import port_base_from_env


def _layout() -> Layout:
    return layout_from_env(os.environ, Path.home())


def _say(line: str) -> None:
    click.echo(line, err=True)


def _fail(exc: ShiplineError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


@click.group()
def testbed() -> None:
    """The local OCI registry, Gitea and Kubernetes control plane, on 127.0.0.1.

    \b
    Everything runs on this machine, as plain processes (no Docker):
      registry    docker-registry (OCI, plain HTTP, deletes allowed)
      gitea       Gitea with an admin user and an API token
      etcd, kube-apiserver, kube-controller-manager, kube-scheduler
      kwok        fake nodes, so pods become Running and Ready

    \b
    Typical use:
      shipline testbed build        # once: apt packages, then Go builds (cached)
      shipline testbed up           # start everything, wait until it answers
      eval "$(shipline testbed env)"
      kubectl get nodes; helm ls; curl "$SHIPLINE_GITEA_URL/api/v1/version"
      shipline testbed down         # stop everything (--purge: forget all data)

    \b
    Environment:
      SHIPLINE_TESTBED_CACHE      built tools (default ~/.cache/shipline/testbed)
      SHIPLINE_TESTBED_HOME       running state: pids, logs, data (default ~/.shipline/testbed)
      SHIPLINE_TESTBED_PORT_BASE  first of 8 loopback ports (default 28400)
    """


@testbed.command()
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(ALL_PART_NAMES),
    help="Build only this part (repeatable). Default: every part.",
)
@click.option("--force", is_flag=True, help="Rebuild even if the stamp says it is built.")
def build(only: tuple[str, ...], force: bool) -> None:
    """Install the Debian packages and build the Go tools, once.

    \b
    Parts, in order:
      debian       git buildah skopeo docker-registry postgresql chromium ... (apt-get; needs root)
      helm         helm.sh/helm/v3/cmd/helm
      kwok         sigs.k8s.io/kwok/cmd/kwok
      kubernetes   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
      gitea        code.gitea.io/gitea, with SQLite

    Each part leaves a stamp named by its pinned version in the cache; a built part
    is skipped at once, so running `build` again costs nothing.  A cold build of
    everything takes tens of minutes on 2 cores (see the README's Testbed section).
    """
    layout = _layout()
    _say(f"cache: {layout.cache}")
    try:
        build_parts(layout, only=only, report=_say, force=force)
    except ShiplineError as exc:
        _fail(exc)


@testbed.command()
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for each service to answer.")
def up(timeout: float) -> None:
    """Start every built service on 127.0.0.1 and wait until each answers.

    Idempotent: what already runs is left alone.  Writes a kubeconfig and an env
    file under $SHIPLINE_TESTBED_HOME; `shipline testbed env` prints it.
    """
    layout = _layout()
    try:
        running.up(layout, os.environ, port_base_from_env(os.environ), report=_say, timeout=timeout)
    except ShiplineError as exc:
        _fail(exc)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@testbed.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of services instead of a table.")
def status(as_json: bool) -> None:
    """What runs, on which port, and whether it answers its health check.

    Exit status: 0 when every built service is healthy, 1 otherwise.
    """
    layout = _layout()
    services = running.status(layout)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "port": s.port,
                        "state": s.state,
                        "built": s.built,
                        "pid": s.pid,
                        "healthy": s.healthy,
                        "detail": s.detail,
                        "log": s.log,
                    }
                    for s in services
                ],
                indent=2,
            )
        )
    elif not services:
        click.echo(f"no testbed at {layout.home}: run `shipline testbed up`")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, padding=(0, 2), header_style="bold")
        # Only the answer gives way on a narrow terminal (or none: 80 columns).
        table.add_column("service", no_wrap=True, min_width=23)
        table.add_column("address", no_wrap=True, min_width=15)
        table.add_column("state", no_wrap=True, min_width=7)
        table.add_column("pid", no_wrap=True, min_width=5)
        table.add_column("answer", overflow="ellipsis", no_wrap=True, max_width=40)
        for s in services:
            colour = "green" if s.healthy else ("dim" if not s.built else "red")
            table.add_row(s.name, f"127.0.0.1:{s.port}", f"[{colour}]{s.state}[/{colour}]", str(s.pid or "-"), s.detail[:50])
        Console().print(table)
    if not services or any(s.built and not s.healthy for s in services):
        sys.exit(1)


@testbed.command()
def env() -> None:
    """Print `export` lines for the running testbed: eval "$(shipline testbed env)".

    \b
    KUBECONFIG            the admin kubeconfig
    SHIPLINE_REGISTRY     127.0.0.1:PORT of the OCI registry (plain HTTP)
    SHIPLINE_GITEA_URL    http://127.0.0.1:PORT
    SHIPLINE_GITEA_TOKEN  an API token of Gitea's admin user
    """
    layout = _layout()
    state = running.load_state(layout)
    if state is None:
        click.echo(f"error: no testbed at {layout.home}: run `shipline testbed up` first", err=True)
        sys.exit(1)
    from shipline.testbed.configs import env_file

    bins = [str(layout.bin_dir(p)) for p in GO_PARTS]
    click.echo(env_file(running.env_values(layout, state)), nl=False)
    click.echo(f'export PATH={":".join(bins)}:"$PATH"')


@testbed.command()
@click.option("--purge", is_flag=True, help="Also delete all state: data, certificates, Gitea's repositories.")
def down(purge: bool) -> None:
    """Stop every testbed service (from any shell), leaving nothing running."""
    running.down(_layout(), purge=purge, report=_say)
