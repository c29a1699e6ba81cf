"""Promotion end to end on the testbed: a service release becomes pull requests on environment repositories.

A real `shipline serve` (a subprocess: it can be killed), the testbed's Gitea
(service and environment repositories, webhooks, pull requests, statuses),
registry and kube-apiserver (kwok nodes).  The chain: a push to the service
repository runs its pipeline (webhook, pipelines as code), the release opens
`Promote NAME to VERSION` on dev's repository, the dry run posts its diff and
status, dev merges it itself (`merge: auto`) and syncs at once, the verified
sync proposes the same version to staging, where it waits for a person.

The fault tests use a cheap "release" pipeline (a shell step whose results
carry version, tag and image, as the service archetype's do), run with the
CLI against the server's store: what promotion reads is the run's end in the
outbox, whoever ran it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from envkit import EnvRepo, deployment
from relay import Relay
from serverkit import free_port

from shipline.testbed.fixtures import GiteaClient, GiteaRepo, Testbed

pytestmark = [pytest.mark.testbed, pytest.mark.timeout(900)]

GO_CACHE = Path(os.environ.get("SHIPLINE_TEST_GOCACHE", "/tmp/shipline-test-gocache"))

RELEASE = """\
name: %(name)s
params:
  version: {default: "0.1.0"}
tasks:
  - name: release
    env: {V: "${{ params.version }}", IMAGE: "%(registry)s/%(name)s"}
    steps:
      - run: |
          printf 'version=%%s\\ntag=v%%s\\nimage=%%s:%%s\\ncommit=%%s\\n' "$V" "$V" "$IMAGE" "$V" 0123456789abcdef0123456789abcdef01234567 >> "$SHIPLINE_OUTPUT"
    results: [version, tag, image, commit]
results:
  version: ${{ tasks.release.results.version }}
  tag: ${{ tasks.release.results.tag }}
  image: ${{ tasks.release.results.image }}
  commit: ${{ tasks.release.results.commit }}
"""


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipline", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Chain:
    """Two environments (dev: merge auto, next staging; staging: merge manual) on Gitea repositories."""

    gitea: GiteaClient
    org: str
    env: dict[str, str]
    tmp: Path
    registry: str
    service: str
    dev: EnvRepo
    staging: EnvRepo
    proc: subprocess.Popen[bytes] | None = None
    proxy: Relay | None = None

    @property
    def url(self) -> str:
        return self.env["SHIPLINE_PUBLIC_URL"]

    def start(self) -> None:
        with (self.tmp / "serve.log").open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "shipline", "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-6000:]

    def failure_report(self) -> str:
        """Promotions, environments and the server's own lines (no request logs), for a failed test's report."""
        lines = []
        for name in ("dev", "staging"):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                for row in self.promotions(environment=name):
                    lines.append(f"promotion {name}: {row['service']} {row['version']} {row['state']}: {row['message']}")
                env = self.environment(name)
                lines.append(f"environment {name}: {env['status']}")
                for entry in env["history"][:3]:
                    lines.append(f"  run {entry['run_id']} {entry['commit'][:12]} {entry['outcome']}: {entry['message']}")
        log = (self.tmp / "serve.log").read_text(errors="replace").splitlines()
        own = [line for line in log if "uvicorn.access" not in line]
        return "\n".join([*lines, "serve.log:", *own[-40:]])

    def pulls(self, repo: str, state: str = "all") -> list[dict[str, Any]]:
        return list(self.gitea.request("GET", f"/repos/{self.org}/{repo}/pulls?state={state}&limit=50"))

    def pull(self, repo: str, title: str) -> dict[str, Any] | None:
        found = [p for p in self.pulls(repo) if p["title"] == title]
        return found[0] if found else None

    def comments(self, repo: str, number: int) -> list[str]:
        return [c["body"] for c in self.gitea.request("GET", f"/repos/{self.org}/{repo}/issues/{number}/comments")]

    def statuses(self, repo: str, sha: str) -> dict[str, str]:
        items = self.gitea.request("GET", f"/repos/{self.org}/{repo}/commits/{sha}/status")["statuses"] or []
        return {s["context"]: s["status"] for s in items}

    def promotions(self, **params: str) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/api/v1/promotions", params=params, timeout=30).json())

    def environment(self, name: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/api/v1/environments/{name}", timeout=30).json())

    def release(self, version: str) -> None:
        """A release of the service made by the cheap pipeline (through the CLI, into the server's store)."""
        path = self.tmp / "release.yaml"
        path.write_text(RELEASE % {"name": self.service, "registry": self.registry})
        done = cli(self.env, "run", str(path), "-p", f"version={version}")
        assert done.returncode == 0, done.stdout + done.stderr


def _repo(gitea: GiteaClient, org: str, name: str) -> GiteaRepo:
    made = gitea.request("POST", f"/orgs/{org}/repos", {"name": name, "default_branch": "main", "auto_init": False})
    return GiteaRepo(org, name, gitea.authed_url(f"{org}/{name}.git"), str(made["html_url"]))


def _namespace(kubectl: Path, kubeconfig: Path) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "create", "namespace", name], check=True, capture_output=True)
    return name


@pytest.fixture
def chain(
    tmp_path: Path,
    home: Path,
    testbed: Testbed,
    gitea: GiteaClient,
    gitea_repo: GiteaRepo,
    registry: str,
    kubeconfig: Path,
    kubectl: Path,
    helm: Path,
    namespace: str,
    request: pytest.FixtureRequest,
) -> Iterator[Chain]:
    service = f"hello-{uuid.uuid4().hex[:4]}"
    org = gitea_repo.owner
    port = free_port()
    path = os.pathsep.join([str(helm.parent), str(kubectl.parent), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {
        **os.environ,
        **testbed.env,
        "PATH": path,
        "SHIPLINE_HOME": str(home),
        "SHIPLINE_PORT": str(port),
        "SHIPLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SHIPLINE_LOG_FORMAT": "text",
        "SHIPLINE_QUEUE_POLL_SECONDS": "0.05",
        "SHIPLINE_POLL_TICK_SECONDS": "0.2",
        # Far longer than any test: a sync within the test was started by the merge, not by a poll.
        "SHIPLINE_ENV_POLL_SECONDS": "3600",
        "GOCACHE": str(GO_CACHE),
        "SHIPLINE_STEP_ENV": "PATH,LANG,LC_*,TZ,TMPDIR,GOCACHE",
        # The server's temporary files (and its steps') go here: none may outlive a server that stopped.
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    env.pop("SHIPLINE_DATABASE_URL", None)
    proxy = None
    forge_url = gitea.url
    if "gitea_relay" in request.fixturenames:
        # The server reaches Gitea (API and git) only through a relay the test can cut.
        proxy = request.getfixturevalue("gitea_relay")
        forge_url = f"http://127.0.0.1:{proxy.port}"
        env["SHIPLINE_GITEA_URL"] = forge_url
    repos = {}
    for name in ("env-dev", "env-staging"):
        remote = _repo(gitea, org, name)
        work = EnvRepo(tmp_path / name, remote.clone_url)
        work.write(f"manifests/{service}.yaml", deployment(service, f"{registry}/{service}:0.0.1"))
        work.write(
            "manifests/other.yaml",
            "# another service: promotion leaves it alone\n" + deployment("other", "reg.example/other:2.0.0"),
        )
        work.commit("first state")
        repos[name] = (remote, work)
    staging_ns = _namespace(kubectl, kubeconfig)
    declared = {
        "environments": [
            {
                "name": "dev",
                "repo": f"{forge_url}/{org}/env-dev.git",
                "namespace": namespace,
                "kubeconfig": str(kubeconfig),
                "sync": "auto",
                "verify-timeout": "30s",
                "services": [service],
                "merge": "auto",
                "next": "staging",
            },
            {
                "name": "staging",
                "repo": f"{forge_url}/{org}/env-staging.git",
                "namespace": staging_ns,
                "kubeconfig": str(kubeconfig),
                "sync": "auto",
                "verify-timeout": "30s",
                "services": [service],
                "merge": "manual",
            },
        ]
    }
    (tmp_path / "environments.yaml").write_text(json.dumps(declared))
    applied = cli(env, "env", "apply", str(tmp_path / "environments.yaml"))
    assert applied.returncode == 0, applied.stderr
    made = Chain(gitea, org, env, tmp_path, registry, service, repos["env-dev"][1], repos["env-staging"][1], proxy=proxy)
    made.start()
    try:
        # Both environments start from their first commit, verified.
        for name in ("dev", "staging"):
            wait_for(f"{name} synced", lambda n=name: made.environment(n)["status"]["sync"] == "Synced", 180)  # type: ignore[misc]
        yield made
    finally:
        made.stop()
        if made.proc is not None and made.proc.returncode == 0:  # a killed server leaves what it was using
            left = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "tmp").rglob("*"))
            assert left == [], f"the stopped server left temporary files (kubeconfigs, certificates?): {left}"
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace", staging_ns, "--wait=false"],
            check=False,
            capture_output=True,
        )


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _pr_diff(chain: Chain, repo: str, number: int) -> str:
    response = httpx.get(
        f"{chain.gitea.url}/api/v1/repos/{chain.org}/{repo}/pulls/{number}.diff",
        headers={"Authorization": f"token {chain.gitea.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.text


def _changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_push_releases_then_dev_merges_syncs_verifies_and_staging_gets_its_pull_request(
    chain: Chain, gitea_repo: GiteaRepo
) -> None:
    started = time.monotonic()
    service = chain.service
    title = f"Promote {service} to 0.1.0"
    # The service: scaffolded, its repository registered (webhook), then pushed.
    work = chain.tmp / "service"
    done = cli(chain.env, "init", "service", service, str(work))
    assert done.returncode == 0, done.stderr
    _git("init", "-q", "-b", "main", cwd=work)
    added = cli(chain.env, "repos", "add", service, gitea_repo.html_url, "--forge", "gitea")
    assert added.returncode == 0, added.stderr
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "feat: hello", cwd=work)
    pushed = time.monotonic()
    _git("push", "-q", gitea_repo.clone_url, "main", cwd=work)

    # The release opens one pull request on dev, changing only the service's version.
    pr = wait_for("the pull request on dev", lambda: chain.pull("env-dev", title), 400)
    assert pr["head"]["ref"] == f"shipline/promote/{service}" and pr["base"]["ref"] == "main"
    body = pr["body"].replace("\\", "")  # Markdown: outside values may come escaped
    assert "Deployed now: 0.0.1" in body and "- Image: " in body and "feat: hello" in body, body
    changed = _changed_lines(_pr_diff(chain, "env-dev", pr["number"]))
    assert changed == [
        f'-          image: "{chain.registry}/{service}:0.0.1"',
        f'+          image: "{chain.registry}/{service}:0.1.0"',
    ], changed

    # Dry run: the diff as a comment, the status on the head; then dev merges it itself.
    merged = wait_for("dev's pull request merged", lambda: (p := chain.pull("env-dev", title)) and p["merged"] and p, 240)
    assert chain.statuses("env-dev", merged["head"]["sha"]).get("shipline/env-dev") == "success"
    comments = chain.comments("env-dev", pr["number"])
    assert any("Dry run of `dev`" in c and "```diff" in c and "0.1.0" in c for c in comments), comments

    # The merge syncs dev at once (its poll is an hour), verified with the new image.
    def dev_verified() -> dict[str, Any] | None:
        rows = chain.promotions(environment="dev", service=service)
        return rows[0] if rows and rows[0]["state"] == "verified" else None

    row = wait_for("0.1.0 verified in dev", dev_verified, 240)
    verified_in_dev = time.monotonic() - pushed
    images = subprocess.run(
        [
            "kubectl",
            "-n",
            chain.environment("dev")["environment"]["namespace"],
            "get",
            "deployment",
            service,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        env=chain.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert images == f"{chain.registry}/{service}:0.1.0"
    assert row["version"] == "0.1.0" and row["previous_version"] == "0.0.1" and row["pr_number"] == pr["number"]
    assert row["merge_commit"] and row["merged_at"] and row["verified_at"] and row["commit_time"]
    history = chain.environment("dev")["history"]
    assert history[0]["outcome"] == "verified" and history[0]["run_id"] > 0

    # The verified sync proposes 0.1.0 to staging, which waits for a person (merge: manual).
    staged = wait_for("the pull request on staging", lambda: chain.pull("env-staging", title), 180)
    wait_for(
        "staging's dry run",
        lambda: chain.statuses("env-staging", staged["head"]["sha"]).get("shipline/env-staging") == "success",
        180,
    )
    time.sleep(6)  # a sweep of open pull requests has passed: a manual one stays open
    again = chain.pull("env-staging", title)
    assert again is not None and again["state"] == "open" and not again["merged"]
    rows = chain.promotions(environment="staging", service=service)
    assert [(r["version"], r["state"], r["source_run"]) for r in rows] == [("0.1.0", "open", history[0]["run_id"])]
    # One pull request per environment, nothing doubled.
    assert [p["title"] for p in chain.pulls("env-dev")] == [title]
    assert [p["title"] for p in chain.pulls("env-staging")] == [title]
    to_staging = time.monotonic() - started

    # A person merges it; the push (a signed webhook) syncs staging, whose sync verifies the promotion.
    hook_secret = "hook-" + uuid.uuid4().hex
    secret_set = subprocess.run(
        [sys.executable, "-m", "shipline", "secrets", "set", "env-staging-webhook", "--from-env", "HOOK_SECRET"],
        env={**chain.env, "HOOK_SECRET": hook_secret},
        capture_output=True,
        text=True,
        check=False,
    )
    assert secret_set.returncode == 0, secret_set.stderr
    chain.gitea.request(
        "POST",
        f"/repos/{chain.org}/env-staging/hooks",
        {
            "type": "gitea",
            "active": True,
            "events": ["push"],
            "config": {"url": f"{chain.url}/hooks/gitea", "content_type": "json", "secret": hook_secret},
        },
    )
    chain.gitea.request("POST", f"/repos/{chain.org}/env-staging/pulls/{staged['number']}/merge", {"Do": "merge"})
    wait_for(
        "0.1.0 verified in staging",
        lambda: [r["state"] for r in chain.promotions(environment="staging")] == ["verified"],
        180,
    )
    assert chain.environment("staging")["history"][0]["outcome"] == "verified"
    print(f"\npush -> verified in dev: {verified_in_dev:.1f}s; whole chain to staging's dry run: {to_staging:.1f}s")


def test_two_quick_releases_make_one_pull_request_with_the_newest_and_a_redelivery_doubles_nothing(chain: Chain) -> None:
    service = chain.service
    chain.stop()  # the two releases end while no server reads the outbox: it finds both at once
    chain.release("0.2.0")
    chain.release("0.3.0")
    chain.release("0.2.5")  # older than one proposed: ignored
    chain.start()
    newest = f"Promote {service} to 0.3.0"
    merged = wait_for("0.3.0 merged on dev", lambda: (p := chain.pull("env-dev", newest)) and p["merged"] and p, 240)
    dev = chain.pulls("env-dev")
    assert [p["title"] for p in dev] == [newest], [p["title"] for p in dev]
    assert merged["number"] == dev[0]["number"]
    wait_for("0.3.0 verified in dev", lambda: any(r["state"] == "verified" for r in chain.promotions(environment="dev")), 240)
    states = {r["version"]: r["state"] for r in chain.promotions(environment="dev", service=service)}
    assert states == {"0.3.0": "verified", "0.2.0": "superseded", "0.2.5": "superseded"}, states
    wait_for("0.3.0 proposed to staging", lambda: chain.pull("env-staging", newest), 180)

    # The same releases handled again (as after a crash before the cursor moved): nothing new.
    comments = len(chain.comments("env-dev", merged["number"]))
    chain.stop()
    subprocess.run([sys.executable, "-c", RESET_CURSOR, chain.env["SHIPLINE_HOME"]], check=True, capture_output=True, text=True)
    chain.start()
    time.sleep(10)
    assert [p["title"] for p in chain.pulls("env-dev")] == [newest]
    assert [p["title"] for p in chain.pulls("env-staging")] == [newest]
    assert len(chain.comments("env-dev", merged["number"])) == comments
    assert {r["version"]: r["state"] for r in chain.promotions(environment="dev", service=service)} == states
    assert [r["version"] for r in chain.promotions(environment="staging")] == ["0.3.0"]
    shown = cli(chain.env, "env", "promotions", "--env", "dev", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {r["version"]: r["state"] for r in json.loads(shown.stdout)} == states


RESET_CURSOR = """
import sys
from pathlib import Path
from sqlalchemy import text
from shipline.store.sql import SqlStore
store = SqlStore("sqlite:///" + str(Path(sys.argv[1]) / "shipline.db"))
with store.transaction() as conn:
    conn.execute(text("UPDATE outbox_cursors SET position = 0, lease_owner = NULL, lease_until = NULL WHERE consumer = 'promotion'"))
"""


def test_a_base_that_moved_gets_the_branch_made_again_from_it(chain: Chain) -> None:
    service = chain.service
    chain.stop()  # the base moves before the server handles the release
    chain.release("0.2.0")
    chain.dev.write("manifests/other.yaml", deployment("other", "reg.example/other:2.1.0"))
    moved = chain.dev.commit("other 2.1.0, by hand")
    chain.start()
    title = f"Promote {service} to 0.2.0"
    wait_for("the pull request on dev", lambda: chain.pull("env-dev", title), 120)
    head = chain.dev.git("ls-remote", chain.dev.remote, f"refs/heads/shipline/promote/{service}").split()[0]
    chain.dev.git("fetch", "-q", chain.dev.remote, head)
    assert chain.dev.git("rev-parse", f"{head}^") == moved
    assert chain.dev.git("diff", "--name-only", moved, head) == f"manifests/{service}.yaml"
    wait_for("merged", lambda: (p := chain.pull("env-dev", title)) and p["merged"], 240)


def test_a_server_killed_mid_chain_completes_it_after_restart_with_nothing_doubled(chain: Chain) -> None:
    service = chain.service
    title = f"Promote {service} to 0.2.0"
    chain.release("0.2.0")
    wait_for("the pull request on dev", lambda: chain.pull("env-dev", title), 120)
    chain.kill()  # kill -9: between the pull request and its merge, sync and the next environment
    chain.start()
    wait_for("0.2.0 verified in dev", lambda: [r["state"] for r in chain.promotions(environment="dev")] == ["verified"], 300)
    staged = wait_for("the pull request on staging", lambda: chain.pull("env-staging", title), 180)
    assert [p["title"] for p in chain.pulls("env-dev")] == [title]
    assert [p["title"] for p in chain.pulls("env-staging")] == [title]
    assert staged["state"] == "open"
    assert [(r["version"], r["state"]) for r in chain.promotions(environment="staging")] == [("0.2.0", "open")]


@pytest.fixture
def gitea_relay(gitea: GiteaClient) -> Iterator[Relay]:
    relay = Relay(int(gitea.url.rsplit(":", 1)[1]))
    yield relay
    relay.close()


def test_gitea_unreachable_keeps_the_release_until_it_is_back(gitea_relay: Relay, chain: Chain) -> None:
    assert chain.proxy is not None
    service = chain.service
    title = f"Promote {service} to 0.2.0"
    chain.proxy.cut()
    chain.release("0.2.0")
    wait_for("a failed attempt", lambda: "promotion: will try again" in chain.log(), 60)
    assert chain.pull("env-dev", title) is None  # (asked of Gitea directly, not through the relay)
    assert chain.promotions(environment="dev") == [] or all(r["state"] == "proposed" for r in chain.promotions(environment="dev"))
    chain.proxy.mend()
    wait_for("merged once Gitea is back", lambda: (p := chain.pull("env-dev", title)) and p["merged"], 240)
    wait_for("verified in dev", lambda: [r["state"] for r in chain.promotions(environment="dev")] == ["verified"], 240)
    assert [p["title"] for p in chain.pulls("env-dev")] == [title]


def test_a_persons_pull_request_on_an_environment_repo_gets_a_dry_run_and_is_not_merged(chain: Chain) -> None:
    secret = "hook-" + uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "shipline", "secrets", "set", "env-dev-webhook", "--from-env", "HOOK_SECRET"],
        env={**chain.env, "HOOK_SECRET": secret},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    chain.gitea.request(
        "POST",
        f"/repos/{chain.org}/env-dev/hooks",
        {
            "type": "gitea",
            "active": True,
            "events": ["pull_request"],
            "config": {"url": f"{chain.url}/hooks/gitea", "content_type": "json", "secret": secret},
        },
    )
    repo = chain.dev
    repo.git("checkout", "-q", "-b", "scale-other")
    repo.write("manifests/other.yaml", deployment("other", "reg.example/other:2.0.1"))
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "other 2.0.1")
    repo.git("push", "-q", repo.remote, "HEAD:scale-other")
    head = repo.git("rev-parse", "HEAD")
    pr = chain.gitea.open_pull_request(f"{chain.org}/env-dev", "scale-other", "main", "other 2.0.1")
    wait_for("the dry run's status", lambda: chain.statuses("env-dev", head).get("shipline/env-dev") == "success", 120)
    comments = chain.comments("env-dev", pr["number"])
    assert len(comments) == 1 and "Dry run of `dev`" in comments[0] and "reg.example/other:2.0.1" in comments[0], comments
    time.sleep(6)  # a sweep has passed: only shipline's own promotions are merged by it
    assert chain.gitea.request("GET", f"/repos/{chain.org}/env-dev/pulls/{pr['number']}")["merged"] is False
    assert chain.promotions(environment="dev") == []


def test_a_promotion_that_fails_verification_is_rolled_back_and_stops_there(chain: Chain) -> None:
    service = chain.service
    title = f"Promote {service} to 0.2.0"
    chain.stop()
    # No node has 500 CPUs: whatever version comes with this never rolls out.
    chain.dev.write(f"manifests/{service}.yaml", deployment(service, f"{chain.registry}/{service}:0.0.1", cpu="500"))
    chain.dev.commit("ask for 500 CPUs, by hand")
    chain.release("0.2.0")
    chain.start()

    def failed() -> dict[str, Any] | None:
        rows = chain.promotions(environment="dev")
        return rows[0] if rows and rows[0]["state"] == "failed" else None

    row = wait_for("0.2.0 failed in dev", failed, 300)
    assert row["merge_commit"] and "verification failed in dev, rolled back to" in row["message"]
    pr = chain.pull("env-dev", title)
    assert pr is not None and pr["merged"]
    comments = chain.comments("env-dev", pr["number"])
    assert any("verification failed in dev, rolled back to" in c and "promotion stops here" in c for c in comments), comments
    time.sleep(6)
    assert chain.pulls("env-staging") == [] and chain.promotions(environment="staging") == []
    assert chain.environment("dev")["history"][0]["outcome"] == "rolled-back"


def test_a_pull_request_a_person_merges_is_synced_without_a_webhook_or_a_poll(chain: Chain) -> None:
    # Staging has no webhook and polls its branch once an hour: the promotion's sweep of open pull
    # requests sees the merge, made while the dry run may still be under way, and starts the sync.
    title = f"Promote {chain.service} to 0.2.0"
    chain.release("0.2.0")
    staged = wait_for("the pull request on staging", lambda: chain.pull("env-staging", title), 240)
    chain.gitea.request("POST", f"/repos/{chain.org}/env-staging/pulls/{staged['number']}/merge", {"Do": "merge"})
    wait_for(
        "0.2.0 verified in staging", lambda: [r["state"] for r in chain.promotions(environment="staging")] == ["verified"], 120
    )
    assert chain.environment("staging")["history"][0]["outcome"] == "verified"


def test_a_merge_the_forge_refuses_is_tried_again_once_the_other_checks_pass(chain: Chain) -> None:
    # Branch protection on dev wants another check too: shipline's dry run alone does not let it merge.
    chain.gitea.request(
        "POST",
        f"/repos/{chain.org}/env-dev/branch_protections",
        {"branch_name": "main", "enable_status_check": True, "status_check_contexts": ["ci/other", "shipline/env-dev"]},
    )
    title = f"Promote {chain.service} to 0.2.0"
    chain.release("0.2.0")
    pr = wait_for("the pull request on dev", lambda: chain.pull("env-dev", title), 120)
    head = pr["head"]["sha"]
    wait_for("the dry run passed", lambda: chain.statuses("env-dev", head).get("shipline/env-dev") == "success", 120)
    refused = wait_for(
        "the merge refused",
        lambda: [r for r in chain.promotions(environment="dev") if r["message"].startswith("merge refused")],
        60,
    )
    assert refused[0]["state"] == "open"
    assert chain.pull("env-dev", title)["merged"] is False  # type: ignore[index]
    chain.gitea.request(
        "POST", f"/repos/{chain.org}/env-dev/statuses/{head}", {"state": "success", "context": "ci/other", "description": "ok"}
    )
    wait_for("merged once the other check passed", lambda: (p := chain.pull("env-dev", title)) and p["merged"], 60)
    wait_for("verified in dev", lambda: [r["state"] for r in chain.promotions(environment="dev")] == ["verified"], 240)
