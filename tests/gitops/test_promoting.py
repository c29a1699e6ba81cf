"""Promotion's decisions that need no forge: which run is a release, which version is newer, which
environments a release goes to first (the rest of the chain gets it once verified)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shipline.domain.environments import Environment
from shipline.domain.runs import RunTransition
from shipline.gitops.promoting import Promoter, Release, _newer
from shipline.settings import Settings
from shipline.store.environments import EnvironmentStore
from shipline.store.sql import SqlStore

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
