"""The environments store: declarations replaced on re-apply, history newest first."""

from __future__ import annotations

from shipline.domain.environments import Environment, Outcome
from shipline.store.environments import EnvironmentStore
from shipline.store.sql import SqlStore


def dev(**changes: object) -> Environment:
    return Environment.model_validate({"name": "dev", "repo": "http://127.0.0.1:1/org/env.git", "namespace": "dev", **changes})


def test_put_registers_then_replaces(store: SqlStore) -> None:
    envs = EnvironmentStore(store)
    assert envs.put(dev(), "/srv/envs.yaml") is True
    assert envs.put(dev(**{"self-heal": True, "verify-timeout": "1m"}), "/srv/envs.yaml") is False
    (stored,) = envs.all()
    assert stored.environment.self_heal is True
    assert stored.environment.verify_timeout == 60.0
    assert stored.updated_at >= stored.created_at


def test_history_knows_the_applied_and_the_verified_commits(store: SqlStore) -> None:
    envs = EnvironmentStore(store)
    envs.put(dev(), "f")
    envs.record("dev", action="sync", run_id=1, commit="a" * 40, applied_commit="a" * 40, outcome=Outcome.VERIFIED, verified=True)
    envs.record(
        "dev",
        action="sync",
        run_id=2,
        commit="b" * 40,
        applied_commit="",
        outcome=Outcome.FAILED,
        verified=False,
        message="render failed",
    )
    envs.record(
        "dev",
        action="sync",
        run_id=3,
        commit="c" * 40,
        applied_commit="a" * 40,
        outcome=Outcome.ROLLED_BACK,
        verified=False,
        rolled_back_to="a" * 40,
    )
    entries = envs.history("dev")
    assert [e.run_id for e in entries] == [3, 2, 1]
    assert entries[0].outcome == Outcome.ROLLED_BACK and entries[0].rolled_back_to == "a" * 40
    last = envs.last_applied("dev")
    assert last is not None and last.applied_commit == "a" * 40
    assert envs.verified_commits("dev") == ["a" * 40]
    entry = envs.entry_of_run(2)
    assert entry is not None and entry.message == "render failed"
    assert envs.history("other") == []


def test_drift_is_cleared_by_the_next_applied_sync(store: SqlStore) -> None:
    envs = EnvironmentStore(store)
    envs.put(dev(), "f")
    envs.set_drift("dev", "Deployment dev/hello: spec.replicas changed by hand")
    assert envs.get("dev").drift.startswith("Deployment")
    envs.record("dev", action="sync", run_id=1, commit="a", applied_commit="a", outcome=Outcome.VERIFIED, verified=True)
    assert envs.get("dev").drift == ""


def test_a_run_is_recorded_once_whoever_records_it(store: SqlStore) -> None:
    envs = EnvironmentStore(store)
    envs.put(dev(), "f")
    first = envs.record("dev", action="sync", run_id=7, commit="a", applied_commit="a", outcome=Outcome.VERIFIED, verified=True)
    again = envs.record("dev", action="sync", run_id=7, commit="a", applied_commit="a", outcome=Outcome.VERIFIED, verified=True)
    assert again.id == first.id and len(envs.history("dev")) == 1
    sql = SqlStore(store.url)  # another process's store on the same database
    try:
        other = EnvironmentStore(sql)
        assert (
            other.record(
                "dev", action="sync", run_id=7, commit="a", applied_commit="a", outcome=Outcome.VERIFIED, verified=True
            ).id
            == first.id
        )
    finally:
        sql.close()
