"""`shipline repos ...` and `shipline tokens ...`: what the server listens to, and who may talk to it.

These write the store directly (the same database the server reads), so they
work whether or not a server is running.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shipline.cli.pipelines import parse_params
from shipline.cli.wiring import Wiring
from shipline.domain.urls import public_url
from shipline.engine.loading import load_pipeline
from shipline.exceptions import ShiplineError, UsageError
from shipline.integrations.forges.base import Hook
from shipline.server.sourcing import FROM_REPOSITORY, PIPELINE_PATH
from shipline.store.repositories import FORGES, Repository, Role, ServerStore
from shipline.triggers.events import PullRequestAction
from shipline.triggers.rules import Concurrency, On, TriggerRule


def _state(wiring: Wiring) -> ServerStore:
    return ServerStore(wiring.store, wiring.engine.secrets.keyring)


def _rule(
    on: str,
    branches: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    actions: tuple[str, ...],
    cron: str | None,
    params: tuple[str, ...],
    concurrency: str,
) -> TriggerRule:
    data: dict[str, object] = {
        "on": on,
        "branches": list(branches),
        "tags": list(tags),
        "paths": list(paths),
        "cron": cron,
        "params": parse_params(params),
        "concurrency": concurrency,
    }
    if actions:
        data["actions"] = list(actions)
    try:
        return TriggerRule.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"bad trigger rule: {problems}") from exc


_rule_options = [
    click.option(
        "--on", "on", type=click.Choice([o.value for o in On]), default="push", show_default=True, help="What starts a run."
    ),
    click.option(
        "--branch",
        "branches",
        multiple=True,
        help="Branch glob (repeatable; `**` crosses '/', `!` excludes, `:default` is the default branch).",
    ),
    click.option("--tag", "tags", multiple=True, help="Tag glob for --on tag (repeatable), e.g. 'v*'."),
    click.option("--path", "paths", multiple=True, help="Run a push only if a changed file matches (repeatable)."),
    click.option(
        "--action",
        "actions",
        multiple=True,
        type=click.Choice([a.value for a in PullRequestAction if a is not PullRequestAction.OTHER]),
        help="Pull request actions that fire [default: opened, synchronized, reopened].",
    ),
    click.option("--cron", help="For --on schedule: five cron fields in UTC, e.g. '0 3 * * *'."),
    click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A fixed param for the run."),
    click.option(
        "--concurrency",
        type=click.Choice([c.value for c in Concurrency]),
        default="queue",
        show_default=True,
        help="A newer run for the same branch: waits (queue), cancels the older (cancel), or runs beside it.",
    ),
]


def rule_options(f: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_rule_options):
        f = option(f)
    return f


@click.group()
def repos() -> None:
    """Repositories the server starts runs for, and their trigger rules.

    \b
      shipline repos add app https://gitea.example/team/app.git --forge gitea \\
          --pipeline ./app-pipeline.yaml --secret-env APP_HOOK_SECRET
      shipline repos trigger add app --on pull_request
      shipline repos trigger add app --on tag --tag 'v*'
      shipline repos add infra /srv/git/infra.git --forge git --poll 60 --pipeline ./env.yaml
      shipline repos list

    With SHIPLINE_GITEA_TOKEN (or SHIPLINE_GITHUB_TOKEN) set, `repos add`
    registers the webhook itself at SHIPLINE_PUBLIC_URL/hooks/FORGE; otherwise
    point the repository's webhook at http://SERVER/hooks/gitea (or
    /hooks/github, /hooks/gitlab) with content type JSON and the same secret.
    A repository without rules runs its pipeline on each push to its default branch.
    """


@repos.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "--forge", type=click.Choice(FORGES), required=True, help="Who sends the webhooks; `git` for a plain remote that is polled."
)
@click.option(
    "--pipeline",
    "pipeline_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The pipeline file to run (checked now; the server re-reads it when it changes).  "
    "Without it (gitea, github): the repository's own .shipline/pipeline.yaml at each event's commit.",
)
@click.option("--secret-env", metavar="VAR", help="Read the webhook secret from this environment variable.")
@click.option(
    "--secret-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read the webhook secret from this file."
)
@click.option("--generate-secret", is_flag=True, help="Make a random secret and print it once, to paste into the forge.")
@click.option("--default-branch", default="main", show_default=True)
@click.option("--poll", "poll_seconds", type=click.IntRange(min=1), help="Also poll with `git ls-remote` every N seconds.")
@click.option(
    "--webhook/--no-webhook",
    default=True,
    show_default=True,
    help="With a forge token: register the repository's webhook (to SHIPLINE_PUBLIC_URL/hooks/FORGE) on the forge.",
)
@click.option(
    "--previews",
    is_flag=True,
    help="Give each pull request a preview environment: its build deployed to namespace preview-SERVICE-pr-N, "
    "with the kubeconfig in secret previews-kubeconfig (`shipline secrets set previews-kubeconfig < FILE`), "
    "never the server's own; removed when the pull request is closed or merged.  Needs a pull_request trigger.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the repository as JSON.")
@click.pass_obj
def add(
    wiring: Wiring,
    name: str,
    url: str,
    forge: str,
    pipeline_file: Path | None,
    secret_env: str | None,
    secret_file: Path | None,
    generate_secret: bool,
    default_branch: str,
    poll_seconds: int | None,
    webhook: bool,
    previews: bool,
    as_json: bool,
) -> None:
    """Register repository NAME at URL, whose events run a pipeline.

    \b
      shipline repos add shop https://gitea.example/team/shop.git --forge gitea
      shipline repos add shop https://gitea.example/team/shop.git --forge gitea \\
          --pipeline ./shop.yaml --generate-secret
      shipline repos add infra /srv/git/infra.git --forge git --poll 60 --pipeline ./env.yaml
      shipline repos add shop https://gitea.example/team/shop.git --forge gitea --previews

    URL is the clone URL the forge's payloads name (any spelling: https, ssh,
    with or without .git), without credentials: `https://TOKEN@host/...` is
    refused, as it would be shown and handed to every run.  Polling uses the
    git credentials of the user running the server (~/.git-credentials);
    steps get a token from a secret (`shipline secrets set NAME`).  With
    `--pipeline`, the file lives on the server; it is checked now and re-read
    when it changes.  Without it (gitea, github), each event runs the
    repository's own .shipline/pipeline.yaml as it is at the event's commit
    (pipelines as code).  With a forge token set (SHIPLINE_GITEA_TOKEN,
    SHIPLINE_GITHUB_TOKEN), the webhook is registered on the forge, pointing
    at SHIPLINE_PUBLIC_URL, with a secret made for it; running this again
    never makes a second one.  Without rules of its own (`shipline repos
    trigger add`), the repository runs on each push to its default branch.

    With `--previews`, each pull request whose run of the service archetype
    succeeds gets that build deployed into namespace preview-SERVICE-pr-N,
    and one comment on the pull request says where and how it is.  The
    server deploys with the kubeconfig in the secret previews-kubeconfig
    (`shipline secrets set previews-kubeconfig < FILE`), never with its
    own credentials; the namespace is deleted when the pull request is
    closed or merged.  Add a pull_request trigger too (`shipline repos
    trigger add NAME --on pull_request`).  See `shipline previews --help`.
    """
    from shipline.integrations.forges import SUPPORTED, serves

    if pipeline_file is not None:
        load_pipeline(pipeline_file)  # a broken file fails here, with every problem listed
    elif forge not in SUPPORTED:
        raise UsageError(
            f"--forge {forge} needs --pipeline FILE: shipline reads a repository's own .shipline/pipeline.yaml "
            f"only through the {' or '.join(SUPPORTED)} API"
        )
    if sum(bool(x) for x in (secret_env, secret_file, generate_secret)) > 1:
        raise UsageError("give one of --secret-env, --secret-file, --generate-secret")
    settings = wiring.settings
    state = _state(wiring)
    # Only the forge the token is for: a repository on another host gets its hook by hand.
    register = webhook and forge in SUPPORTED and serves(settings, forge, url)
    secret = ""
    if secret_env:
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise UsageError(f"--secret-env {secret_env}: that variable is not set or empty")
    elif secret_file:
        secret = secret_file.read_text().strip()
    elif generate_secret:
        secret = secrets.token_hex(24)
    elif register:
        # One hook per URL on the forge: registrations of the same repository share its secret.
        same = [r for r in state.find_repositories([url]) if r.forge == forge]
        secret = state.webhook_secret(same[0]) if same else secrets.token_hex(24)
    if forge not in ("git",) and not secret and not register:
        raise UsageError(
            f"a {forge} repository needs a webhook secret (the same one set on the forge's hook): give "
            f"--generate-secret, --secret-env or --secret-file, or set the forge's token so shipline registers the hook itself"
        )
    repo = state.add_repository(
        name=name,
        url=url,
        forge=forge,
        secret=secret,
        pipeline=str(pipeline_file.resolve()) if pipeline_file is not None else FROM_REPOSITORY,
        default_branch=default_branch,
        poll_seconds=poll_seconds,
        previews=previews,
    )
    hook: Hook | None = _register_webhook(wiring, state, repo, secret) if register else None
    target = f"{settings.server_url}/hooks/{forge}"
    if as_json:
        out = repo.model_dump(mode="json")
        if generate_secret:
            out["secret"] = secret
        if hook is not None:
            out["webhook"] = {"id": hook.id, "url": hook.url, "created": hook.created}
        click.echo(json.dumps(out, indent=2))
        return
    where = repo.pipeline or f"{PIPELINE_PATH} in the repository, at each event's commit"
    click.echo(f"registered {repo.name} ({repo.forge}) -> {where}")
    if hook is not None:
        note = "" if settings.public_url else " (SHIPLINE_PUBLIC_URL is not set: can the forge reach this address?)"
        click.echo(f"webhook: {'registered' if hook.created else 'already there, updated'} #{hook.id} -> {target}{note}")
    elif forge != "git":
        click.echo(f"webhook: POST {settings.server_url}/hooks/{forge}, content type application/json")
    if generate_secret:
        click.echo(f"webhook secret (shown once): {secret}")
    if previews:
        click.echo("previews: on (pull requests deploy to preview-SERVICE-pr-N with secret previews-kubeconfig)")
        if wiring.engine.secrets.missing(["previews-kubeconfig"]):
            click.echo("previews: secret previews-kubeconfig is not set yet: shipline secrets set previews-kubeconfig < FILE")


def _register_webhook(wiring: Wiring, state: ServerStore, repo: Repository, secret: str) -> Hook:
    """Register (or bring up to date) the repository's hook; on failure, forget the registration again."""
    from shipline.integrations.forges import connect, repo_ref

    settings = wiring.settings
    try:
        forge = connect(settings, repo.forge)
        try:
            return forge.ensure_webhook(repo_ref(repo.url), url=f"{settings.server_url}/hooks/{repo.forge}", secret=secret)
        finally:
            forge.close()
    except ShiplineError:
        state.remove_repository(repo.name)
        raise


@repos.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print repositories as a JSON list.")
@click.pass_obj
def list_repos(wiring: Wiring, as_json: bool) -> None:
    """Registered repositories."""
    state = _state(wiring)
    repos_ = state.list_repositories()
    if as_json:
        out = []
        for r in repos_:
            out.append({**r.model_dump(mode="json"), "triggers": [t.model_dump(mode="json") for t in state.list_triggers(r.id)]})
        click.echo(json.dumps(out, indent=2))
        return
    if not repos_:
        click.echo("no repositories yet: add one with `shipline repos add`", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("name", "forge", "url", "pipeline", "triggers", "poll"):
        table.add_column(col)
    for r in repos_:
        rules = state.list_triggers(r.id)
        desc = ", ".join(f"#{t.id} {t.rule.on.value}" for t in rules) or "push to default branch"
        table.add_row(
            r.name,
            r.forge,
            public_url(r.url),
            r.pipeline or f"(the repo's {PIPELINE_PATH})",
            desc,
            f"{r.poll_seconds}s" if r.poll_seconds else "",
        )
    Console(highlight=False).print(table)


@repos.command("remove")
@click.argument("name")
@click.pass_obj
def remove(wiring: Wiring, name: str) -> None:
    """Forget a repository and its trigger rules (its runs stay).

    Its open preview environments are removed by the server (`shipline serve`) at its next look."""
    repo = _state(wiring).remove_repository(name)
    click.echo(f"removed {repo.name}" + ("; its open previews go at the server's next look" if repo.previews else ""))


@repos.group()
def trigger() -> None:
    """Trigger rules of a repository: add, list, remove."""


@trigger.command("add")
@click.argument("name")
@rule_options
@click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON.")
@click.pass_obj
def trigger_add(
    wiring: Wiring,
    name: str,
    on: str,
    branches: tuple[str, ...],
    tags: tuple[str, ...],
    paths: tuple[str, ...],
    actions: tuple[str, ...],
    cron: str | None,
    params: tuple[str, ...],
    concurrency: str,
    as_json: bool,
) -> None:
    """Add a rule to repository NAME.

    \b
      shipline repos trigger add app --on push --branch ':default'
      shipline repos trigger add app --on push --branch '**' --branch '!:default' -p stage=test
      shipline repos trigger add app --on push --path 'src/**'
      shipline repos trigger add app --on pull_request --action closed -p mode=teardown
      shipline repos trigger add app --on schedule --cron '0 3 * * *' --branch main
    """
    state = _state(wiring)
    repo = state.get_repository(name)
    rule = _rule(on, branches, tags, paths, actions, cron, params, concurrency)
    created = state.add_trigger(repo.id, rule)
    if as_json:
        click.echo(created.model_dump_json(indent=2))
    else:
        click.echo(f"trigger #{created.id} added to {repo.name}: {rule.model_dump_json(exclude_defaults=True)}")


@trigger.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print rules as a JSON list.")
@click.pass_obj
def trigger_list(wiring: Wiring, name: str | None, as_json: bool) -> None:
    """Rules of repository NAME (or of all)."""
    state = _state(wiring)
    repo_id = state.get_repository(name).id if name else None
    rules = state.list_triggers(repo_id)
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in rules], indent=2))
        return
    for t in rules:
        click.echo(f"#{t.id} repo {t.repository_id}: {t.rule.model_dump_json(exclude_defaults=True)}")


@trigger.command("remove")
@click.argument("trigger_id", type=int)
@click.pass_obj
def trigger_remove(wiring: Wiring, trigger_id: int) -> None:
    """Remove rule TRIGGER_ID."""
    _state(wiring).remove_trigger(trigger_id)
    click.echo(f"removed trigger #{trigger_id}")


@repos.command("deliveries")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print deliveries as a JSON list.")
@click.pass_obj
def deliveries(wiring: Wiring, limit: int, as_json: bool) -> None:
    """Recent webhook, poll and cron deliveries, and what came of each."""
    items = _state(wiring).list_deliveries(limit)
    if as_json:
        click.echo(json.dumps([d.model_dump(mode="json") for d in items], indent=2))
        return
    for d in items:
        runs = ", ".join(f"{i} (pruned)" if i in d.pruned_run_ids else str(i) for i in d.run_ids) or "-"
        click.echo(f"{d.received_at:%Y-%m-%d %H:%M:%S}  {d.source:8} {d.event:14} {d.result:10} runs: {runs}  {d.delivery_id}")


@click.group()
def tokens() -> None:
    """API tokens for the server: `read` may look, `operator` may also change things.

    \b
      shipline tokens create --name ci --role operator
      curl -H "Authorization: Bearer $TOKEN" -X POST http://SERVER/api/v1/runs/12/cancel
    """


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses it (shown in run records it starts).")
@click.option("--role", type=click.Choice([r.value for r in Role]), default="read", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@click.pass_obj
def token_create(wiring: Wiring, name: str, role: str, as_json: bool) -> None:
    """Make a token; it is printed once and only its hash is kept."""
    token, plain = _state(wiring).create_token(name, Role(role))
    if as_json:
        click.echo(json.dumps({**token.model_dump(mode="json"), "secret": plain}, indent=2))
    else:
        click.echo(plain)
        click.echo(f"token #{token.id} {token.name!r} ({token.role.value}); shown once: store it now", err=True)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print tokens as a JSON list.")
@click.pass_obj
def token_list(wiring: Wiring, as_json: bool) -> None:
    """Tokens (names and roles; never the tokens themselves)."""
    items = _state(wiring).list_tokens()
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in items], indent=2))
        return
    for t in items:
        click.echo(f"#{t.id}  {t.role.value:8}  {t.name}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def token_revoke(wiring: Wiring, token_id: int) -> None:
    """Revoke token TOKEN_ID at once."""
    _state(wiring).revoke_token(token_id)
    click.echo(f"revoked token #{token_id}")
