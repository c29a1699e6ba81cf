"""Preview environments end to end: the testbed's real Gitea, registry and kube-apiserver (kwok nodes).

A service repository on Gitea (the scaffold's chart and Dockerfile, a build that
writes a file instead of compiling Go) is registered with `--previews` on a real
`shipline serve`.  Opening a pull request runs the service archetype's PR
variant; the server deploys the run's chart into `preview-SERVICE-pr-N` and says
so in one comment on the pull request.  What each test checks is what a person
would look at: the namespace and its Deployment (kubectl), the comment (Gitea),
`shipline previews list`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverkit import free_port

from shipline.testbed.fixtures import GiteaClient, GiteaRepo, Testbed
from shipline.testbed.parts import HELM

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(900)]

MARKER = "<!-- shipline-preview:"


def run(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


class Service:
    """A scaffolded service pushed to a Gitea repository, and its pull requests."""

    def __init__(self, root: Path, gitea: GiteaClient, repo: GiteaRepo) -> None:
        self.name = f"pv-{uuid.uuid4().hex[:6]}"
        self.gitea, self.repo = gitea, repo
        self.slug = f"/repos/{repo.owner}/{repo.name}"
        self.work = root / self.name
        self.build = f'mkdir -p bin && printf "#!/bin/sh\\n" > bin/{self.name} && chmod +x bin/{self.name}'
        run(sys.executable, "-m", "shipline", "init", "service", self.name, str(self.work))
        # No Go build: the image only has to exist (kwok nodes run no containers).
        (self.work / ".shipline" / "pipeline.yaml").write_text(
            f"name: {self.name}\nuses: shipline/service\nwith:\n  build: {self.build}\n"
        )
        self.git("init", "--quiet", "--initial-branch=main")
        self.commit("feat: the service", "main")

    def git(self, *args: str) -> str:
        return run("git", "-c", "user.name=dev", "-c", "user.email=dev@localhost", *args, cwd=self.work).strip()

    def commit(self, message: str, branch: str, build: str | None = None) -> str:
        (self.work / "CHANGES").write_text(message + "\n")
        if build is not None:
            (self.work / ".shipline" / "pipeline.yaml").write_text(
                f"name: {self.name}\nuses: shipline/service\nwith:\n  build: {build}\n"
            )
        self.git("add", "-A")
        self.git("commit", "--quiet", "-m", message)
        self.git("push", "--quiet", "--force", self.repo.clone_url, f"HEAD:refs/heads/{branch}")
        return self.git("rev-parse", "HEAD")

    def open_pull_request(self, branch: str) -> int:
        self.git("checkout", "--quiet", "-B", branch)
        self.commit("feat: a proposal", branch)
        pr = self.gitea.open_pull_request(self.slug.removeprefix("/repos/"), branch, "main", "A proposal")
        return int(pr["number"])

    def comments(self, number: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.gitea.request("GET", f"{self.slug}/issues/{number}/comments")
        return [c for c in items if MARKER in c["body"]]

    def wait_comment(self, number: int, *needles: str, timeout: float = 240) -> dict[str, Any]:
        """The pull request's one preview comment, once it says every one of `needles`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.comments(number)
            assert len(found) <= 1, f"more than one preview comment: {found}"
            if found and all(n in found[0]["body"] for n in needles):
                return found[0]
            assert time.monotonic() < deadline, f"no preview comment saying {needles}: {found}"
            time.sleep(0.5)


@pytest.fixture
def env(home: Path, gitea: GiteaClient, testbed: Testbed) -> dict[str, str]:
    port = free_port()
    out = {**os.environ, **testbed.env}
    out.pop("SHIPLINE_DATABASE_URL", None)
    helm = testbed.layout.program(HELM, "helm").parent
    out.update(
        SHIPLINE_HOME=str(home),
        SHIPLINE_PORT=str(port),
        SHIPLINE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        SHIPLINE_GITEA_URL=gitea.url,
        SHIPLINE_GITEA_TOKEN=gitea.token,
        SHIPLINE_LOG_FORMAT="text",
        SHIPLINE_STEP_ENV="PATH,LANG,LC_*,TZ,TMPDIR",
        PATH=os.pathsep.join((str(helm), str(Path(sys.executable).parent), os.environ["PATH"])),
    )
    return out


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts `shipline serve` (again, after a stop); stops it at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    url = env["SHIPLINE_PUBLIC_URL"]
    log = tmp_path / "serve.log"

    def start(kill: bool = False) -> str:
        for proc in procs:
            if proc.poll() is None:
                proc.kill() if kill else proc.terminate()
                proc.wait(30)
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "shipline", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(0.1)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def shipline(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    return run(sys.executable, "-m", "shipline", *args, env=env, stdin=stdin)


def kubectl_json(kubectl: Path, kubeconfig: Path, *args: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args, "-o", "json"], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr or "not found" in proc.stderr, proc.stderr
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def wait_gone(kubectl: Path, kubeconfig: Path, namespace: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while kubectl_json(kubectl, kubeconfig, "get", "namespace", namespace) is not None:
        assert time.monotonic() < deadline, f"namespace {namespace} still there"
        time.sleep(0.5)


def deployed_image(kubectl: Path, kubeconfig: Path, namespace: str, name: str) -> str:
    deployment = kubectl_json(kubectl, kubeconfig, "-n", namespace, "get", "deployment", name)
    assert deployment is not None, f"no Deployment {name} in {namespace}"
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def runs_of(server: str, pipeline: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = httpx.get(f"{server}/api/v1/runs", params={"pipeline": pipeline}).json()["runs"]
    return runs


def _next(version: str) -> str:
    """X.Y.Z-pr-N.M -> X.Y.Z-pr-N.(M+1): the version of the pull request's next commit."""
    head, _, count = version.rpartition(".")
    return f"{head}.{int(count) + 1}"


def register(env: dict[str, str], svc: Service, *flags: str) -> None:
    shipline(env, "repos", "add", "svc", svc.repo.html_url, "--forge", "gitea", *flags)
    shipline(env, "repos", "trigger", "add", "svc", "--on", "pull_request")


def test_a_pull_request_gets_a_preview_updated_at_each_push_and_removed_when_closed(
    env: dict[str, str],
    server: Callable[..., str],
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    kubeconfig: Path,
    kubectl: Path,
    tmp_path: Path,
) -> None:
    svc = Service(tmp_path, gitea, gitea_repo)
    shipline(env, "secrets", "set", "previews-kubeconfig", stdin=kubeconfig.read_text())
    register(env, svc, "--previews")
    url = server()
    number = svc.open_pull_request("feature/preview")
    namespace = f"preview-{svc.name}-pr-{number}"

    # Opened: the PR's build is deployed, and the comment says where and what.
    first = svc.wait_comment(number, "**Status: ready**")
    run = next(r for r in runs_of(url, svc.name) if r["status"] == "succeeded")
    run = httpx.get(f"{url}/api/v1/runs/{run['id']}").json()
    image, version = run["results"]["image"], run["results"]["version"]
    assert f"-pr-{number}." in version and image.endswith(f":{version}")
    assert f"`{version}`" in first["body"]
    ns = kubectl_json(kubectl, kubeconfig, "get", "namespace", namespace)
    assert ns is not None and ns["metadata"]["labels"]["shipline.dev/preview"] == f"{svc.name}-pr-{number}"
    assert deployed_image(kubectl, kubeconfig, namespace, svc.name) == image
    assert f"`{namespace}`" in first["body"] and f"{url}/#/runs/{run['id']}" in first["body"]
    listed = json.loads(shipline(env, "previews", "list", "--json"))
    assert [(p["namespace"], p["state"], p["repository"]) for p in listed] == [(namespace, "ready", "svc")]
    api = httpx.get(f"{url}/api/v1/previews").json()
    assert [(p["namespace"], p["state"], p["image"]) for p in api] == [(namespace, "ready", image)]

    # A push to the pull request: the new build replaces the old, in the same comment.
    svc.commit("fix: a second look", "feature/preview")
    newer = _next(version)
    second = svc.wait_comment(number, "**Status: ready**", f"`{newer}`")
    assert second["id"] == first["id"]
    assert deployed_image(kubectl, kubeconfig, namespace, svc.name) == image.replace(version, newer)

    # A push whose run fails: the last good preview stays, and the comment says so.
    svc.commit("fix: breaks the build", "feature/preview", build="exit 3")
    failed = svc.wait_comment(number, "**Status: ready**", "Latest run failed", "the preview above stays as it was")
    assert failed["id"] == first["id"] and f"`{newer}`" in failed["body"]
    assert deployed_image(kubectl, kubeconfig, namespace, svc.name) == image.replace(version, newer)

    # Closed: the namespace goes, the comment says so.
    gitea.request("PATCH", f"{svc.slug}/pulls/{number}", {"state": "closed"})
    wait_gone(kubectl, kubeconfig, namespace)
    removed = svc.wait_comment(number, "**Status: removed**", "(deleted)")
    assert removed["id"] == first["id"]
    assert json.loads(shipline(env, "previews", "list", "--json")) == []
    gone = json.loads(shipline(env, "previews", "list", "--all", "--json"))
    assert [(p["namespace"], p["state"], p["open"]) for p in gone] == [(namespace, "removed", False)]


def test_without_the_kubeconfig_the_comment_names_the_fix_and_a_restarted_server_deploys_once_it_is_set(
    env: dict[str, str],
    server: Callable[..., str],
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    kubeconfig: Path,
    kubectl: Path,
    tmp_path: Path,
) -> None:
    svc = Service(tmp_path, gitea, gitea_repo)
    register(env, svc, "--previews")
    server()
    number = svc.open_pull_request("feature/no-cluster")
    namespace = f"preview-{svc.name}-pr-{number}"
    failed = svc.wait_comment(number, "**Status: failed**")
    assert "shipline secrets set previews-kubeconfig" in failed["body"]
    assert kubectl_json(kubectl, kubeconfig, "get", "namespace", namespace) is None

    # The server is killed; the secret is set meanwhile; the work left in the records is done after the restart.
    shipline(env, "secrets", "set", "previews-kubeconfig", stdin=kubeconfig.read_text())
    server(kill=True)
    ready = svc.wait_comment(number, "**Status: ready**")
    assert ready["id"] == failed["id"]
    assert f"-pr-{number}." in deployed_image(kubectl, kubeconfig, namespace, svc.name)
    gitea.request("PATCH", f"{svc.slug}/pulls/{number}", {"state": "closed"})
    wait_gone(kubectl, kubeconfig, namespace)


def test_a_repository_without_previews_gets_none_until_they_are_enabled(
    env: dict[str, str],
    server: Callable[..., str],
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    kubeconfig: Path,
    kubectl: Path,
    tmp_path: Path,
) -> None:
    svc = Service(tmp_path, gitea, gitea_repo)
    shipline(env, "secrets", "set", "previews-kubeconfig", stdin=kubeconfig.read_text())
    register(env, svc)
    url = server()
    number = svc.open_pull_request("feature/plain")
    namespace = f"preview-{svc.name}-pr-{number}"
    deadline = time.monotonic() + 240
    while not [r for r in runs_of(url, svc.name) if r["status"] in ("succeeded", "failed")]:
        assert time.monotonic() < deadline, runs_of(url, svc.name)
        time.sleep(0.5)
    assert [r["status"] for r in runs_of(url, svc.name)] == ["succeeded"]
    time.sleep(3)  # what the server would do, it does within a poll tick of the run's end
    assert kubectl_json(kubectl, kubeconfig, "get", "namespace", namespace) is None
    assert svc.comments(number) == []

    version = httpx.get(f"{url}/api/v1/runs/{runs_of(url, svc.name)[0]['id']}").json()["results"]["version"]
    shipline(env, "previews", "enable", "svc")
    svc.commit("fix: now with a preview", "feature/plain")
    svc.wait_comment(number, "**Status: ready**", f"`{_next(version)}`")
    assert deployed_image(kubectl, kubeconfig, namespace, svc.name).endswith(f":{_next(version)}")
    gitea.request("PATCH", f"{svc.slug}/pulls/{number}", {"state": "closed"})
    wait_gone(kubectl, kubeconfig, namespace)


def test_a_pull_request_closed_before_its_run_ends_gets_no_preview(
    env: dict[str, str],
    server: Callable[..., str],
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    kubeconfig: Path,
    kubectl: Path,
    tmp_path: Path,
) -> None:
    svc = Service(tmp_path, gitea, gitea_repo)
    shipline(env, "secrets", "set", "previews-kubeconfig", stdin=kubeconfig.read_text())
    register(env, svc, "--previews")
    url = server()
    # The run sleeps first, so the pull request is surely closed before the run ends.
    svc.git("checkout", "--quiet", "-B", "feature/short")
    svc.commit("feat: slow", "feature/short", build=f"sleep 8 && {svc.build}")
    pr = gitea.open_pull_request(svc.slug.removeprefix("/repos/"), "feature/short", "main", "Short-lived")
    number = int(pr["number"])
    deadline = time.monotonic() + 60
    while not runs_of(url, svc.name):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    gitea.request("PATCH", f"{svc.slug}/pulls/{number}", {"state": "closed"})
    deadline = time.monotonic() + 240
    while runs_of(url, svc.name)[0]["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert runs_of(url, svc.name)[0]["status"] == "succeeded"
    time.sleep(3)  # what the server would do, it does within a poll tick of the run's end
    assert kubectl_json(kubectl, kubeconfig, "get", "namespace", f"preview-{svc.name}-pr-{number}") is None
    assert all("**Status: removed**" in c["body"] for c in svc.comments(number))
    assert json.loads(shipline(env, "previews", "list", "--json")) == []
