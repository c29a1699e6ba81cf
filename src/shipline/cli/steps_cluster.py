"""`shipline step env-validate|env-diff|env-apply|env-prune|env-verify`: an
environment pipeline's cluster side, on a directory of rendered manifests.

Each takes `--dir RENDERED --environment NAME` and a target (`--namespace NS`,
or `--cluster` for a cluster-wide environment), reads the credentials from
$KUBECONFIG (a secret file in a pipeline) or `--kubeconfig`, prints one log
line per object, and writes counts to $SHIPLINE_OUTPUT.  A rollback is the
same three steps (apply, prune, verify) on the previous commit's rendered
directory.  (`shipline env credentials`, which makes an environment's
kubeconfig, is in `envs`.)
"""

from __future__ import annotations

import difflib
import io
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from ruamel.yaml import YAML

from shipline.cli.steps import write_results
from shipline.domain.objects import changed_paths, comparable
from shipline.domain.pipelines import parse_duration
from shipline.exceptions import UsageError
from shipline.integrations.clusterobjects import Applied, ResourceHealth, Target
from shipline.integrations.clusters import Cluster

F = TypeVar("F", bound=Callable[..., Any])


def _common(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--dir",
                "directory",
                required=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="The rendered manifests (YAML files, searched recursively).",
            ),
            click.option("--environment", required=True, help="The environment's name: its objects carry it as a label."),
            click.option("--namespace", help="The target namespace (created if missing)."),
            click.option(
                "--cluster",
                "cluster_wide",
                is_flag=True,
                help="A cluster-wide environment: cluster-scoped objects and any namespaces.",
            ),
            click.option(
                "--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), help="Credentials to use (default $KUBECONFIG)."
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _cluster(environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None) -> Cluster:
    # With --cluster, a --namespace is the default for objects that name none.
    return Cluster.connect(kubeconfig, environment=environment, target=Target(namespace, cluster_wide))


def _results(**values: object) -> None:
    write_results({name.replace("_", "-"): str(value) for name, value in values.items()})


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


@click.command("env-validate")
@_common
def env_validate(directory: Path, environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None) -> None:
    """Dry-run every rendered object on the API server; list every rejection; change nothing.

    Only the target namespace is created if it is missing (its objects cannot be
    checked without it).
    """
    cluster = _cluster(environment, namespace, cluster_wide, kubeconfig)
    desired = cluster.load(directory)
    validation = cluster.validate(desired)
    deferred = {d.ref for d in validation.deferred}
    for item in desired:
        note = " (checked once its namespace or kind exists)" if item.ref in deferred else ""
        _say(f"{item.ref} valid{note}")
    _say(
        f"{len(desired)} objects valid on {cluster.server}"
        + (f", {len(validation.deferred)} to be checked when applied" if validation.deferred else "")
    )
    _results(objects=len(desired), deferred=len(validation.deferred))


@click.command("env-diff")
@_common
@click.option("--exit-code", is_flag=True, help="Exit 1 when something would change.")
def env_diff(
    directory: Path, environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None, exit_code: bool
) -> None:
    """What apply and prune would change: one line per object, then the changed objects' YAML diffs."""
    cluster = _cluster(environment, namespace, cluster_wide, kubeconfig)
    changes = cluster.diff(cluster.load(directory))
    counts = Counter(c.action for c in changes)
    texts: list[str] = []
    for change in changes:
        if change.action == "update" and change.live is not None and change.desired is not None:
            before, after = comparable(change.live), comparable(change.desired)
            _say(f"{change.ref} update: {', '.join(changed_paths(before, after)[:8])}")
            texts.append(_unified(str(change.ref), before, after))
        elif change.action != "unchanged":
            _say(f"{change.ref} {change.action}")
    for text in texts:
        _say(text.rstrip("\n"))
    changed = any(counts[a] for a in ("create", "update", "prune"))
    _say(
        f"{counts['create']} to create, {counts['update']} to update, {counts['prune']} to prune, {counts['unchanged']} unchanged"
    )
    _results(
        create=counts["create"],
        update=counts["update"],
        prune=counts["prune"],
        unchanged=counts["unchanged"],
        changed=str(changed).lower(),
    )
    if exit_code and changed:
        sys.exit(1)


def _unified(name: str, before: Any, after: Any) -> str:
    def dump(obj: Any) -> list[str]:
        out = io.StringIO()
        YAML(typ="safe", pure=True).dump(obj, out)
        return out.getvalue().splitlines(keepends=True)

    return "".join(difflib.unified_diff(dump(before), dump(after), f"live/{name}", f"desired/{name}"))


@click.command("env-apply")
@_common
def env_apply(directory: Path, environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None) -> None:
    """Validate every object, then server-side apply them all (field manager `shipline`).

    Nothing is applied when any object is rejected.  Each object gets the labels
    app.kubernetes.io/managed-by=shipline and shipline.dev/environment=NAME.
    """
    cluster = _cluster(environment, namespace, cluster_wide, kubeconfig)
    desired = cluster.load(directory)
    applied = cluster.apply(desired, report=lambda a: _say(str(a)))
    counts = Counter(a.outcome.value for a in applied)
    _say(
        f"{len(applied)} objects applied: {counts['created']} created, {counts['configured']} configured, "
        f"{counts['unchanged']} unchanged"
    )
    _results(applied=len(applied), created=counts["created"], configured=counts["configured"], unchanged=counts["unchanged"])


@click.command("env-prune")
@_common
@click.option("--dry-run", is_flag=True, help="Only say what would be pruned.")
def env_prune(
    directory: Path, environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None, dry_run: bool
) -> None:
    """Delete what shipline applied for this environment before and the manifests no longer hold.

    Only objects with this environment's labels and shipline's field manager are
    candidates; Namespaces and CustomResourceDefinitions are reported and kept.
    """
    cluster = _cluster(environment, namespace, cluster_wide, kubeconfig)
    desired = cluster.load(directory)

    def report(a: Applied) -> None:
        _say(f"{a.ref} {'would be pruned' if dry_run and a.outcome.value == 'pruned' else a.outcome.value}")

    pruned = cluster.prune(desired, report=report, dry_run=dry_run)
    count = sum(1 for p in pruned if p.outcome.value == "pruned")
    kept = len(pruned) - count
    _say(f"{count} objects {'to prune' if dry_run else 'pruned'}" + (f", {kept} kept" if kept else ""))
    _results(pruned=count, kept=kept)


@click.command("env-verify")
@_common
@click.option("--timeout", default="5m", show_default=True, help="How long rollouts may take (90s, 5m, 1h).")
def env_verify(
    directory: Path, environment: str, namespace: str | None, cluster_wide: bool, kubeconfig: Path | None, timeout: str
) -> None:
    """Wait until every Deployment, StatefulSet and DaemonSet rolled out the desired pod template.

    Exit 0 when every object is Healthy; exit 1 when one is Degraded (its
    progressDeadlineSeconds passed, its images differ) or when the timeout passes.
    """
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from exc
    cluster = _cluster(environment, namespace, cluster_wide, kubeconfig)
    desired = cluster.load(directory)

    def report(r: ResourceHealth) -> None:
        _say(str(r))

    verification = cluster.verify(desired, seconds, report=report)
    counts = Counter(r.assessment.health.value for r in verification.resources)
    _results(
        health=verification.health.value, **{k.lower(): counts[k] for k in ("Healthy", "Progressing", "Degraded", "Missing")}
    )
    if verification.ok:
        _say(f"verified: {len(verification.resources)} objects Healthy in {verification.seconds:.1f}s")
        return
    failures = verification.failures()
    why = "timed out" if verification.timed_out else "failed"
    click.echo(
        f"error: verify of environment {environment} {why} after {verification.seconds:.1f}s: "
        f"{len(failures)} of {len(verification.resources)} objects not Healthy:",
        err=True,
    )
    for failure in failures:
        click.echo(f"  {failure}", err=True)
    sys.exit(1)
