"""One process of several on a store does a leased job; another takes over when it stops or dies."""

from __future__ import annotations

import time

from shipline.engine.leases import Lease
from shipline.store.sql import SqlStore


def test_one_holder_at_a_time_and_the_next_takes_over_on_release(store: SqlStore) -> None:
    first, second = Lease(store, "controller", "server-a"), Lease(store, "controller", "server-b")
    assert first.held()
    assert not second.held(), "the first holds it"
    assert first.held(), "kept by its holder"
    first.release()
    assert second.held(), "given back: the next look takes it"
    assert not first.held()


def test_a_holder_that_stops_renewing_loses_the_lease_when_it_runs_out(store: SqlStore) -> None:
    dead = Lease(store, "controller", "server-a", seconds=0.3)  # its process dies: it never asks again
    alive = Lease(store, "controller", "server-b", seconds=0.3)
    assert dead.held()
    assert not alive.held()
    time.sleep(0.4)
    assert alive.held()


def test_leases_of_other_jobs_do_not_exclude_each_other(store: SqlStore) -> None:
    assert Lease(store, "controller", "server-a").held()
    assert Lease(store, "sweeper", "server-b").held()
