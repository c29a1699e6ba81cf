"""The service pipeline's own catalog tasks (git-clone, version, build-test, tag) against real git repositories.

A bare repository on disk is the remote: the same git transport code as a forge's,
without a server, so these run in seconds and need no testbed.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import RunFn

from shipline.domain.runs import RunRecord, RunStatus, TaskStatus
from shipline.settings import Settings

PIPELINE = """
name: svc
params:
  url: {}
  revision: {default: main}
  branch: {default: ""}
  pr: {default: ""}
tasks:
  - name: clone
    uses: shipline/git-clone
    with:
      url: ${{ params.url }}
      revision: ${{ params.revision }}
      branch: ${{ params.branch }}
      pr: ${{ params.pr }}
      depth: "0"
      tags: "true"
  - name: version
    uses: shipline/version
    with: {branch: "${{ tasks.clone.results.branch }}", pr: "${{ params.pr }}"}
  - name: tag
    when: ${{ tasks.version.results.tag != '' }}
    uses: shipline/tag
    with: {tag: "${{ tasks.version.results.tag }}", commit: "${{ tasks.version.results.commit }}"}
"""


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


class Remote:
    """A bare repository and a work tree that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        git("clone", "--quiet", str(self.bare), str(self.work), cwd=root)
        git("checkout", "--quiet", "-B", "main", cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, message: str, push: str | None = "main") -> str:
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        if push:
            git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{push}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def remote_tags(self) -> dict[str, str]:
        out = git("ls-remote", "--tags", str(self.bare), cwd=self.work)
        tags: dict[str, str] = {}
        # Sorted so that an annotated tag's peeled line (`^{}`: its commit) comes last and wins.
        for sha, ref in sorted((line.split("\t") for line in out.splitlines()), key=lambda p: p[1]):
            tags[ref.removeprefix("refs/tags/").removesuffix("^{}")] = sha
        return tags


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def svc(run_pipeline: RunFn, remote: Remote) -> SvcFn:
    def _run(**params: str) -> RunRecord:
        return run_pipeline(PIPELINE, {"url": remote.url, **params})

    return _run


SvcFn = type(lambda **p: None)


def results(record: RunRecord, task: str) -> dict[str, str]:
    return dict(record.task(task).results)


def test_main_without_tags_releases_0_1_0_and_pushes_the_tag(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial import")
    head = remote.commit("feat: hello")
    record = svc()
    assert record.status == RunStatus.SUCCEEDED, record
    assert results(record, "version") == {"version": "0.1.0", "commit": head, "branch": "main", "tag": "v0.1.0"}
    assert remote.remote_tags() == {"v0.1.0": head}

    # A rerun of the same commit: the same release, the tag is left as it is.
    again = svc()
    assert again.status == RunStatus.SUCCEEDED
    assert results(again, "version")["version"] == "0.1.0"
    assert remote.remote_tags() == {"v0.1.0": head}


def test_feat_fix_and_breaking_change_bump_from_the_last_tag(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial")
    assert svc().status == RunStatus.SUCCEEDED
    remote.commit("fix: a bug")
    assert results(svc(), "version")["version"] == "0.1.1"
    remote.commit("docs: words")
    remote.commit("feat: a feature")
    assert results(svc(), "version")["version"] == "0.2.0"
    remote.commit("refactor!: new API")
    assert results(svc(), "version")["tag"] == "v1.0.0"
    assert set(remote.remote_tags()) == {"v0.1.0", "v0.1.1", "v0.2.0", "v1.0.0"}


def test_a_feature_branch_gets_a_prerelease_and_no_tag(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial")
    assert svc().status == RunStatus.SUCCEEDED
    remote.commit("feat: login", push="feature/Login_Form")
    head = remote.commit("fix: login", push="feature/Login_Form")
    record = svc(revision="feature/Login_Form")
    assert record.status == RunStatus.SUCCEEDED
    assert results(record, "version") == {
        "version": "0.2.0-feature-login-form.2",
        "commit": head,
        "branch": "feature/Login_Form",
        "tag": "",
    }
    assert record.task("tag").status == TaskStatus.SKIPPED
    assert set(remote.remote_tags()) == {"v0.1.0"}


def test_a_commit_hash_with_its_branch_as_a_push_event_gives_it(svc: SvcFn, remote: Remote) -> None:
    first = remote.commit("initial")
    remote.commit("fix: later")
    # An older commit of main, as a webhook for that push would name it.
    record = svc(revision=first, branch="main")
    assert record.status == RunStatus.SUCCEEDED, record
    assert results(record, "clone")["commit"] == first
    assert results(record, "version")["tag"] == "v0.1.0"
    assert remote.remote_tags() == {"v0.1.0": first}


def test_a_commit_hash_alone_finds_the_branch_whose_tip_it_is(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial")
    head = remote.commit("feat: x", push="topic")
    record = svc(revision=head[:12])
    assert record.status == RunStatus.SUCCEEDED, record
    assert results(record, "clone") == {"commit": head, "branch": "topic"}
    assert results(record, "version")["version"] == "0.1.0-topic.2"


def test_a_pull_request_ref_gives_a_pr_prerelease(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial")
    assert svc().status == RunStatus.SUCCEEDED
    # Forges keep a PR's head at refs/pull/N/head, also for PRs from forks.
    head = remote.commit("feat: from a fork", push=None)
    git("push", "--quiet", "origin", "HEAD:refs/pull/7/head", cwd=remote.work)
    record = svc(pr="7")
    assert record.status == RunStatus.SUCCEEDED, record
    assert results(record, "version") == {"version": "0.2.0-pr-7.1", "commit": head, "branch": "", "tag": ""}
    assert set(remote.remote_tags()) == {"v0.1.0"}
    by_ref = svc(revision="refs/pull/7/head")
    assert results(by_ref, "clone")["commit"] == head


def test_a_tag_on_another_commit_is_refused_before_anything_is_built(svc: SvcFn, remote: Remote) -> None:
    remote.commit("initial")
    other = remote.commit("feat: elsewhere", push="other")
    git("tag", "v0.1.0", other, cwd=remote.work)
    git("push", "--quiet", "origin", "refs/tags/v0.1.0", cwd=remote.work)
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=remote.work)
    remote.commit("fix: on main")
    record = svc()
    assert record.status == RunStatus.FAILED
    message = record.task("version").message
    assert "tag v0.1.0 already exists on commit" in message and other[:12] in message
    assert record.task("tag").status == TaskStatus.SKIPPED
    assert remote.remote_tags() == {"v0.1.0": other}


def test_the_tag_task_refuses_a_tag_that_moved_and_pushes_nothing(run_pipeline: RunFn, remote: Remote) -> None:
    first = remote.commit("initial")
    second = remote.commit("fix: x")
    git("tag", "v0.1.0", first, cwd=remote.work)
    git("push", "--quiet", "origin", "refs/tags/v0.1.0", cwd=remote.work)
    record = run_pipeline(
        f"""
        name: tagger
        tasks:
          - name: clone
            uses: shipline/git-clone
            with: {{url: "{remote.url}"}}
          - name: tag
            uses: shipline/tag
            with: {{tag: v0.1.0, commit: "{second}"}}
        """
    )
    assert record.status == RunStatus.FAILED
    assert "tag v0.1.0 already exists on origin at commit" in record.task("tag").message
    assert "nothing was pushed" in record.task("tag").message
    assert remote.remote_tags() == {"v0.1.0": first}


@pytest.mark.parametrize(
    "revision",
    ["feature/$(touch pwned)", "a..b", "--upload-pack=touch pwned", "-b", "main;touch pwned", "x/../../y"],
)
def test_hostile_revisions_fail_at_clone_and_run_nothing(svc: SvcFn, remote: Remote, settings: Settings, revision: str) -> None:
    remote.commit("initial")
    record = svc(revision=revision)
    assert record.status == RunStatus.FAILED
    assert record.task("clone").status == TaskStatus.FAILED
    assert "not a valid branch, tag, commit or ref name" in record.task("clone").message
    assert record.task("version").status == TaskStatus.SKIPPED
    assert not list(settings.home.rglob("pwned"))
    assert remote.remote_tags() == {}


def test_a_branch_named_like_a_command_is_only_data(svc: SvcFn, remote: Remote, settings: Settings) -> None:
    # Git allows these characters in a branch name; they must reach no shell.
    branch = "feature/$(touch${IFS}pwned)`touch${IFS}pwned2`"
    remote.commit("initial")
    remote.commit("feat: x", push=branch)
    record = svc(revision=branch)
    assert record.status == RunStatus.SUCCEEDED, record
    assert results(record, "version")["version"] == "0.1.0-feature-touch-ifs-pwned-touch-ifs-pwned2.2"
    assert results(record, "clone")["branch"] == branch
    assert not list(settings.home.rglob("pwned*"))


def test_an_unknown_revision_and_an_unreachable_url_say_so(run_pipeline: RunFn, remote: Remote, tmp_path: Path) -> None:
    remote.commit("initial")
    record = run_pipeline(PIPELINE, {"url": remote.url, "revision": "nope"})
    assert "revision 'nope' is neither a branch, a tag nor a commit hash" in record.task("clone").message
    record = run_pipeline(PIPELINE, {"url": f"file://{tmp_path}/missing.git"})
    assert "cannot read file://" in record.task("clone").message


def test_version_refuses_a_shallow_clone(run_pipeline: RunFn, remote: Remote) -> None:
    remote.commit("initial")
    remote.commit("fix: x")
    record = run_pipeline(
        f"""
        name: shallow
        tasks:
          - name: clone
            uses: shipline/git-clone
            with: {{url: "{remote.url}"}}
          - name: version
            uses: shipline/version
        """
    )
    assert record.status == RunStatus.FAILED
    assert "is shallow" in record.task("version").message and "depth: 0" in record.task("version").message


BUILD_TEST = """
name: bt
params:
  build: {default: ""}
  test: {default: ""}
tasks:
  - name: code
    steps:
      - run: mkdir -p src && git init --quiet src
  - name: build-test
    uses: shipline/build-test
    with: {build: "${{ params.build }}", test: "${{ params.test }}"}
"""

JUNIT = textwrap.dedent(
    """\
    <?xml version="1.0" encoding="utf-8"?>
    <testsuites>
      <testsuite name="unit" tests="4">
        <testcase classname="app.test_math" name="test_add"/>
        <testcase classname="app.test_math" name="test_sub"><failure message="1 != 2">boom</failure></testcase>
        <testcase classname="app.test_io" name="test_read"><error message="oops"/></testcase>
        <testcase classname="app.test_io" name="test_net"><skipped/></testcase>
      </testsuite>
    </testsuites>
    """
)


def test_build_test_reports_counts_and_failing_names(run_pipeline: RunFn, tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(JUNIT)
    record = run_pipeline(
        BUILD_TEST,
        {"build": "echo built > out.txt", "test": f"mkdir -p reports && cp '{report}' reports/unit-junit.xml; exit 1"},
    )
    assert record.status == RunStatus.FAILED
    task = record.task("build-test")
    assert task.results == {
        "tests-passed": "1",
        "tests-failed": "2",
        "tests-skipped": "1",
        "failed-tests": "app.test_math.test_sub, app.test_io.test_read",
    }
    assert task.message.endswith("2 of 4 tests failed: app.test_math.test_sub, app.test_io.test_read")


def test_build_test_passes_with_green_reports(run_pipeline: RunFn) -> None:
    passing = '<testsuite name="s"><testcase classname="c" name="a"/><testcase classname="c" name="b"/></testsuite>'
    record = run_pipeline(BUILD_TEST, {"build": "true", "test": f"echo '{passing}' > TEST-s.xml"})
    assert record.status == RunStatus.SUCCEEDED, record
    assert record.task("build-test").results["tests-passed"] == "2"
    assert record.task("build-test").results["tests-failed"] == "0"


def test_a_failing_build_stops_before_the_tests(run_pipeline: RunFn) -> None:
    record = run_pipeline(BUILD_TEST, {"build": "echo compiling; false", "test": "touch tested"})
    assert record.status == RunStatus.FAILED
    assert record.task("build-test").message == "step 'build' exited with code 1: the build command failed: echo compiling; false"


def test_a_failing_test_command_without_reports_still_fails(run_pipeline: RunFn) -> None:
    record = run_pipeline(BUILD_TEST, {"test": "exit 3"})
    assert record.status == RunStatus.FAILED
    assert "the test command exited with code 3" in record.task("build-test").message


def test_git_credentials_are_offered_empty_without_a_forge_token(run_pipeline: RunFn, remote: Remote) -> None:
    # The service archetype hands ${{ secret_files.git-credentials }} to git unconditionally:
    # without a token it must still clone a local or public repository.
    remote.commit("initial")
    record = run_pipeline(
        f"""
        name: creds
        tasks:
          - name: clone
            uses: shipline/git-clone
            with: {{url: "{remote.url}", credentials: "${{{{ secret_files.git-credentials }}}}"}}
          - name: look
            env: {{CREDS: "${{{{ secret_files.git-credentials }}}}"}}
            steps:
              - run: test -f "$CREDS" && test ! -s "$CREDS"
        """
    )
    assert record.status == RunStatus.SUCCEEDED, [(t.name, t.message) for t in record.tasks]
