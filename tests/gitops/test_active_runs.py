"""What an active run of an environment holds back, and what it shows.

A poke (a verified webhook, a promotion's merge) is never lost: while a run of the environment is
active, it waits for the run's end, and the branch's new head is synced then, not at the next poll.
A pull request's dry run changes nothing in the cluster: the environment's status does not call it a sync.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from pathlib import Path

import pytest
from envkit import EnvRepo

from shipline.domain.environments import Environment, Retry
from shipline.domain.runs import INTERRUPTED, RunStatus
from shipline.engine.leases import Lease
from shipline.engine.loading import load_pipeline
from shipline.engine.running import Engine
from shipline.gitops.reconciling import Reconciler
from shipline.gitops.syncing import Action, run_params, status
from shipline.store.environments import EnvironmentStore
from shipline.store.sql import SqlStore


def registered(tmp_path: Path, store: SqlStore, name: str = "dev") -> tuple[EnvRepo, Environment, EnvironmentStore]:
    remote = tmp_path / f"{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    env = Environment.model_validate({"name": name, "repo": str(remote), "namespace": name, "sync": "auto"})
    environments = EnvironmentStore(store)
    environments.put(env, "environments.yaml")
    return EnvRepo(tmp_path / f"work-{name}", str(remote)), env, environments


def started(tmp_path: Path, store: SqlStore, env: Environment, action: Action) -> int:
    definition = tmp_path / f"{action.value}.yaml"
    definition.write_text(f"name: {env.pipeline_name}\ntasks: [{{name: a, steps: [{{run: 'true'}}]}}]\n")
    run_id = store.create_run(load_pipeline(definition), {"action": action.value})
    store.update_run(run_id, status=RunStatus.RUNNING.value)
    return run_id


def test_a_poke_during_a_run_syncs_the_new_head_once_the_run_ends(tmp_path: Path, store: SqlStore, engine: Engine) -> None:
    repo, env, environments = registered(tmp_path, store)
    repo.write("notes.txt", "first")
    first = repo.commit("first state")
    synced: list[str] = []

    def submit(_: Environment, action: Action, revision: str, back: str) -> int:
        assert action is Action.SYNC
        synced.append(revision)
        return 0

    # Polling is off for the test's length: only pokes make it look.
    reconciler = Reconciler(store, environments, engine.secrets, lambda run: tmp_path / str(run), submit, poll_seconds=3600)
    asyncio.run(reconciler.reconcile())
    assert synced == [first]

    # A dry run of the environment is under way when the merge lands and pokes.
    dry_run = started(tmp_path, store, env, Action.DIFF)
    repo.write("notes.txt", "second")
    merged = repo.commit("promote hello to 0.2.0")
    reconciler.poke([env.name])
    asyncio.run(reconciler.reconcile())
    assert synced == [first], "nothing starts beside an active run"

    store.update_run(dry_run, status=RunStatus.SUCCEEDED.value)
    asyncio.run(reconciler.reconcile())
    assert synced == [first, merged]


def test_a_dry_run_is_not_shown_as_a_sync_but_a_sync_is(tmp_path: Path, store: SqlStore) -> None:
    repo, env, environments = registered(tmp_path, store)
    repo.write("notes.txt", "first")
    repo.commit("first state")
    stored = environments.get(env.name)
    dry_run = started(tmp_path, store, env, Action.DIFF)
    shown = status(store, environments, stored, None)
    assert (shown.health, shown.message) == ("Missing", "never synced: run `shipline env sync dev`")
    store.update_run(dry_run, status=RunStatus.SUCCEEDED.value)
    sync = started(tmp_path, store, env, Action.SYNC)
    shown = status(store, environments, stored, None)
    assert (shown.health, shown.message) == ("Progressing", f"a sync is running (run {sync})")


def test_of_two_servers_on_one_store_one_follows_the_branch_and_the_other_takes_over_when_it_stops(
    tmp_path: Path, store: SqlStore, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shipline.gitops")
    repo, env, environments = registered(tmp_path, store)
    repo.write("notes.txt", "first")
    first = repo.commit("first state")
    queued: list[tuple[str, str]] = []

    def reconciler(owner: str) -> Reconciler:
        def submit(_: Environment, action: Action, revision: str, back: str) -> int:
            queued.append((owner, revision))
            return 0  # not in the store yet: as when both look at the same moment

        lease = Lease(store, "gitops-controller", owner)
        return Reconciler(
            store, environments, engine.secrets, lambda run: tmp_path / str(run), submit, poll_seconds=0, lease=lease
        )

    a, b = reconciler("a"), reconciler("b")
    asyncio.run(a.reconcile())
    asyncio.run(b.reconcile())
    assert queued == [("a", first)], "one sync of the new head, by the lease's holder"

    repo.write("notes.txt", "second")
    second = repo.commit("second state")
    stop = asyncio.Event()
    stop.set()
    asyncio.run(a.run(stop))  # a clean stop gives the lease back
    asyncio.run(b.reconcile())
    assert queued == [("a", first), ("b", second)]
    said = [r.getMessage() for r in caplog.records if "GitOps controller" in r.getMessage()]
    assert said == ["this server is now the GitOps controller"] * 2, "each says so as it takes over; b never let go"


def test_a_controller_whose_lease_ran_out_during_a_long_round_stops_acting(
    tmp_path: Path, store: SqlStore, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A round can outlast the lease (an unreachable branch waits for `ls-remote`'s timeout); the server
    that took the lease meanwhile queues the syncs, and the old holder queues none after that."""
    caplog.set_level(logging.INFO, logger="shipline.gitops")
    heads = {}
    for name in ("one", "two"):
        repo, _, environments = registered(tmp_path, store, name)
        repo.write("notes.txt", name)
        heads[name] = repo.commit(f"{name}'s first state")
    queued: list[tuple[str, str]] = []
    b_has_looked = threading.Event()

    def reconciler(owner: str) -> Reconciler:
        def submit(env: Environment, action: Action, revision: str, back: str) -> int:
            queued.append((owner, env.name))
            if owner == "a" and env.name == "one":
                assert b_has_looked.wait(10)  # a slow round: `a` holds no lease by its end
            return 0

        lease = Lease(store, "gitops-controller", owner, seconds=1)
        return Reconciler(
            store, environments, engine.secrets, lambda run: tmp_path / str(run), submit, poll_seconds=0, lease=lease
        )

    a, b = reconciler("a"), reconciler("b")
    a_round = threading.Thread(target=asyncio.run, args=(a.reconcile(),))
    a_round.start()
    while not queued:
        time.sleep(0.01)
    time.sleep(1.1)  # a's lease runs out in the middle of its round
    asyncio.run(b.reconcile())
    b_has_looked.set()
    a_round.join(10)
    assert queued == [("a", "one"), ("b", "one"), ("b", "two")], "two is queued once, by the lease's new holder"
    said = [r.getMessage() for r in caplog.records if "GitOps controller" in r.getMessage()]
    assert said == [
        "this server is now the GitOps controller",
        "this server is now the GitOps controller",
        "this server is no longer the GitOps controller",
    ]


def test_a_sync_cut_short_by_its_engine_dying_is_queued_again_once(tmp_path: Path, store: SqlStore, engine: Engine) -> None:
    """A server killed in the middle of a sync leaves the cluster half way: that sync did not fail, it
    was cut short (`interrupted`), and the controller syncs the same commit again, once; a sync
    that failed on its own is not tried again for the same commit."""
    repo, env, environments = registered(tmp_path, store)
    repo.write("notes.txt", "first")
    head = repo.commit("first state")
    queued: list[int] = []

    def submit(_: Environment, action: Action, revision: str, back: str) -> int:
        assert (action, revision) == (Action.SYNC, head)
        run_id = started(tmp_path, store, env, Action.SYNC)
        store.update_run(run_id, params={**run_params(Action.SYNC, revision=revision)})
        queued.append(run_id)
        return run_id

    reconciler = Reconciler(store, environments, engine.secrets, lambda run: tmp_path / str(run), submit, poll_seconds=0)
    asyncio.run(reconciler.reconcile())
    (first,) = queued
    # Its engine dies; a live one ends the run as recovery does.
    store.update_run(
        first, status=RunStatus.FAILED.value, message=f"{INTERRUPTED}the engine (pid 4242 on h) stopped during the run"
    )
    asyncio.run(reconciler.reconcile())
    assert len(queued) == 2, "the same commit is synced again"
    (entry,) = environments.history(env.name, 1)
    assert (entry.run_id, entry.commit) == (first, head), "the history names the commit the cut-short sync was for"

    store.update_run(queued[1], status=RunStatus.FAILED.value, message="task apply failed")
    for _ in range(2):
        asyncio.run(reconciler.reconcile())
    assert len(queued) == 2, "a sync that failed by itself waits for a new commit"


def test_a_failed_sync_is_tried_again_as_retry_says_then_waits_for_a_new_commit(
    tmp_path: Path, store: SqlStore, engine: Engine
) -> None:
    """`retry: {limit: 2, backoff: 0.5s}`: the head's sync fails (a clone that timed out, a cluster
    restarting); the controller syncs the same commit again 0.5 s later, then 1 s after the second
    failure, then no more: a new commit is needed."""
    repo, env, environments = registered(tmp_path, store)
    env = env.model_copy(update={"retry": Retry(limit=2, backoff=0.5)})
    environments.put(env, "environments.yaml")
    repo.write("notes.txt", "first")
    head = repo.commit("first state")
    queued: list[tuple[int, str, float]] = []

    def submit(_: Environment, action: Action, revision: str, back: str) -> int:
        assert action is Action.SYNC
        run_id = started(tmp_path, store, env, Action.SYNC)
        store.update_run(run_id, params={**run_params(Action.SYNC, revision=revision)})
        queued.append((run_id, revision, time.monotonic()))
        return run_id

    reconciler = Reconciler(store, environments, engine.secrets, lambda run: tmp_path / str(run), submit, poll_seconds=3600)

    async def looking(until: float) -> None:
        while time.monotonic() < until:
            await reconciler.reconcile()
            await asyncio.sleep(0.05)

    asyncio.run(reconciler.reconcile())
    failed_at = []
    for attempt in range(3):
        assert len(queued) == attempt + 1, f"try {attempt + 1} was queued"
        store.update_run(queued[-1][0], status=RunStatus.FAILED.value, message="task clone failed: timed out")
        failed_at.append(time.monotonic())
        if attempt == 0:
            asyncio.run(reconciler.reconcile())  # the failure goes into the history
            said = status(store, environments, environments.get(env.name), None).message
            assert "; tried again " in said and said.endswith("(retry 1 of 2)"), said
        asyncio.run(looking(failed_at[-1] + 2.5))
    assert len(queued) == 3, "two retries, then a new commit is needed"
    waits = [queued[1][2] - failed_at[0], queued[2][2] - failed_at[1]]
    assert 0.5 <= waits[0] < 1.0 <= waits[1] < 2.0, waits
    assert [e.outcome.value for e in environments.history(env.name, 10)] == ["failed"] * 3

    repo.write("notes.txt", "second")
    newer = repo.commit("second state")
    reconciler.poke([env.name])
    asyncio.run(reconciler.reconcile())
    assert [revision for _, revision, _ in queued] == [head, head, head, newer]
