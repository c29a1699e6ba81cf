"""pytest plugin: the testbed, up once per session, and fresh things for each test.

Load it with `pytest_plugins = ["shipline.testbed.fixtures"]`.

    testbed            session: starts what is built and not yet running, and at the
                       end stops only what it started, unless another test session
                       still uses the testbed (`make test` beside a `pytest -k`)
    registry           "127.0.0.1:PORT" of the OCI registry (plain HTTP)
    gitea              a small client of Gitea's API, with the admin token
    gitea_repo         a fresh, empty repository in a fresh organisation
    kubeconfig         the admin kubeconfig's path
    namespace          a fresh namespace (deleted afterwards)
    kubectl, helm      paths of the testbed's programs
    real_node          the real node's name, once it is Ready (its pods must tolerate
                       the taint `shipline.dev/real-node=true:NoSchedule`; other pods
                       land on kwok's nodes)

A test that needs a part which is not built fails with the command that builds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from shipline.exceptions import ShiplineError
from shipline.testbed import node, nodeconfigs, running
from shipline.testbed.building import is_built
from shipline.testbed.layout import Layout, layout_from_env
from shipline.testbed.parts import HELM, KUBERNETES
from shipline.testbed.ports import port_base_from_env


@dataclass(frozen=True)
class Testbed:
    __test__ = False  # a fixture's type, not a test class

    layout: Layout
    state: running.State
    started: tuple[str, ...]
    """Services this session started (and will stop)."""

    def require(self, part: str) -> None:
        """Fail the test, naming the build command, if part is not built."""
        if not is_built(self.layout, part):
            pytest.fail(f"the testbed's {part} part is not built: run `shipline testbed build --only {part}`", pytrace=False)

    @property
    def env(self) -> dict[str, str]:
        return running.env_values(self.layout, self.state)


class Sessions:
    """The test sessions using one testbed, each holding a shared lock on one file while it runs.

    A session stops the services it started only when it is the last one using the testbed:
    without this, a `pytest -k` started and ended beside `make test` stopped the API server under
    the other's feet (its tests failed with "connection refused")."""

    def __init__(self, layout: Layout) -> None:
        layout.home.mkdir(parents=True, exist_ok=True)
        self.path = layout.home / ".sessions"
        self._mine: IO[str] | None = None

    def join(self) -> None:
        """Count this session in (waiting while a leaving session stops its services)."""
        self._mine = open(self.path, "a")  # held until the session leaves
        fcntl.flock(self._mine, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def leaving(self) -> Iterator[bool]:
        """Count this session out: True when no other session uses the testbed; none joins until
        the block ends (what is stopped in it is not found running by a session that starts)."""
        if self._mine is not None:
            self._mine.close()
            self._mine = None
        with open(self.path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True


_SECOND_TRIES: list[str] = []
"""Why the testbed's first `up` of this session failed, when a second one came up."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for failure in _SECOND_TRIES:
        terminalreporter.write_sep("=", "testbed", yellow=True)
        terminalreporter.write_line(f"the testbed came up on a second try; the first failed: {failure}")


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    layout = layout_from_env(os.environ, Path.home())
    sessions = Sessions(layout)
    sessions.join()
    before = {s.name for s in running.status(layout) if s.pid is not None}
    failures: list[str] = []
    while True:
        lines: list[str] = []
        try:
            state = running.up(layout, os.environ, port_base_from_env(os.environ), report=lines.append)
            break
        except ShiplineError as exc:
            failures.append(f"{exc}\n" + "\n".join(lines))
            with sessions.leaving() as last:
                if last:  # what this session started goes: the next try starts from a clean slate
                    after = {s.name for s in running.status(layout) if s.pid is not None}
                    running.down(layout, only=after - before, report=lambda line: None)
            if len(failures) == 2:
                pytest.fail("the testbed did not come up, twice:\n" + "\n--- then:\n".join(failures), pytrace=False)
            sessions.join()
    if failures:
        # Seen twice on 2026-11-30, each soon after a `testbed down`: kube-apiserver ended within a
        # second of its start without a word in its log, etcd within seconds after three start-up
        # lines; the next up came up. Said at the end of the session, not hidden; not as a warning,
        # which `filterwarnings = error` makes the error of every test that uses the testbed.
        _SECOND_TRIES.append(failures[0])
    after = {s.name for s in running.status(layout) if s.pid is not None}
    started = tuple(sorted(after - before))
    yield Testbed(layout, state, started)
    with sessions.leaving() as last:
        if started and last:
            running.down(layout, only=started, report=lambda line: None)


@pytest.fixture(scope="session")
def registry(testbed: Testbed) -> str:
    testbed.require("debian")
    return f"127.0.0.1:{testbed.state.ports['registry']}"


@pytest.fixture(scope="session")
def kubeconfig(testbed: Testbed) -> Path:
    testbed.require("kubernetes")
    testbed.require("kwok")
    return testbed.layout.kubeconfig


@pytest.fixture(scope="session")
def kubectl(testbed: Testbed) -> Path:
    testbed.require("kubernetes")
    return testbed.layout.program(KUBERNETES, "kubectl")


@pytest.fixture(scope="session")
def helm(testbed: Testbed) -> Path:
    testbed.require("helm")
    return testbed.layout.program(HELM, "helm")


@pytest.fixture(scope="session")
def real_node(testbed: Testbed, kubeconfig: Path) -> str:
    testbed.require("kubelet")
    testbed.require("images")
    reason = node.unavailable_reason(testbed.layout)
    if reason and "containerd" not in {s.name for s in running.status(testbed.layout) if s.pid is not None}:
        pytest.fail(f"the real node cannot run here: {reason}", pytrace=False)
    error = node.error_file(testbed.layout)
    if error.exists():
        pytest.fail(f"the real node did not come up: {error.read_text().strip()}", pytrace=False)
    return nodeconfigs.NODE_NAME


@pytest.fixture
def namespace(kubeconfig: Path, kubectl: Path) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "create", "namespace", name], check=True, capture_output=True)
    yield name
    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace", name, "--wait=false"],
        check=False,
        capture_output=True,
    )


class GiteaError(Exception):
    pass


@dataclass(frozen=True)
class GiteaClient:
    """Just enough of Gitea's REST API for tests."""

    url: str
    token: str
    admin: str

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise GiteaError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from exc
        return json.loads(raw) if raw else None

    def open_pull_request(self, repo: str, head: str, base: str, title: str, wait: float = 30) -> Any:
        """POST /repos/REPO/pulls, once Gitea knows the branch just pushed: it takes a push in
        asynchronously, and until it has, the pull request is refused as "not found"."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self.request("POST", f"/repos/{repo}/pulls", {"head": head, "base": base, "title": title})
            except GiteaError as exc:
                if "HTTP 404" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_pushed(self, repo: str, wait: float = 30) -> None:
        """Return once Gitea has taken in the first push to REPO: until then it calls the
        repository empty, and its pull-request endpoints answer 404."""
        deadline = time.monotonic() + wait
        while self.request("GET", f"/repos/{repo}")["empty"]:
            if time.monotonic() > deadline:
                raise GiteaError(f"{repo} is still empty {wait:g}s after the push")
            time.sleep(0.1)

    def authed_url(self, path: str) -> str:
        """An http URL for git with the token as password."""
        host = self.url.removeprefix("http://")
        return f"http://{self.admin}:{self.token}@{host}/{path}"


@dataclass(frozen=True)
class GiteaRepo:
    owner: str
    name: str
    clone_url: str
    """With credentials: for git push and clone."""
    html_url: str


@pytest.fixture(scope="session")
def gitea(testbed: Testbed) -> GiteaClient:
    testbed.require("gitea")
    return GiteaClient(f"http://127.0.0.1:{testbed.state.ports['gitea']}", testbed.state.gitea_token, testbed.state.gitea_admin)


@pytest.fixture
def gitea_repo(gitea: GiteaClient) -> GiteaRepo:
    org = f"org-{uuid.uuid4().hex[:8]}"
    gitea.request("POST", "/orgs", {"username": org, "visibility": "public"})
    repo = gitea.request("POST", f"/orgs/{org}/repos", {"name": "service", "default_branch": "main", "auto_init": False})
    return GiteaRepo(org, "service", gitea.authed_url(f"{org}/service.git"), str(repo["html_url"]))
