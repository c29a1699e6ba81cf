"""The service archetype end to end on the testbed: a scaffolded service, released for real.

`shipline init service` writes the repository; `shipline run .shipline/pipeline.yaml`
clones it from a bare git repository (or from Gitea), builds and tests it, pushes the
image and the chart to the testbed's registry and the tag to the remote. Each check
is what a person would look at: `git ls-remote`, `skopeo inspect`, `helm show chart`,
`shipline runs show`.

One scaffolded service per test group; the Go build cache is shared by every run
(as docs/pipelines.md shows with SHIPLINE_STEP_ENV), so a warm run is mostly the
tools' own time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from shipline.testbed.fixtures import GiteaClient, GiteaRepo, Testbed
from shipline.testbed.parts import HELM

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(900)]

GO_CACHE = Path(os.environ.get("SHIPLINE_TEST_GOCACHE", "/tmp/shipline-test-gocache"))


def run(
    *cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@dataclass
class Service:
    """A scaffolded service in a git work tree, pushed to a remote, and how to run its pipeline."""

    name: str
    work: Path
    url: str
    push_url: str
    env: dict[str, str]
    registry: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    def git(self, *args: str) -> str:
        return run("git", "-c", "user.name=dev", "-c", "user.email=dev@localhost", *args, cwd=self.work).stdout.strip()

    def commit(self, message: str, branch: str = "main", files: dict[str, str] | None = None) -> str:
        for path, text in (files or {}).items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_text(text)
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        self.git("push", "--quiet", "--force", self.push_url, f"HEAD:refs/heads/{branch}")
        return self.git("rev-parse", "HEAD")

    def pipeline(self, **params: str) -> dict[str, Any]:
        args = [f"-p{k}={v}" for k, v in {"url": self.url, **params}.items()]
        proc = run(
            sys.executable,
            "-m",
            "shipline",
            "run",
            str(self.work / ".shipline" / "pipeline.yaml"),
            *args,
            "--json",
            env=self.env,
            check=False,
        )
        record = last_json(proc.stdout, proc.stderr)
        record["exit_code"] = proc.returncode
        self.runs.append(record)
        return record

    def shipline(self, *args: str) -> str:
        return run(sys.executable, "-m", "shipline", *args, env=self.env).stdout

    def remote_tags(self) -> dict[str, str]:
        out = run("git", "ls-remote", "--tags", self.push_url, cwd=self.work).stdout
        tags: dict[str, str] = {}
        for sha, ref in sorted((line.split("\t") for line in out.splitlines()), key=lambda p: p[1]):
            tags[ref.removeprefix("refs/tags/").removesuffix("^{}")] = sha
        return tags

    def image(self, version: str) -> dict[str, Any] | None:
        proc = run(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            f"docker://{self.registry}/{self.name}:{version}",
            env=self.env,
            check=False,
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def chart(self, version: str) -> dict[str, Any] | None:
        proc = run(
            "helm",
            "show",
            "chart",
            f"oci://{self.registry}/charts/{self.name}",
            "--version",
            version,
            "--plain-http",
            env=self.env,
            check=False,
        )
        return YAML(typ="safe").load(proc.stdout) if proc.returncode == 0 else None

    def chart_values(self, version: str) -> dict[str, Any]:
        out = run(
            "helm",
            "show",
            "values",
            f"oci://{self.registry}/charts/{self.name}",
            "--version",
            version,
            "--plain-http",
            env=self.env,
        ).stdout
        values: dict[str, Any] = YAML(typ="safe").load(out)
        return values


def last_json(stdout: str, stderr: str = "") -> dict[str, Any]:
    """The run record `shipline run --json` prints last on stdout (indented JSON)."""
    start = stdout.rfind("\n{")
    assert stdout.strip(), stderr[-3000:]
    record: dict[str, Any] = json.loads(stdout[start + 1 :] if start >= 0 else stdout)
    return record


def runs_list(svc: Service) -> list[dict[str, Any]]:
    data = json.loads(svc.shipline("runs", "list", "--json"))
    runs: list[dict[str, Any]] = data["runs"] if isinstance(data, dict) else data
    return runs


def task(record: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in record["tasks"] if t["name"] == name)
    return found


def failed_at(record: dict[str, Any]) -> list[str]:
    return [t["name"] for t in record["tasks"] if t["status"] == "failed"]


def base_env(testbed: Testbed, home: Path) -> dict[str, str]:
    env = {**os.environ, **testbed.env}
    env.update(
        SHIPLINE_HOME=str(home),
        GOCACHE=str(GO_CACHE),
        SHIPLINE_STEP_ENV="PATH,LANG,LC_*,TZ,TMPDIR,GOCACHE",
    )
    env.pop("SHIPLINE_DATABASE_URL", None)
    # The testbed's helm, this interpreter's shipline, then the rest (buildah, skopeo, git, go).
    helm = testbed.layout.program(HELM, "helm").parent
    env["PATH"] = os.pathsep.join((str(helm), str(Path(sys.executable).parent), os.environ["PATH"]))
    return env


def scaffold(root: Path, name: str) -> Path:
    work = root / name
    run(sys.executable, "-m", "shipline", "init", "service", name, str(work))
    run("git", "init", "--quiet", "--initial-branch=main", cwd=work)
    return work


def bare_service(root: Path, testbed: Testbed, registry: str, prefix: str = "svc") -> Service:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    work = scaffold(root, name)
    bare = root / f"{name}.git"
    run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    return Service(name, work, f"file://{bare}", str(bare), base_env(testbed, root / "home"), registry)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, testbed: Testbed, registry: str) -> Iterator[Service]:
    """One service, released once from main: v0.1.0 (the module's tests go on from there)."""
    svc = bare_service(tmp_path_factory.mktemp("released"), testbed, registry)
    svc.commit("feat: scaffold the service")
    record = svc.pipeline()
    assert record["status"] == "succeeded", [(t["name"], t["message"]) for t in record["tasks"]]
    yield svc


# --- the default branch: releases ---------------------------------------------------------


def test_main_releases_v0_1_0_with_tag_image_and_chart(released: Service) -> None:
    svc, record = released, released.runs[0]
    commit = svc.git("rev-parse", "HEAD")
    version = "0.1.0"
    assert record["exit_code"] == 0
    results = record["results"]
    assert results["version"] == version and results["commit"] == commit and results["tag"] == "v0.1.0"
    assert results["image"] == f"{svc.registry}/{svc.name}:{version}"
    assert results["image-digest"].startswith("sha256:")
    assert results["chart-version"] == version

    # The tag is on the remote, at the built commit.
    assert svc.remote_tags() == {"v0.1.0": commit}
    # The image: the version's tag, the OCI labels, the digest the run reported.
    image = svc.image(version)
    assert image is not None
    labels = image["Labels"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.source"] == svc.url
    assert image["Digest"] == results["image-digest"]
    # The chart: the same version everywhere, pointing at that image.
    chart = svc.chart(version)
    assert chart is not None and chart["version"] == version and chart["appVersion"] == version
    values = svc.chart_values(version)
    assert values["image"]["repository"] == f"{svc.registry}/{svc.name}"
    assert values["image"]["tag"] == version
    # The tests ran and were counted.
    assert task(record, "build-test")["results"]["tests-passed"] == "2"
    assert task(record, "build-test")["results"]["tests-failed"] == "0"


def test_runs_show_traces_commit_tag_image_and_chart(released: Service) -> None:
    record = released.runs[0]
    shown = released.shipline("runs", "show", str(record["id"]))
    results = record["results"]
    trace = next(line for line in shown.splitlines() if line.startswith("release"))
    for part in (results["commit"][:12], "tag v0.1.0", results["image-digest"], f"charts/{released.name} 0.1.0"):
        assert part in trace, (part, trace)
    assert results["image-digest"] in shown  # in full: copyable


def test_fix_then_feat_bump_patch_then_minor(released: Service) -> None:
    released.commit("fix: a typo in the greeting")
    record = released.pipeline()
    assert record["status"] == "succeeded"
    assert (record["results"]["version"], record["results"]["tag"]) == ("0.1.1", "v0.1.1")
    released.commit("feat: greet in French")
    record = released.pipeline()
    assert record["results"]["version"] == "0.2.0"
    tags = released.remote_tags()
    assert {"v0.1.0", "v0.1.1", "v0.2.0"} <= set(tags)
    assert tags["v0.2.0"] == released.git("rev-parse", "HEAD")
    assert released.image("0.2.0") is not None and released.chart("0.2.0") is not None


def test_two_quick_pushes_to_main_release_one_after_the_other(released: Service) -> None:
    # Both runs start before either ends; the service's concurrency group makes the
    # second wait, so it sees the first one's tag and computes the next version.
    first = released.commit("fix: first of two")
    pipeline = str(released.work / ".shipline" / "pipeline.yaml")
    earlier = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipline",
            "run",
            pipeline,
            f"-purl={released.url}",
            "-pbranch=main",
            f"-prevision={first}",
            "--json",
        ],
        env=released.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first run exists (queued or running) before the second is asked for, as two
    # webhooks in order would make them.
    deadline = time.monotonic() + 60
    while not any(r["params"].get("revision") == first for r in runs_list(released)):
        assert earlier.poll() is None and time.monotonic() < deadline, earlier.communicate()
        time.sleep(0.1)
    second = released.commit("fix: second of two")
    later = released.pipeline(revision=second, branch="main")
    out, err = earlier.communicate(timeout=600)
    before = last_json(out, err)
    assert before["status"] == "succeeded" and later["status"] == "succeeded", (failed_at(before), failed_at(later))
    assert before["concurrency_group"] == later["concurrency_group"]
    assert before["results"]["commit"] == first and later["results"]["commit"] == second
    major, minor, patch = (int(x) for x in before["results"]["version"].split("."))
    assert later["results"]["version"] == f"{major}.{minor}.{patch + 1}"
    tags = released.remote_tags()
    assert tags[before["results"]["tag"]] == first and tags[later["results"]["tag"]] == second


def test_rerun_of_a_released_commit_is_idempotent(released: Service) -> None:
    before = released.remote_tags()
    record = released.pipeline()
    assert record["status"] == "succeeded"
    assert record["results"]["tag"] == f"v{record['results']['version']}"
    assert released.remote_tags() == before


# --- other branches and pull requests: pre-releases, no tag --------------------------------


def test_feature_branch_gets_a_prerelease_and_no_tag(released: Service) -> None:
    tags_before = released.remote_tags()
    released.git("checkout", "--quiet", "-B", "feature/Login")
    released.commit("feat: login", branch="feature/Login")
    record = released.pipeline(revision="feature/Login")
    released.git("checkout", "--quiet", "main")
    assert record["status"] == "succeeded", failed_at(record)
    version = record["results"]["version"]
    assert version.startswith(("0.2.1-feature-login.", "0.3.0-feature-login.")), version
    assert record["results"]["tag"] == ""
    assert task(record, "tag")["status"] == "skipped"
    assert released.remote_tags() == tags_before
    assert released.image(version) is not None
    chart = released.chart(version)
    assert chart is not None and chart["appVersion"] == version


def test_pull_request_gets_a_pr_prerelease_and_a_summary(released: Service) -> None:
    tags_before = released.remote_tags()
    released.git("checkout", "--quiet", "-B", "pr-work")
    released.git("commit", "--quiet", "--allow-empty", "-m", "feat: proposed")
    head = released.git("rev-parse", "HEAD")
    released.git("push", "--quiet", "--force", released.push_url, "HEAD:refs/pull/3/head")
    released.git("checkout", "--quiet", "main")
    record = released.pipeline(pr="3")
    assert record["status"] == "succeeded", failed_at(record)
    assert record["results"]["commit"] == head
    assert record["results"]["version"].endswith("-pr-3.1") or "-pr-3." in record["results"]["version"]
    assert record["results"]["tag"] == ""
    assert released.remote_tags() == tags_before
    summary = record["results"]["summary"]
    assert summary.startswith("passed:") and record["results"]["version"] in summary and "2 tests passed" in summary


def test_a_branch_named_like_a_command_is_data(released: Service) -> None:
    branch = "feature/$(touch${IFS}pwned)"
    released.git("checkout", "--quiet", "-B", "odd")
    released.commit("fix: odd", branch=branch)
    released.git("checkout", "--quiet", "main")
    record = released.pipeline(revision=branch)
    assert record["status"] == "succeeded", failed_at(record)
    assert "-feature-touch-ifs-pwned." in record["results"]["version"]
    home = Path(released.env["SHIPLINE_HOME"])
    assert not list(home.rglob("pwned")) and not list(released.work.rglob("pwned"))


# --- failures: the run stops at the task that failed, and nothing of that version is out ---


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, testbed: Testbed, registry: str) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("failures")

    def _make(prefix: str) -> Service:
        svc = bare_service(root, testbed, registry, prefix)
        return svc

    yield _make


def assert_nothing_released(svc: Service, version: str = "0.1.0") -> None:
    assert svc.remote_tags() == {}
    assert svc.image(version) is None
    assert svc.chart(version) is None


def test_a_dockerfile_that_does_not_build(fresh: Any) -> None:
    svc: Service = fresh("bad-docker")
    svc.commit("feat: x", files={"Dockerfile": "FROM scratch\nCOPY no-such-file /x\n"})
    record = svc.pipeline()
    assert record["status"] == "failed" and record["exit_code"] == 1
    assert failed_at(record) == ["image"]
    assert "no-such-file" in task(record, "image")["message"] or "Dockerfile" in task(record, "image")["message"]
    assert_nothing_released(svc)


def test_a_failing_test(fresh: Any) -> None:
    svc: Service = fresh("bad-test")
    test_file = svc.work / "src" / "main_test.go"
    svc.commit("feat: x", files={"src/main_test.go": test_file.read_text().replace('"hello, ship"', '"hello, nobody"')})
    record = svc.pipeline()
    assert failed_at(record) == ["build-test"]
    bt = task(record, "build-test")
    assert bt["results"]["tests-failed"] == "1" and bt["results"]["tests-passed"] == "1"
    assert "TestGreeting" in bt["results"]["failed-tests"] and "TestGreeting" in bt["message"]
    assert_nothing_released(svc)


def test_a_chart_that_does_not_lint(fresh: Any) -> None:
    svc: Service = fresh("bad-chart")
    svc.commit("feat: x", files={"chart/templates/broken.yaml": "metadata:\n  name: {{ .Values.nope.deeper }\n"})
    record = svc.pipeline()
    assert "chart-lint" in failed_at(record)
    assert task(record, "image")["status"] == "skipped"
    assert "does not lint" in task(record, "chart-lint")["message"]
    assert_nothing_released(svc)


@pytest.mark.parametrize("where", ["down", "refusing"])
def test_a_registry_that_is_down_or_refuses(fresh: Any, testbed: Testbed, where: str) -> None:
    svc: Service = fresh(f"reg-{where}")
    svc.commit("feat: x")
    # Nothing listens on port 9 of loopback; Gitea's own registry wants credentials.
    target = "127.0.0.1:9" if where == "down" else f"127.0.0.1:{testbed.state.ports['gitea']}"
    record = svc.pipeline(registry=target)
    assert record["status"] == "failed"
    assert failed_at(record) == ["image"]
    assert target in task(record, "image")["message"] or "registry" in task(record, "image")["message"]
    assert_nothing_released(svc)


def test_a_failure_after_the_image_push_withdraws_the_image(fresh: Any) -> None:
    svc: Service = fresh("withdrawn")
    # `artifacts` names files the build does not make: publish fails while the image,
    # started beside it, is pushed; the run then takes the image back.
    pipeline = svc.work / ".shipline" / "pipeline.yaml"
    svc.commit("feat: x", files={".shipline/pipeline.yaml": pipeline.read_text() + "  artifacts: dist/*\n"})
    record = svc.pipeline()
    assert failed_at(record) == ["publish"]
    assert "no file matches 'dist/*'" in task(record, "publish")["message"]
    assert task(record, "withdraw")["status"] == "succeeded"
    if task(record, "image")["status"] == "succeeded":
        logs = svc.shipline("runs", "logs", str(record["id"]), "--task", "withdraw")
        assert f"withdrawn: {svc.registry}/{svc.name}:0.1.0: deleted" in logs
    assert_nothing_released(svc)


def test_a_tag_that_exists_on_another_commit(fresh: Any) -> None:
    svc: Service = fresh("tag-taken")
    svc.commit("feat: x")
    svc.git("checkout", "--quiet", "-B", "elsewhere")
    other = svc.commit("feat: elsewhere", branch="elsewhere")
    svc.git("tag", "v0.1.0", other)
    svc.git("push", "--quiet", svc.push_url, "refs/tags/v0.1.0")
    svc.git("checkout", "--quiet", "main")
    record = svc.pipeline()
    assert failed_at(record) == ["version"]
    assert "tag v0.1.0 already exists on commit" in task(record, "version")["message"]
    assert svc.remote_tags() == {"v0.1.0": other}
    assert svc.image("0.1.0") is None and svc.chart("0.1.0") is None


@pytest.mark.parametrize("revision", ["feature/$(touch pwned)", "feature/a..b", "--upload-pack=touch pwned"])
def test_hostile_revisions(fresh: Any, revision: str) -> None:
    svc: Service = fresh("hostile")
    svc.commit("feat: x")
    record = svc.pipeline(revision=revision)
    assert failed_at(record) == ["clone"]
    assert "not a valid branch, tag, commit or ref name" in task(record, "clone")["message"]
    assert not list(Path(svc.env["SHIPLINE_HOME"]).rglob("pwned"))
    assert_nothing_released(svc)


# --- Gitea: the same archetype against a forge, over HTTP with the forge's token ------------


def test_gitea_release_and_pull_request(
    gitea: GiteaClient, gitea_repo: GiteaRepo, testbed: Testbed, registry: str, tmp_path: Path
) -> None:
    name = f"gt-{uuid.uuid4().hex[:6]}"
    work = scaffold(tmp_path, name)
    url = f"{gitea.url}/{gitea_repo.owner}/{gitea_repo.name}.git"
    svc = Service(name, work, url, gitea_repo.clone_url, base_env(testbed, tmp_path / "home"), registry)
    first = svc.commit("feat: first")
    record = svc.pipeline()
    assert record["status"] == "succeeded", [(t["name"], t["message"]) for t in record["tasks"]]
    assert record["results"]["tag"] == "v0.1.0"
    tag = gitea.request("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}/tags/v0.1.0")
    assert tag["commit"]["sha"] == first

    # A pull request from a branch: Gitea keeps refs/pull/N/head; the PR variant builds it.
    svc.git("checkout", "--quiet", "-B", "feature/x")
    head = svc.commit("fix: a proposal", branch="feature/x")
    pr = gitea.open_pull_request(f"{gitea_repo.owner}/{gitea_repo.name}", "feature/x", "main", "A proposal")
    record = svc.pipeline(pr=str(pr["number"]))
    assert record["status"] == "succeeded", failed_at(record)
    assert record["results"]["version"] == f"0.1.1-pr-{pr['number']}.1"
    assert record["results"]["commit"] == head
    assert set(svc.remote_tags()) == {"v0.1.0"}


# --- the release, deployed: pods that really run ------------------------------------------


def test_the_release_runs_and_answers_on_the_real_node_through_an_environment(
    released: Service, real_node: str, kubeconfig: Path, kubectl: Path, namespace: str, tmp_path: Path
) -> None:
    """An environment syncs the released image onto the real node: "verified" means its pods passed their
    readiness probe and answer HTTP; a version whose image does not exist is not verified and is rolled back."""
    placement = {
        "nodeSelector": {"kubernetes.io/hostname": real_node},
        "tolerations": [{"key": "shipline.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
    }

    def manifests(version: str) -> str:
        container = {
            "name": "app",
            "image": f"{released.registry}/{released.name}:{version}",
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}}, "spec": {**placement, "containers": [container]}},
            },
        }
        return json.dumps(deployment, indent=2) + "\n"

    bare, work = tmp_path / "env.git", tmp_path / "env"
    run("git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    run("git", "init", "--quiet", "--initial-branch=main", str(work))

    def commit(version: str) -> str:
        (work / "manifests").mkdir(exist_ok=True)
        (work / "manifests" / "app.json").write_text(manifests(version))
        git = ("git", "-c", "user.name=dev", "-c", "user.email=dev@localhost")
        run(*git, "add", "-A", cwd=work)
        run(*git, "commit", "--quiet", "-m", f"app {version}", cwd=work)
        run("git", "push", "--quiet", str(bare), "HEAD:main", cwd=work)
        return run("git", "rev-parse", "HEAD", cwd=work).stdout.strip()

    declaration = tmp_path / "environments.yaml"
    declaration.write_text(
        json.dumps(
            {
                "environments": [
                    {
                        "name": "real",
                        "repo": f"file://{bare}",
                        "namespace": namespace,
                        "kubeconfig": str(kubeconfig),
                        "verify-timeout": "60s",
                    }
                ]
            }
        )
    )
    good = commit("0.1.0")
    released.shipline("env", "apply", str(declaration))
    synced = run(sys.executable, "-m", "shipline", "env", "sync", "real", env=released.env, check=False)
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    status = json.loads(released.shipline("env", "status", "real", "--json"))
    assert (status["sync"], status["health"], status["applied_commit"]) == ("Synced", "Healthy", good)

    def pod() -> dict[str, Any]:
        out = run(str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace, "get", "pods", "-l", "app=app", "-o", "json")
        ready = [
            p
            for p in json.loads(out.stdout)["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        assert len(ready) == 1, out.stdout[-2000:]
        return ready[0]

    first = pod()
    assert first["spec"]["nodeName"] == real_node
    with urllib.request.urlopen(f"http://{first['status']['podIP']}:8080/?name=shipline", timeout=10) as answer:
        assert answer.read().decode() == "hello, shipline\n"

    # A version whose image was never pushed: its pod cannot start, the sync is not verified, the
    # environment goes back to the verified commit, and the running pod was never replaced.
    commit("9.9.9")
    failed = run(sys.executable, "-m", "shipline", "env", "sync", "real", env=released.env, check=False)
    assert failed.returncode != 0
    status = json.loads(released.shipline("env", "status", "real", "--json"))
    assert status["applied_commit"] == good, status
    after = pod()
    assert after["spec"]["containers"][0]["image"].endswith(":0.1.0")
    with urllib.request.urlopen(f"http://{after['status']['podIP']}:8080/", timeout=10) as answer:
        assert answer.read().decode() == "hello, world\n"
