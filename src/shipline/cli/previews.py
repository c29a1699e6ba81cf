"""`shipline previews ...`: the preview environments of pull requests, and which repositories have them.

They read and write the store directly (the same database the server reads),
so they work whether or not a server is running; the server does the deploying.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shipline.cli.wiring import Wiring


@click.group()
def previews() -> None:
    """Preview environments: one namespace per pull request, while it is open.

    \b
      shipline secrets set previews-kubeconfig < preview-cluster.kubeconfig
      shipline repos add shop https://gitea.example/team/shop.git --forge gitea --previews
      shipline repos trigger add shop --on pull_request
      shipline previews list
      shipline previews enable shop        # or disable, for a repository already added

    A pull request whose run of the service archetype succeeds gets its chart
    (with the image it built) deployed into namespace preview-SERVICE-pr-N,
    labelled shipline.dev/preview=SERVICE-pr-N, with the kubeconfig in the
    secret previews-kubeconfig (never the server's own).  One comment on the
    pull request says the namespace, version, status and run; it is edited at
    each push.  Closing or merging the pull request deletes the namespace.
    """


@previews.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also the removed ones (of closed pull requests).")
@click.option("--json", "as_json", is_flag=True, help="Print the previews as a JSON list.")
@click.pass_obj
def list_previews(wiring: Wiring, show_all: bool, as_json: bool) -> None:
    """Preview environments and their status."""
    from shipline.store.previews import PreviewStore
    from shipline.store.repositories import ServerStore

    names = {r.id: r.name for r in ServerStore(wiring.store, wiring.engine.secrets.keyring).list_repositories()}
    items = [p for p in PreviewStore(wiring.store).all(include_removed=show_all) if p.service]
    if as_json:
        out = [{**p.model_dump(mode="json", exclude={"comment"}), "repository": names.get(p.repository_id, "")} for p in items]
        click.echo(json.dumps(out, indent=2))
        return
    if not items:
        click.echo("no preview environments: see `shipline previews --help` to turn them on", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("repository", "pr", "namespace", "status", "version", "reason"):
        table.add_column(col)
    for p in items:
        version = str((p.deployed or p.wanted or {}).get("version") or "")
        table.add_row(
            names.get(p.repository_id, str(p.repository_id)), f"#{p.pr_number}", p.namespace, p.state.value, version, p.reason
        )
    Console(highlight=False).print(table)


@previews.command("enable")
@click.argument("repository")
@click.pass_obj
def enable(wiring: Wiring, repository: str) -> None:
    """Turn preview environments on for a repository's pull requests."""
    _switch(wiring, repository, True)


@previews.command("disable")
@click.argument("repository")
@click.pass_obj
def disable(wiring: Wiring, repository: str) -> None:
    """Turn preview environments off (existing ones go when their pull requests close)."""
    _switch(wiring, repository, False)


def _switch(wiring: Wiring, repository: str, on: bool) -> None:
    from shipline.store.repositories import ServerStore

    repo = ServerStore(wiring.store, wiring.engine.secrets.keyring).set_previews(repository, on)
    click.echo(f"previews {'on' if on else 'off'} for {repo.name}")
    if on and wiring.engine.secrets.missing(["previews-kubeconfig"]):
        click.echo("previews: secret previews-kubeconfig is not set yet: shipline secrets set previews-kubeconfig < FILE")
