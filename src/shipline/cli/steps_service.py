"""`shipline step version|test-report|tag|withdraw`: the logic of the service pipeline's own tasks.

Each reads flags, prints what it found (the lines become the step's log), writes
results to $SHIPLINE_OUTPUT and, on failure, exits non-zero with the cause as
its last line (the run shows that line as the task's message).
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from junitparser import JUnitXml, TestSuite

from shipline.cli.steps import write_results
from shipline.domain.versions import VersionError, last_release_tag, plan_version, release_version
from shipline.integrations.gitrepos import GitError, Repo

FAILED_NAMES_MAX = 4000
"""failed-tests is a result (64 KiB at most); a long list is cut with a count of the rest."""


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _repo(directory: str, credentials: str = "") -> Repo:
    path = Path(directory)
    if not (path / ".git").exists():
        _fail(f"{path} is not a git work tree: clone the service first (shipline/git-clone, dir: {directory})", 2)
    return Repo(path, credentials=credentials)


_credentials = click.option("--credentials", default="", help="A git credential-store file for the remote.")


@click.command("version")
@click.option("--dir", "directory", default="src", show_default=True, help="The cloned service repository.")
@click.option("--branch", default="", help="The branch of this run (empty for a detached commit).")
@click.option("--default-branch", default="", help="The release branch; empty: the remote's HEAD, else main.")
@click.option("--pr", default="", help="A pull-request number: a X.Y.Z-pr-N.M pre-release.")
@_credentials
def version(directory: str, branch: str, default_branch: str, pr: str, credentials: str) -> None:
    """The version of this run from the last vX.Y.Z tag and Conventional Commits since it."""
    repo = _repo(directory, credentials)
    try:
        if repo.is_shallow():
            _fail(
                f"the clone in {directory} is shallow, so the commits since the last tag are unknown: "
                "clone with depth: 0 and tags: true (shipline/git-clone)",
                2,
            )
        commit = repo.head()
        default = default_branch or repo.remote_default_branch() or "main"
        last = last_release_tag(repo.tags_merged())
        messages = repo.messages_since(last)
        plan = plan_version(last_tag=last, messages=messages, branch=branch, default_branch=default, pr=pr, commit=commit)
        if plan.tag:
            _refuse_taken_tag(repo, plan.tag, commit)
    except VersionError as exc:
        _fail(f"cannot compute a version: {exc}", 2)
    except GitError as exc:
        _fail(f"cannot compute a version: {exc}")
    since = f"{len(messages)} commit{'s' if len(messages) != 1 else ''} since {last}" if last else "no release tag yet"
    kind = (
        f"release, tag {plan.tag} at the end" if plan.tag else ("PR pre-release" if pr else f"pre-release of branch '{branch}'")
    )
    click.echo(f"version {plan.version}: {since}; {kind} (default branch: {default})")
    write_results({"version": plan.version, "commit": commit, "branch": branch, "tag": plan.tag}, show=True)


def _refuse_taken_tag(repo: Repo, tag: str, commit: str) -> None:
    for where, taken in (("here", repo.tag_commit(tag)), (repo.remote, repo.remote_tag_commit(tag))):
        if taken and taken != commit:
            _fail(
                f"tag {tag} already exists on commit {taken[:12]} ({where}), not on this run's commit {commit[:12]}: "
                f"version {tag[1:]} would be released twice. Check why {tag} is not an ancestor of this commit "
                "(a tag pushed from another branch?); move or delete it, then run again"
            )


@click.command("tag")
@click.option("--dir", "directory", default="src", show_default=True, help="The cloned service repository.")
@click.option("--tag", "tag", required=True, help="vX.Y.Z, from the version task.")
@click.option("--commit", required=True, help="The commit to tag (the one that was built).")
@_credentials
def tag(directory: str, tag: str, commit: str, credentials: str) -> None:
    """Push tag vX.Y.Z at commit: idempotent when it is already there, refused when it is on another commit."""
    if release_version(tag) is None:
        _fail(f"'{tag}' is not a release tag (vX.Y.Z)", 2)
    repo = _repo(directory, credentials)
    try:
        taken = repo.remote_tag_commit(tag)
        if taken == commit:
            click.echo(f"tag {tag} is already on {commit[:12]}: nothing to push")
        elif taken:
            _fail(
                f"tag {tag} already exists on {repo.remote} at commit {taken[:12]}, not at {commit[:12]}: "
                "nothing was pushed; a release of this version exists already (check the tags of the repository)"
            )
        else:
            repo.push_tag(tag, commit, f"Release {tag[1:]}")
            click.echo(f"pushed tag {tag} at {commit[:12]}")
    except GitError as exc:
        _fail(f"cannot push tag {tag}: {exc} (check that the run's git credentials may push tags)")
    write_results({"tag": tag}, show=True)


@dataclass
class _Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    names: list[str] = field(default_factory=list)


def _suites(xml: JUnitXml | TestSuite) -> Iterable[TestSuite]:
    from junitparser import TestSuite

    if isinstance(xml, TestSuite):
        yield xml
    else:
        yield from xml


def _read_reports(paths: list[Path], root: Path) -> _Counts:
    # Imported here: junitparser loads importlib.metadata (80 ms), which version and tag do not need.
    from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped

    counts = _Counts()
    for path in paths:
        try:
            xml = JUnitXml.fromfile(str(path))
        except (JUnitXmlError, OSError, SyntaxError) as exc:
            _fail(f"{path.relative_to(root)} is not a JUnit XML report: {exc}")
        for suite in _suites(xml):
            for case in suite:
                outcome = case.result
                if any(isinstance(r, (Failure, Error)) for r in outcome):
                    counts.failed += 1
                    name = f"{case.classname}.{case.name}" if case.classname else str(case.name)
                    counts.names.append(" ".join(name.splitlines()))  # the list of names stays one line
                elif any(isinstance(r, Skipped) for r in outcome):
                    counts.skipped += 1
                else:
                    counts.passed += 1
    return counts


def find_reports(root: Path, patterns: str) -> list[Path]:
    """Files under root matching any comma-separated glob (`**` spans folders); never outside root,
    never in a hidden folder (.git, .venv...: `**` does not enter them, and no pattern may name .git).

    The `glob` module's walk, not pathlib's: in 3.11 pathlib's `**` walked all of .git as well and
    took 1.0 ms for the scaffold's two patterns where this takes 0.15 ms."""
    found: set[Path] = set()
    top = root.resolve()
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern or pattern.startswith("/") or ".." in Path(pattern).parts:
            continue
        for name in glob.glob(pattern, root_dir=root, recursive=True):
            path = root / name
            if ".git" not in Path(name).parts and path.is_file() and path.resolve().is_relative_to(top):
                found.add(path)
    return sorted(found)


@click.command("test-report")
@click.option("--reports", default="**/*junit*.xml,**/TEST-*.xml", show_default=True, help="Comma-separated globs.")
@click.option("--exit-code", "exit_code", type=int, default=0, help="The test command's exit code.")
def test_report(reports: str, exit_code: int) -> None:
    """Count passed, failed and skipped tests in the JUnit XML reports under the current directory."""
    root = Path(".")
    paths = find_reports(root, reports)
    counts = _read_reports(paths, root)
    names = counts.names
    shown = ", ".join(names)
    if len(shown) > FAILED_NAMES_MAX:
        shown = shown[:FAILED_NAMES_MAX].rsplit(", ", 1)[0] + f", ... ({len(names)} in all)"
    write_results(
        {
            "tests-passed": str(counts.passed),
            "tests-failed": str(counts.failed),
            "tests-skipped": str(counts.skipped),
            "failed-tests": shown,
        },
        show=True,
    )
    total = counts.passed + counts.failed + counts.skipped
    if not paths:
        click.echo(f"no JUnit XML report matched {reports}: counts are unknown (make the tests write one)")
    else:
        click.echo(f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped ({len(paths)} report(s))")
    if counts.failed:
        _fail(f"{counts.failed} of {total} tests failed: {shown}")
    if exit_code != 0:
        _fail(f"the test command exited with code {exit_code} (no failing test in the reports: see the log above)")


def _split_pushed(reference: str) -> tuple[str, str, str]:
    """`HOST/PATH:TAG` or `oci://HOST/PATH:TAG` -> (HOST, PATH, TAG)."""
    from shipline.domain.artifacts import split_image

    repository, tag = split_image(reference.removeprefix("oci://"))
    host, _, path = repository.partition("/")
    return host, path, tag


@click.command("withdraw")
@click.option("--dir", "directory", default="src", show_default=True, help="The cloned service repository.")
@click.option("--tag", "release_tag", default="", help="The release tag of this run (empty for a pre-release).")
@click.option(
    "--pushed", multiple=True, help="REF@DIGEST this run pushed (image, oci:// chart, artifact); empty ones are skipped."
)
@click.option("--auth-file", default="", help='Registry credentials ({"auths": ...}).')
@_credentials
def withdraw(directory: str, release_tag: str, pushed: tuple[str, ...], auth_file: str, credentials: str) -> None:
    """After a failed run: delete the image, chart and artifact it pushed, unless its release tag exists.

    Only a tag that still points at the digest this run pushed is deleted.
    """
    # Here, not at the top: the other step commands of this module need no HTTP client.
    from shipline.domain.artifacts import parse_registry
    from shipline.integrations.registries import load_auth_file
    from shipline.integrations.withdrawals import withdraw as withdraw_tag

    if release_tag and Path(directory, ".git").exists():
        try:
            if Repo(Path(directory), credentials=credentials).remote_tag_commit(release_tag):
                click.echo(f"tag {release_tag} exists: the release is out, nothing is withdrawn")
                return
        except GitError as exc:
            click.echo(f"cannot check tag {release_tag} ({exc}); withdrawing what this run pushed")
    auth = load_auth_file(auth_file) if auth_file else None
    # Each REF@DIGEST is put together from guarded results: a part is empty when its task did not succeed.
    refs = [
        (ref, digest)
        for ref, _, digest in (p.rpartition("@") for p in pushed)
        if digest.startswith("sha256:") and ref and not ref.startswith(":") and not ref.endswith(":")
    ]
    if not refs:
        click.echo("this run pushed nothing: nothing to withdraw")
        return
    for reference, digest in refs:
        host, path, tag = _split_pushed(reference)
        result = withdraw_tag(parse_registry(host), path, tag, digest, auth)
        click.echo(f"{'withdrawn' if result.done else 'kept'}: {result.reference}: {result.note}")
