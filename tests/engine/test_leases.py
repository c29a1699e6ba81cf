"""One process of several on a store does a leased job; another takes over when it stops or dies."""

from __future__ import annotations

import socket
import subprocess
import time

from shipline.engine.leases import Lease
from shipline.engine.processes import owner_id
from shipline.executors.cgroups import process_start_time
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


def test_a_holder_that_died_on_this_host_does_not_keep_the_lease(store: SqlStore) -> None:
    """A server killed and started again controls at once, not when its old lease runs out."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        holder = f"{socket.gethostname()}:{child.pid}:{process_start_time(child.pid)}"
        assert Lease(store, "controller", holder).held()
        restarted = Lease(store, "controller", owner_id())
        assert not restarted.held(), "its holder still runs"
    finally:
        child.kill()
        child.wait()
    assert restarted.held(), "its holder is gone"


def test_a_holder_on_another_host_keeps_the_lease_until_it_runs_out(store: SqlStore) -> None:
    assert Lease(store, "controller", "elsewhere.example:1:1").held()
    assert not Lease(store, "controller", owner_id()).held()
