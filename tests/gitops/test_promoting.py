"""Promotion's decisions that need no forge: which run is a release, which version is newer, which
environments a release goes to first (the rest of the chain gets it once verified)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from envkit import deployment

from shipline.domain.environments import Environment
from shipline.domain.runs import RunTransition
from shipline.engine.events import EventBus
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.executors.local import LocalExecutor
from shipline.gitops.promoting import Promoter, Release, _newer
from shipline.settings import Settings, load_settings
from shipline.store.environments import EnvironmentStore
from shipline.store.sql import SqlStore
from shipline.testbed.fixtures import GiteaClient, GiteaRepo

RESULTS = {
    "version": "1.2.0",
    "tag": "v1.2.0",
    "image": "reg.example/hello:1.2.0",
    "commit": "c" * 40,
    "chart": "oci://r/charts/hello",
}


def transition(results: dict[str, Any] | None, **params: str) -> RunTransition:
    return RunTransition(
        id=1,
        run_id=5,
        pipeline="hello",
        kind="run",
        status="succeeded",
        data={"results": results} if results is not None else {},
        at=datetime.now(UTC),
        params={"url": "http://forge/acme/hello.git", **params},
    )


class Recording(Promoter):
    proposed: list[tuple[str, str]]

    def propose(self, env: Environment, release: Release, commit_time: datetime | None = None) -> None:  # type: ignore[override]
        self.proposed.append((env.name, release.version))


def promoter(settings: Settings, store: SqlStore) -> Recording:
    made = Recording(settings, store, "test", submit_check=lambda env, head, extra: 0, poke=lambda names: None)
    made.proposed = []
    return made


def test_a_release_is_a_succeeded_run_with_version_tag_and_image_not_a_pull_request(settings: Settings, store: SqlStore) -> None:
    p = promoter(settings, store)
    release = p._release_of(transition(RESULTS))
    assert release is not None
    assert (release.service, release.version, release.tag, release.source_run) == ("hello", "1.2.0", "v1.2.0", 5)
    assert release.url == "http://forge/acme/hello.git" and release.commit == "c" * 40
    assert p._release_of(transition({**RESULTS, "tag": ""})) is None  # another branch: a pre-release, no tag
    assert p._release_of(transition(RESULTS, pr="7")) is None
    assert p._release_of(transition({"version": "1.0.0"})) is None  # not a service run
    assert p._release_of(transition(None)) is None


def test_newer_is_semver_and_never_true_for_what_does_not_parse() -> None:
    assert _newer("1.10.0", "1.9.0") and not _newer("1.9.0", "1.10.0")
    assert _newer("1.0.0", "1.0.0-rc.1") and not _newer("1.0.0-rc.1", "1.0.0")
    assert not _newer("1.0.0", "1.0.0")
    assert not _newer("latest", "1.0.0") and not _newer("1.0.0", "latest")


def test_a_release_goes_to_the_first_environments_of_each_chain(settings: Settings, store: SqlStore) -> None:
    envs = EnvironmentStore(store)

    def put(name: str, services: list[str], nxt: str | None = None) -> None:
        declared: dict[str, Any] = {
            "name": name,
            "repo": f"http://forge/acme/{name}.git",
            "namespace": name,
            "services": services,
        }
        if nxt:
            declared["next"] = nxt
        envs.put(Environment.model_validate(declared), "envs.yaml")

    put("dev", ["hello"], "staging")
    put("staging", ["hello"], "prod")
    put("prod", ["hello"])
    put("sandbox", ["hello", "other"])  # no chain: gets every release at once
    put("other-dev", ["other"])
    p = promoter(settings, store)
    p.release(Release("hello", "1.2.0", "v1.2.0", "c" * 40, "img", "", "", "", "", 5))
    assert sorted(p.proposed) == [("dev", "1.2.0"), ("sandbox", "1.2.0")]


@pytest.mark.testbed
def test_a_dry_run_its_server_died_under_is_run_again_not_reported_as_failed(
    home: Path, tmp_path: Path, gitea: GiteaClient, gitea_repo: GiteaRepo
) -> None:
    """kill -9 of the server during a promotion's dry run: after restart, recovery ends that run as
    interrupted; the promotion must check the head again, not post "dry run failed" and wait forever."""
    work = tmp_path / "env"
    git = ("git", "-c", "user.name=dev", "-c", "user.email=dev@localhost")
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "manifests").mkdir()
    (work / "manifests" / "hello.yaml").write_text("kind: ConfigMap\n")
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", gitea_repo.clone_url, "main"], cwd=work, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True, text=True).stdout.strip()

    settings = load_settings({"SHIPLINE_HOME": str(home), "SHIPLINE_GITEA_URL": gitea.url, "SHIPLINE_GITEA_TOKEN": gitea.token})
    store = SqlStore(settings.database)
    try:
        env = Environment(name="dev", repo=f"{gitea_repo.html_url}.git", namespace="dev", merge="auto", services=["hello"])
        EnvironmentStore(store).put(env, "test")
        definition = tmp_path / "env-dev.yaml"
        definition.write_text(
            "name: env-dev\nparams:\n  action: {}\n  revision: {}\ntasks:\n  - name: diff\n    steps:\n      - run: 'true'\n"
        )
        dead = f"{socket.gethostname()}:999999:0"  # an engine that is gone
        run_id = store.create_run(
            load_pipeline(definition),
            {"action": "diff", "revision": head},
            trigger={"pr": 1, "head": head, "head_branch": "shipline/promote/hello"},
            owner=dead,
        )
        assert Engine(settings, store, LocalExecutor.from_settings(settings), EventBus()).recover() == [run_id]
        record = store.get_run(run_id)
        assert record.interrupted

        checks: list[str] = []

        def submit_check(env: Environment, head: str, extra: Mapping[str, object]) -> int:
            checks.append(head)  # queued as the server does it: a run of the environment's pipeline
            return store.create_run(load_pipeline(definition), {"action": "diff", "revision": head}, trigger=dict(extra))

        promoter = Promoter(settings, store, "test", submit_check=submit_check, poke=lambda names: None)
        promoter._env_run_ended(env, record)
        assert checks == [head]  # the head is checked again
        statuses = gitea.request("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}/statuses/{head}")
        assert [(s["context"], s["status"]) for s in statuses] == [("shipline/env-dev", "pending")]
        promoter._env_run_ended(env, record)  # the same transition again (delivery is at least once)
        assert checks == [head]
    finally:
        store.close()


@pytest.mark.testbed
def test_a_pull_request_a_person_closed_is_not_opened_again_by_a_redelivery(
    home: Path, tmp_path: Path, gitea: GiteaClient, gitea_repo: GiteaRepo
) -> None:
    """The release is handled again (delivery is at least once) after a person closed its pull
    request and before the sweep noticed: the promotion is closed, not proposed a second time."""
    work = tmp_path / "env"
    git = ("git", "-c", "user.name=dev", "-c", "user.email=dev@localhost")
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "manifests").mkdir()
    (work / "manifests" / "hello.yaml").write_text(deployment("hello", "reg.example/hello:1.0.0"))
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "hello 1.0.0"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", gitea_repo.clone_url, "main"], cwd=work, check=True)
    gitea.wait_pushed(f"{gitea_repo.owner}/{gitea_repo.name}")

    settings = load_settings({"SHIPLINE_HOME": str(home), "SHIPLINE_GITEA_URL": gitea.url, "SHIPLINE_GITEA_TOKEN": gitea.token})
    store = SqlStore(settings.database)
    try:
        env = Environment(name="dev", repo=f"{gitea_repo.html_url}.git", namespace="dev", services=["hello"])
        EnvironmentStore(store).put(env, "test")
        promoter = Promoter(settings, store, "test", submit_check=lambda env, head, extra: 0, poke=lambda names: None)
        release = Release("hello", "1.1.0", "v1.1.0", "c" * 40, "reg.example/hello:1.1.0", "", "", "", "", 5)
        pulls = f"/repos/{gitea_repo.owner}/{gitea_repo.name}/pulls"

        opened = promoter.propose(env, release)
        assert opened is not None and opened.state.value == "open" and opened.pr_number
        gitea.request("PATCH", f"{pulls}/{opened.pr_number}", {"state": "closed"})  # a person says no

        again = promoter.propose(env, release)

        assert again is not None and again.id == opened.id
        assert (again.state.value, again.message) == ("closed", "pull request closed unmerged")
        everything = gitea.request("GET", f"{pulls}?state=all")
        assert [(p["number"], p["state"]) for p in everything] == [(opened.pr_number, "closed")], "no second pull request"
        assert promoter.propose(env, release) == again, "and a third delivery changes nothing either"
    finally:
        store.close()
