"""`shipline step image|chart|publish|notify`: the release half of the service pipeline.

Each command backs one catalog task (`src/shipline/catalog/NAME.yaml`): it takes
the task's inputs as flags, prints what it does (the step's log), writes its
results as `name=value` lines to $SHIPLINE_OUTPUT, and exits non-zero with a
message that names the cause and what to check.  Paths it is given are relative
to the step's directory and may not leave the run's workspace.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipline.cli.steps import write_results
from shipline.domain import cdevents
from shipline.domain.artifacts import (
    Registry,
    check_digest,
    check_name,
    check_tag,
    oci_labels,
    oci_purl,
    parse_registry,
    split_image,
)
from shipline.exceptions import ToolError, UsageError
from shipline.integrations import images
from shipline.integrations.registries import load_auth_file, probe, push_artifact

if TYPE_CHECKING:  # each imported by the one command that needs it: every `shipline step X` is a process of its own
    from shipline.integrations.cdevents import Delivery


def _echo(line: str) -> None:
    click.echo(line)


def _registry(value: str) -> Registry:
    return parse_registry(value or os.environ.get("SHIPLINE_REGISTRY", ""))


def _workspace() -> Path:
    return Path(os.environ.get("SHIPLINE_WORKSPACE") or Path.cwd()).resolve()


def _inside(path: str, what: str) -> Path:
    """`path` (relative to the step's directory) resolved, if it stays in the run's workspace."""
    if not path:
        raise UsageError(f"{what}: a path is required")
    resolved = (Path.cwd() / path).resolve()
    if Path(path).is_absolute() or not resolved.is_relative_to(_workspace()):
        raise UsageError(f"{what} '{path}' must be a relative path inside the run's workspace")
    return resolved


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    """A private directory under the step's HOME (the run's own in a pipeline), removed afterwards."""
    parent = Path(os.environ.get("HOME") or tempfile.gettempdir()) / ".shipline-scratch"
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as path:
        yield Path(path)


_common = [
    click.option("--registry", default="", help="HOST:PORT[/PREFIX]; default $SHIPLINE_REGISTRY."),
    click.option("--auth-file", default="", help='Registry credentials ({"auths": ...}); e.g. a secret file.'),
]


def _with_common(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_common):
        func = option(func)
    return func


# --- image -------------------------------------------------------------------------


@click.command("image")
@click.option("--version", "version", required=True, help="The image tag (the release's version).")
@click.option("--name", required=True, help="Repository name under the registry (default in the task: the pipeline's name).")
@click.option("--context", "context_dir", default=".", show_default=True, help="Build context directory.")
@click.option("--dockerfile", default="Dockerfile", show_default=True, help="Relative to the context.")
@click.option("--source", default="", help="Repository URL for org.opencontainers.image.source.")
@click.option("--revision", default="", help="Commit for org.opencontainers.image.revision.")
@_with_common
def image(
    version: str, name: str, context_dir: str, dockerfile: str, source: str, revision: str, registry: str, auth_file: str
) -> None:
    """Build the Dockerfile with buildah, label it, push it as REGISTRY/NAME:VERSION."""
    target = _registry(registry)
    reference = target.reference(check_name(name), check_tag(version))
    context = _inside(context_dir, "context")
    if not context.is_dir():
        raise UsageError(f"context '{context_dir}' is not a directory in the workspace")
    dockerfile_path = _inside(str(Path(context_dir) / dockerfile), "dockerfile")
    if not dockerfile_path.is_file():
        raise UsageError(f"no Dockerfile at {Path(context_dir) / dockerfile}: set the task's `dockerfile` input")
    auth = load_auth_file(auth_file)
    labels = oci_labels(version=version, source=source, revision=revision)
    _echo(f"checking registry {target.host} ({target.scheme})")
    probe(target, auth)
    home = Path(os.environ.get("HOME") or tempfile.gettempdir())
    with images.buildah_storage(home / ".shipline-scratch") as storage, _scratch("image-") as scratch:
        shown = str(dockerfile_path.relative_to(_workspace()))
        _echo(f"building {reference} from {shown}")
        images.build(
            storage=storage,
            context=context,
            dockerfile=dockerfile_path,
            reference=reference,
            labels=labels,
            auth=auth,
            echo=_echo,
            shown_as=shown,
            registry_hosts=[target.host],
        )
        _echo(f"pushing {reference}")
        digest = images.push(storage=storage, reference=reference, registry=target, auth=auth, echo=_echo, workdir=scratch)
    _echo(f"pushed {reference}@{digest}")
    write_results({"image": reference, "image-digest": digest}, show=True)


# --- chart -------------------------------------------------------------------------


@click.command("chart")
@click.option("--version", "version", required=True, help="Chart version (and appVersion unless --app-version).")
@click.option("--chart", "chart_dir", default="chart", show_default=True, help="The chart's directory.")
@click.option("--app-version", default="", help="Chart appVersion; default the version.")
@click.option("--image", "image_ref", default="", help="Image reference (REPO:TAG or REPO@DIGEST) to set in values.")
@click.option("--image-tag", default="", help="Tag to set in values; default the image reference's tag, else the version.")
@click.option("--repository-key", default="image.repository", show_default=True, help="values.yaml key for the repository.")
@click.option("--tag-key", default="image.tag", show_default=True, help="values.yaml key for the tag.")
@_with_common
def chart(
    version: str,
    chart_dir: str,
    app_version: str,
    image_ref: str,
    image_tag: str,
    repository_key: str,
    tag_key: str,
    registry: str,
    auth_file: str,
) -> None:
    """Lint the chart, stamp version/appVersion/image into a copy, package it, push it to oci://REGISTRY/charts."""
    from shipline.integrations import charts

    target = _registry(registry)
    check_tag(version)
    source = _inside(chart_dir, "chart")
    if not (source / "Chart.yaml").is_file():
        raise UsageError(f"no Chart.yaml in '{chart_dir}': set the task's `chart` input to the chart's directory")
    repository, tag = split_image(image_ref) if image_ref else ("", "")
    stamp = charts.Stamp(
        version=version,
        app_version=app_version or version,
        image_repository=repository,
        image_tag=image_tag or (tag if tag and not tag.startswith("@") else version),
        repository_key=repository_key,
        tag_key=tag_key,
    )
    auth = load_auth_file(auth_file)
    with _scratch("chart-") as scratch:
        copy = charts.stamped_copy(source, scratch, stamp)
        _echo(
            f"chart {chart_dir}: version {stamp.version}, appVersion {stamp.app_version}"
            + (f", {stamp.repository_key}={repository}, {stamp.tag_key}={stamp.image_tag}" if repository else "")
        )
        charts.lint(copy, shown_as=Path(chart_dir), echo=_echo)
        name, package = charts.package(copy, destination=scratch, stamp=stamp, echo=_echo)
        check_name(name)
        _echo(f"checking registry {target.host} ({target.scheme})")
        probe(target, auth)
        digest = charts.push(package, registry=target, auth=auth, echo=_echo)
    url = f"{target.charts()}/{name}"
    _echo(f"pushed {url}:{version}@{digest}")
    write_results({"chart": url, "chart-version": version, "chart-digest": digest}, show=True)


# --- publish -----------------------------------------------------------------------


@click.command("publish")
@click.option("--version", "version", required=True, help="The artifact's tag.")
@click.option("--name", required=True, help="Pushed as REGISTRY/NAME-artifacts:VERSION.")
@click.option(
    "--files", "patterns", default="dist/*", show_default=True, help="Globs (space-separated), relative to the step's directory."
)
@click.option("--if-empty", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="When no file matches.")
@click.option("--source", default="", help="Repository URL for the manifest's org.opencontainers.image.source.")
@click.option("--revision", default="", help="Commit for org.opencontainers.image.revision.")
@_with_common
def publish(
    version: str, name: str, patterns: str, if_empty: str, source: str, revision: str, registry: str, auth_file: str
) -> None:
    """Push build outputs (files matching globs) as one OCI artifact with oras."""
    target = _registry(registry)
    repository = target.repository(check_name(f"{name}-artifacts"))
    check_tag(version)
    files: list[Path] = []
    for pattern in patterns.split():
        _inside(pattern.split("*", 1)[0] or ".", "files")
        for match in sorted(glob.glob(pattern, recursive=True)):
            path = _inside(match, "files")
            if path.is_file() and path not in files:
                files.append(path)
    if not files:
        message = f"nothing to publish: no file matches {patterns!r}"
        if if_empty == "fail":
            raise UsageError(f"{message} (if-empty: fail); check the build's output directory and the `files` globs")
        _echo(f"{message}; skipped (set `if-empty: fail` to make this an error)")
        write_results({"artifact": "", "artifact-digest": "", "files": ""}, show=True)
        return
    names = [f.name for f in files]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise UsageError(f"files with the same name would overwrite each other in the artifact: {', '.join(clashes)}")
    auth = load_auth_file(auth_file)
    _echo(f"checking registry {target.host} ({target.scheme})")
    found = probe(target, auth)
    _echo(f"pushing {len(files)} file(s) to {repository}:{version}: {', '.join(names)}")
    digest = push_artifact(
        target,
        repository,
        version,
        files,
        annotations=oci_labels(version=version, source=source, revision=revision),
        auth=auth,
        challenge=found.challenge,
    )
    _echo(f"pushed {repository}:{version}@{digest}")
    write_results({"artifact": f"{repository}:{version}", "artifact-digest": digest, "files": ",".join(names)}, show=True)


# --- notify ------------------------------------------------------------------------


def _artifact_events(
    kind: str, repository: str, digest: str, *, source: str, commit: str, change_source: str, chain: str, now: datetime
) -> list[cdevents.CDEvent]:
    if not repository and not digest:
        return []
    if not repository or not digest:
        raise UsageError(f"{kind}: give both the reference and its digest, or neither")
    purl = oci_purl(repository, check_digest(digest))
    events = []
    if commit:
        events.append(
            cdevents.artifact_packaged(
                id=str(uuid.uuid4()),
                source=source,
                timestamp=now,
                purl=purl,
                change_id=commit,
                change_source=change_source,
                chain_id=chain,
            )
        )
    events.append(cdevents.artifact_published(id=str(uuid.uuid4()), source=source, timestamp=now, purl=purl, chain_id=chain))
    return events


def _record(deliveries: list[Delivery], delivered: bool) -> str:
    return json.dumps(
        [
            {
                "type": d.type,
                "subject": d.subject,
                "url": d.url,
                "status": d.status,
                "attempts": d.attempts,
                "id": d.event_id,
                **({"error": d.error} if d.error else {}),
            }
            for d in deliveries
            if d.delivered == delivered
        ],
        separators=(",", ":"),
    )


@click.command("notify")
@click.option("--subscribers", default="", help="Subscriber URLs, separated by spaces or commas.")
@click.option("--pipeline", required=True, help="The pipeline's name.")
@click.option("--run-id", required=True, help="The run's id.")
@click.option(
    "--outcome", default="", help="The run's status (succeeded|failed|cancelled) for pipelinerun.finished; empty: not sent."
)
@click.option("--errors", default="", help="Why the run failed, for pipelinerun.finished.")
@click.option("--run-url", default="", help="Where the run can be seen (the dashboard's URL), for pipelinerun.finished.")
@click.option("--event-source", default="", help="CDEvents context source; default /shipline/pipelines/PIPELINE.")
@click.option("--commit", default="", help="The commit the artifacts were built from (artifact.packaged's change).")
@click.option("--source", default="", help="The repository URL (artifact.packaged's change source).")
@click.option("--image", "image_ref", default="", help="Image reference REPO:TAG.")
@click.option("--image-digest", default="")
@click.option("--chart", "chart_url", default="", help="Chart as oci://REGISTRY/charts/NAME.")
@click.option("--chart-digest", default="")
@click.option("--artifact", default="", help="The publish task's artifact REPO:TAG.")
@click.option("--artifact-digest", default="")
@click.option("--attempts", type=click.IntRange(1, 20), default=5, show_default=True, help="Tries per event and subscriber.")
@click.option(
    "--backoff", type=click.FloatRange(0, 300), default=1.0, show_default=True, help="Seconds before the 2nd try; doubled after."
)
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True, help="Seconds per request.")
@click.option(
    "--on-failure",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="An event not delivered after its tries fails the step, or only warns.",
)
def notify(
    subscribers: str,
    pipeline: str,
    run_id: str,
    outcome: str,
    errors: str,
    run_url: str,
    event_source: str,
    commit: str,
    source: str,
    image_ref: str,
    image_digest: str,
    chart_url: str,
    chart_digest: str,
    artifact: str,
    artifact_digest: str,
    attempts: int,
    backoff: float,
    timeout: float,
    on_failure: str,
) -> None:
    """Send CDEvents (artifact packaged/published, pipelinerun finished) to each subscriber, with retries."""
    urls = cdevents.parse_subscribers(subscribers)
    event_source = event_source or f"/shipline/pipelines/{pipeline}"
    now = datetime.now(UTC)
    chain = str(uuid.uuid4())
    artifacts = (
        ("image", split_image(image_ref)[0] if image_ref else "", image_digest),
        ("chart", chart_url.removeprefix("oci://"), chart_digest),
        ("artifact", split_image(artifact)[0] if artifact else "", artifact_digest),
    )
    events: list[cdevents.CDEvent] = []
    for kind, repository, digest in artifacts:
        events += _artifact_events(
            kind, repository, digest, source=event_source, commit=commit, change_source=source, chain=chain, now=now
        )
    if outcome:
        events.append(
            cdevents.pipelinerun_finished(
                id=str(uuid.uuid4()),
                source=event_source,
                timestamp=now,
                run=run_id,
                pipeline=pipeline,
                outcome=cdevents.run_outcome(outcome),
                url=run_url,
                errors=errors,
                chain_id=chain,
            )
        )
    if not urls:
        _echo(f"no subscribers: {len(events)} event(s) not sent (set the task's `subscribers` input)")
        write_results({"delivered": "[]", "undelivered": "[]"}, show=True)
        return
    _echo(f"sending {len(events)} event(s) to {len(urls)} subscriber(s), binary CloudEvents over HTTP")
    from shipline.integrations.cdevents import Retry, deliver

    deliveries = deliver(
        events,
        urls,
        retry=Retry(attempts=attempts, backoff=backoff, timeout=timeout),
        echo=_echo,
    )
    write_results({"delivered": _record(deliveries, True), "undelivered": _record(deliveries, False)}, show=True)
    missed = [d for d in deliveries if not d.delivered]
    if missed and on_failure == "fail":
        where = "; ".join(sorted({f"{d.url}: {d.error}" for d in missed}))
        raise ToolError(
            f"{len(missed)} of {len(deliveries)} event(s) not delivered after up to {attempts} tries: {where}. "
            "Check that the subscribers run and accept POSTed CloudEvents (or set `on-failure: warn`)"
        )
    if missed:
        _echo(f"warning: {len(missed)} of {len(deliveries)} event(s) not delivered (on-failure: warn)")
