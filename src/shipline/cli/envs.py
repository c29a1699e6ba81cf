"""`shipline env ...`: environments (GitOps) — declare, sync, diff, roll back, and see their state.

They write the store directly (the same database a server reads).  A sync,
diff or rollback is a run of the environment's pipeline, driven here to its
end with live progress, like `shipline run`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from shipline.cli.pipelines import drive_with_progress
from shipline.cli.wiring import Wiring
from shipline.domain.environments import EnvironmentStatus, Outcome
from shipline.domain.objects import CREDENTIALS_SECONDS
from shipline.domain.pipelines import parse_duration
from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.engine.loading import load_pipeline
from shipline.engine.logs import read_log
from shipline.exceptions import UsageError
from shipline.gitops import syncing
from shipline.gitops.declarations import kubeconfig_path, load_environments, read_kubeconfig
from shipline.store.environments import EnvironmentStore


def _console() -> Console:
    """A terminal's width on a terminal; wide enough for whole commit ids in a pipe."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=250)


def _store(wiring: Wiring) -> EnvironmentStore:
    return EnvironmentStore(wiring.store)


@click.group()
def env() -> None:
    """Environments: a namespace or a cluster whose state lives in a git repository.

    \b
      shipline env apply environments.yaml     # register (or update) what the file declares
      shipline env sync dev                    # render, diff, apply, prune, verify (rolls back on failure)
      shipline env status dev --json
      shipline env diff dev                    # what a sync would change, changing nothing
      shipline env rollback dev --to 3f2c1a9   # back to an earlier commit
      shipline env history dev

    \b
    A declaration file:
      environments:
        - name: dev
          repo: http://127.0.0.1:3000/org/env-dev.git
          branch: main
          namespace: dev              # or: cluster: true
          kubeconfig: dev.kubeconfig  # the only credentials a run of dev uses
          sync: auto                  # auto: the server applies each commit; manual: env sync only
          self-heal: true
          verify-timeout: 5m
          retry: {limit: 3, backoff: 1m}  # a failed sync of the head again 1m, 2m, 4m later
    """


def _default_kubeconfig() -> Path | None:
    listed = os.environ.get("KUBECONFIG", "")
    for candidate in (p for p in listed.split(os.pathsep) if p):
        if Path(candidate).is_file():
            return Path(candidate)
    home = Path.home() / ".kube" / "config"
    return home if home.is_file() else None


@env.command("apply")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def apply_cmd(wiring: Wiring, file: Path) -> None:
    """Register the environments FILE declares; re-applying updates them.

    Problems are reported as FILE:LINE:COL: message (exit 2), and then nothing
    is stored.  Each environment's kubeconfig is read now and kept as the
    secret `env-NAME-kubeconfig` (encrypted): runs use it and nothing else.
    Without `kubeconfig:`, the one in $KUBECONFIG (or ~/.kube/config) is
    kept, and the command says so.
    """
    environments = load_environments(file)
    kubeconfigs: dict[str, tuple[str, Path]] = {}
    for item in environments:
        source = kubeconfig_path(file, item) if item.kubeconfig else _default_kubeconfig()
        if source is None:
            raise UsageError(
                f"{file}: environment {item.name!r} declares no kubeconfig and there is none in $KUBECONFIG or "
                "~/.kube/config; add `kubeconfig: PATH` (credentials for that environment only)"
            )
        kubeconfigs[item.name] = (read_kubeconfig(source), source)
    store = _store(wiring)
    secrets = wiring.engine.secrets
    for item in environments:
        text, source = kubeconfigs[item.name]
        secrets.set(item.kubeconfig_secret, text)
        created = store.put(item, str(file.resolve()))
        syncing.write_definition(
            wiring.settings.home, item, git_credentials=syncing.git_credentials_available(wiring.settings, secrets)
        )
        target = f"namespace {item.namespace}" if item.namespace else "the whole cluster"
        how = "" if item.kubeconfig else f" (no `kubeconfig:` declared: using {source})"
        click.echo(f"{item.name}: {'registered' if created else 'updated'} — {item.repo} {item.branch} -> {target}{how}")


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the declarations as a JSON list.")
@click.pass_obj
def list_cmd(wiring: Wiring, as_json: bool) -> None:
    """Registered environments, with what was last applied to each."""
    store = _store(wiring)
    stored = store.all()
    if as_json:
        out = []
        for item in stored:
            last = store.last_applied(item.name)
            out.append(
                {
                    **item.environment.declared(),
                    "applied_commit": last.applied_commit if last else "",
                    "updated_at": item.updated_at.isoformat(),
                }
            )
        click.echo(json.dumps(out, indent=2))
        return
    if not stored:
        click.echo("no environments yet: declare them in a file and `shipline env apply FILE`", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("name", "target", "repo", "branch", "sync", "applied", "last"):
        table.add_column(col)
    for item in stored:
        e = item.environment
        history = store.history(e.name, limit=1)
        last = store.last_applied(e.name)
        table.add_row(
            e.name,
            e.namespace or "(cluster)",
            e.repo,
            e.branch,
            e.sync,
            last.applied_commit[:12] if last else "",
            history[0].outcome.value if history else "never synced",
        )
    _console().print(table)


def _print_status(result: EnvironmentStatus) -> None:
    console = Console(highlight=False)
    sync = "green" if result.sync == "Synced" else "yellow"
    health = {"Healthy": "green", "Progressing": "cyan", "Degraded": "red", "Missing": "yellow"}[result.health.value]
    console.print(f"[bold]{result.name}[/]  [{sync}]{result.sync.value}[/]  [{health}]{result.health.value}[/]")
    console.print(f"commit          {result.commit or '?'}")
    console.print(f"applied commit  {result.applied_commit or '(none)'}")
    console.print(f"message         {result.message}", markup=False)


@env.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print {name, sync, health, commit, applied_commit, message}.")
@click.pass_obj
def status_cmd(wiring: Wiring, name: str, as_json: bool) -> None:
    """Whether NAME runs what its branch holds (sync) and how its workloads are (health).

    sync: Synced when the applied commit is the head of the branch and nothing
    drifted, else OutOfSync.  health: Healthy, Progressing (a sync is running),
    Degraded (a verify failed) or Missing (never applied).
    """
    wiring.engine.recover()
    stored = _store(wiring).get(name)
    secret = stored.environment.kubeconfig_secret
    kubeconfig = None if wiring.engine.secrets.missing([secret]) else wiring.engine.secrets.reveal([secret])[secret]
    result = syncing.status(wiring.store, _store(wiring), stored, kubeconfig)
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    _print_status(result)


@env.command("history")
@click.argument("name")
@click.option("--limit", default=20, show_default=True, help="How many entries (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
@click.pass_obj
def history_cmd(wiring: Wiring, name: str, limit: int, as_json: bool) -> None:
    """Each sync and rollback of NAME, newest first: commit, outcome, run."""
    store = _store(wiring)
    store.get(name)
    entries = store.history(name, limit=limit)
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"{name} was never synced: `shipline env sync {name}`", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("when", "action", "commit", "outcome", "applied", "run", "message"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.commit[:12],
            e.outcome.value,
            e.applied_commit[:12],
            str(e.run_id or ""),
            e.message,
        )
    _console().print(table)


@env.command("promotions")
@click.option("--env", "environment", default=None, help="Only this environment's.")
@click.option("--service", default=None, help="Only this service's.")
@click.option("--limit", default=50, show_default=True, help="How many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the promotions as a JSON list.")
@click.pass_obj
def promotions_cmd(wiring: Wiring, environment: str | None, service: str | None, limit: int, as_json: bool) -> None:
    """Versions of services proposed to environments (pull requests), newest first, and where each got to."""
    from shipline.store.promotions import PromotionStore

    rows = PromotionStore(wiring.store).list(environment=environment, service=service, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    if not rows:
        click.echo("no promotion yet: a service release proposes itself to environments whose `services:` list it", err=True)
        return
    table = Table(box=None, padding=(0, 2), header_style="bold")
    for col in ("when", "environment", "service", "version", "from", "state", "pull request", "message"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            r.environment,
            r.service,
            r.version,
            r.previous_version or "-",
            r.state.value,
            r.pr_url or "",
            r.message,
        )
    _console().print(table)


# --- runs: sync, diff, rollback ---------------------------------------------------------

BAD_INPUT_TASKS = ("clone", "render", "validate")
"""A failure here with exit status 2 is bad input (the repository's content): nothing was applied."""


def _exit_code(record: RunRecord, action: syncing.Action) -> int:
    if record.status == RunStatus.SUCCEEDED:
        if action == syncing.Action.DIFF:
            return 0
        return 0 if syncing.outcome_of(record)[0] == Outcome.VERIFIED else 1
    for task in record.tasks:
        if task.status == TaskStatus.FAILED:
            codes = [s.exit_code for s in task.steps if s.exit_code not in (None, 0)]
            return 2 if task.name in BAD_INPUT_TASKS and codes and codes[-1] == 2 else 1
    return 1


def _run(wiring: Wiring, name: str, action: syncing.Action, *, revision: str, last_verified: str, as_json: bool) -> int:
    store = _store(wiring)
    env_ = store.get(name).environment
    creds = syncing.git_credentials_available(wiring.settings, wiring.engine.secrets)
    path = syncing.write_definition(wiring.settings.home, env_, git_credentials=creds)
    pipeline = load_pipeline(path)
    engine = wiring.engine
    engine.recover()
    syncing.record_unrecorded(wiring.store, store, env_)
    engine.check_secrets(pipeline)
    params = syncing.run_params(action, revision=revision, last_verified=last_verified)
    run_id = engine.submit(pipeline, params, claim=True)
    record = drive_with_progress(wiring, run_id, as_json)
    entry = syncing.record_outcome(store, env_, record, action)
    out = sys.stderr if as_json else sys.stdout
    if action == syncing.Action.DIFF and record.status == RunStatus.SUCCEEDED:
        for _task, _attempt, _index, _step, log in wiring.store.log_paths(run_id, task="diff"):
            for line in read_log(Path(log)):
                print(line.text, file=out)
    if entry is not None:
        print(entry.message, file=out)
    return _exit_code(record, action)


@env.command("sync")
@click.argument("name")
@click.option("--revision", default="", help="Apply this commit instead of the head of the branch.")
@click.option("--json", "as_json", is_flag=True, help="Progress goes to stderr; the run record is printed last on stdout.")
@click.pass_obj
def sync_cmd(wiring: Wiring, name: str, revision: str, as_json: bool) -> None:
    """Apply the head of NAME's branch: render, validate, diff, apply, prune, verify.

    Exit status: 0 when verified; 1 when the sync failed (after a failed
    verify the last verified commit is applied again, and history says so);
    2 for bad input (the repository's content does not render or the API
    server rejects an object: nothing was applied).
    """
    store = _store(wiring)
    store.get(name)
    back = syncing.last_verified(store, name)
    sys.exit(
        _run(wiring, name, syncing.Action.SYNC, revision=syncing.check_revision(revision), last_verified=back, as_json=as_json)
    )


@env.command("diff")
@click.argument("name")
@click.option("--revision", default="", help="Compare this commit instead of the head of the branch.")
@click.pass_obj
def diff_cmd(wiring: Wiring, name: str, revision: str) -> None:
    """What a sync of NAME would create, change and prune; changes nothing.

    Exit status 0 (whatever the diff), 1 when the run failed, 2 for bad input.
    """
    sys.exit(_run(wiring, name, syncing.Action.DIFF, revision=syncing.check_revision(revision), last_verified="", as_json=False))


@env.command("rollback")
@click.argument("name")
@click.option("--to", "to", default="", help="The commit to go back to (default: the verified commit before the applied one).")
@click.option("--json", "as_json", is_flag=True, help="Progress goes to stderr; the run record is printed last on stdout.")
@click.pass_obj
def rollback_cmd(wiring: Wiring, name: str, to: str, as_json: bool) -> None:
    """Apply an earlier commit of NAME's branch (render, apply, prune, verify, as a sync does).

    Without --to, the last verified commit before the one applied now.  The
    branch is not changed: the next sync (or the server, with `sync: auto`,
    on the next commit) applies its head again.
    """
    store = _store(wiring)
    store.get(name)
    to, back = syncing.rollback_plan(store, name, syncing.check_revision(to))
    sys.exit(_run(wiring, name, syncing.Action.ROLLBACK, revision=to, last_verified=back, as_json=as_json))


@env.command("credentials")
@click.argument("name")
@click.option(
    "--namespace", help="The environment's namespace (the ServiceAccount's home with --cluster; default shipline-system)."
)
@click.option(
    "--cluster", "cluster_wide", is_flag=True, help="Cluster-wide rights (cluster-admin) for a `cluster: true` environment."
)
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), help="An administrator's kubeconfig (default $KUBECONFIG)."
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the new kubeconfig (mode 0600)."
)
@click.option(
    "--duration",
    default=f"{CREDENTIALS_SECONDS // 3600}h",
    show_default=True,
    help="The token's lifetime; run the command again to renew it.",
)
def credentials(name: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None, out: Path, duration: str) -> None:
    """Make credentials that may change only environment NAME, and a kubeconfig holding them.

    With an administrator's kubeconfig, creates (or updates) ServiceAccount
    shipline-env-NAME, a Role that may change the kinds an environment holds in
    its namespace only, and a RoleBinding; with --cluster, a ClusterRoleBinding
    to cluster-admin instead.  The token comes from the TokenRequest API and
    expires after --duration (the API server may shorten it); delete the
    ServiceAccount to revoke it at once.

    \b
      shipline env credentials staging --namespace staging --out staging.kubeconfig
      shipline secrets set staging-kubeconfig --from-file staging.kubeconfig
    """
    # The cluster client is imported here: every other `env` command goes without it (60 ms).
    from shipline.integrations.clusteraccess import issue_credentials, write_private
    from shipline.integrations.clusters import load_kubeconfig

    if not namespace and not cluster_wide:
        raise UsageError("give the environment's namespace (--namespace NS), or --cluster for a cluster-wide environment")
    try:
        seconds = int(parse_duration(duration))
    except ValueError as exc:
        raise UsageError(f"--duration: {exc}") from exc
    admin = load_kubeconfig(kubeconfig)
    issued = issue_credentials(
        admin,
        name,
        namespace=namespace or "shipline-system",
        cluster_wide=cluster_wide,
        seconds=seconds,
        origin=str(kubeconfig or os.environ.get("KUBECONFIG", "the admin kubeconfig")),
    )
    for what in issued.created:
        click.echo(f"{what} applied")
    write_private(out, issued.kubeconfig)
    expires = issued.expires.isoformat() if issued.expires else "unknown"
    click.echo(
        f"wrote {out} (mode 0600): ServiceAccount {issued.service_account} in namespace {issued.namespace}, "
        f"token expires {expires}"
    )
