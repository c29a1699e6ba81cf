"""The GitOps controller inside `shipline serve`: environments follow their branches and heal.

For every registered environment it

- syncs, when `sync: auto`, each new head of the branch: found by polling
  (`git ls-remote`, every `env_poll_seconds`) or at once when a verified
  webhook for the repository pokes it;
- watches the objects the last sync applied (a Kubernetes watch per kind,
  label-selected, not a poll of everything) and, when one drifts from the
  rendered state (a hand edit, a deletion), marks the environment OutOfSync
  with what changed, and with `self-heal: true` applies the same commit again;
- writes each finished environment run into the history, whoever started it.

With several servers on one store, one of them does all of this: the one that
holds the controller's lease (`engine.leases`); the others take over when it stops
or its lease runs out.

Runs go through the engine like any other (a concurrency group per
environment keeps them apart); this loop only decides when to start one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipline.domain.environments import (
    Environment,
    FieldChange,
    HistoryEntry,
    Outcome,
    diff_fields,
    failed_in_a_row,
    retry_wait,
)
from shipline.domain.objects import ObjectRef, ref_of
from shipline.domain.runs import RunStatus
from shipline.engine.events import Event, EventBus, Listener
from shipline.engine.leases import Lease
from shipline.exceptions import NotFound, ShiplineError
from shipline.gitops.syncing import Action, active_run, record_unrecorded
from shipline.integrations.clusterobjects import Desired, Target
from shipline.integrations.clusters import Cluster
from shipline.integrations.watching import ObjectWatch
from shipline.store.environments import EnvironmentStore, StoredEnvironment
from shipline.store.secrets import SecretStore
from shipline.store.sql import SqlStore
from shipline.triggers.polling import ls_remote

log = logging.getLogger("shipline.gitops")

MIN_GAP = 0.1
"""Seconds between the starts of two rounds, at the least, however often runs end."""

Submit = Callable[[Environment, Action, str, str], int]
"""(environment, action, revision, last verified commit) -> the id of the queued run."""


@dataclass
class _Watched:
    run_id: int
    commit: str
    cluster: Cluster
    desired: dict[ObjectRef, Desired]
    watch: ObjectWatch | None = None
    drift: dict[ObjectRef, str] = field(default_factory=dict)


class Reconciler:
    def __init__(
        self,
        sql: SqlStore,
        store: EnvironmentStore,
        secrets: SecretStore,
        workspace: Callable[[int], Path],
        submit: Submit,
        *,
        poll_seconds: float = 30.0,
        tick: float = 1.0,
        lease: Lease | None = None,
    ) -> None:
        self.sql = sql
        self.store = store
        self.secrets = secrets
        self.workspace = workspace
        self.submit = submit
        self.poll_seconds = poll_seconds
        self.tick = tick
        self.lease = lease
        """Held while this process is the one of several on the store that reconciles (None: it is the only one)."""
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poked: set[str] = set()
        self._checked: dict[str, float] = {}
        self._attempted: dict[str, str] = {}
        self._healing: dict[str, int] = {}
        self._busy: set[str] = set()
        self._recorded: set[str] = set()
        self._confirming: set[asyncio.Task[None]] = set()
        self._watches: dict[str, _Watched] = {}
        self._retry_at: dict[str, float] = {}
        """When (monotonic) to look at an environment's branch again: a failed sync's retry is due then."""
        self._resynced: set[int] = set()
        """Runs of a sync cut short (`RunRecord.interrupted`) whose commit was queued again."""
        self._controlling = False

    # --- from outside ---------------------------------------------------------------------

    def poke(self, names: Sequence[str]) -> None:
        """Check these environments' branches now (a webhook said they changed)."""
        self._poked.update(names)
        if self._loop is not None:
            with suppress(RuntimeError):  # the server's loop has closed: it is shutting down
                self._loop.call_soon_threadsafe(self._wake.set)

    def follow(self, bus: EventBus) -> Listener:
        """Look again as soon as a run ends: its outcome goes into the history without waiting for a
        tick (until the listener is closed; called on the loop that runs `run`)."""
        done = {s.value for s in RunStatus if s.done}

        def ended(event: Event) -> None:
            if event.data.get("status") in done:
                self._wake.set()

        return bus.listen(ended, kinds=frozenset({"run"}))

    # --- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                began = self._loop.time()
                try:
                    await self.reconcile()
                except Exception:  # one bad round must not end the controller
                    log.exception("reconcile failed")
                self._wake.clear()
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=self.tick, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                # A stream of runs ending wakes it faster than rounds are worth: MIN_GAP between starts.
                if (rest := began + MIN_GAP - self._loop.time()) > 0 and not stop.is_set():
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rest)
        finally:
            await asyncio.to_thread(self._let_go)
            if self.lease is not None:
                with suppress(Exception):  # the store is going away too: the lease runs out instead
                    await asyncio.to_thread(self.lease.release)

    async def reconcile(self) -> None:
        if not await self._in_control():
            return
        environments = await asyncio.to_thread(self.store.all)
        names = {s.name for s in environments}
        for name in [n for n in self._watches if n not in names]:
            await asyncio.to_thread(self._unwatch, name)
        for stored in environments:
            # A round can outlast the lease (a branch unreachable until `ls-remote` times out):
            # looking before each environment renews it, and stops acting once another server took it.
            if not await self._in_control():
                return
            try:
                await self._one(stored)
            except ShiplineError as exc:
                log.warning("environment not reconciled", extra={"environment": stored.name, "error": str(exc)})

    async def _in_control(self) -> bool:
        """Whether this process is the controller now (always, without a lease); one that has just
        lost the lease lets go of what it watched and knew."""
        if self.lease is None:
            return True
        held = await asyncio.to_thread(self.lease.held)
        if held != self._controlling:
            self._controlling = held
            log.info("this server %s the GitOps controller", "is now" if held else "is no longer")
            if not held:
                await asyncio.to_thread(self._let_go)  # another server reconciles now
        return held

    async def _one(self, stored: StoredEnvironment) -> None:
        env = stored.environment
        active = await asyncio.to_thread(active_run, self.sql, env)
        if env.name not in self._recorded or (active is None and env.name in self._busy):
            # A run of it ended (or the server just started): its outcome goes into the history.
            await asyncio.to_thread(record_unrecorded, self.sql, self.store, env)
            self._recorded.add(env.name)
            if env.retry.limit and active is None:
                self._retry_at[env.name] = 0.0  # a look at the branch now: a sync that failed is due for a retry
        if active is None:
            self._busy.discard(env.name)
            self._healing.pop(env.name, None)
        else:
            self._busy.add(env.name)
        now = time.monotonic()
        due = now - self._checked.get(env.name, -1e9) >= self.poll_seconds or now >= self._retry_at.get(env.name, float("inf"))
        # While a run of it is active (a sync, a dry run), a poke waits: the run's end wakes this loop.
        if env.sync == "auto" and (env.name in self._poked or due) and active is None:
            self._poked.discard(env.name)
            self._retry_at.pop(env.name, None)
            self._checked[env.name] = now
            await self._follow_branch(env)
        await asyncio.to_thread(self._keep_watch, env)

    async def _follow_branch(self, env: Environment) -> None:
        try:
            refs = await ls_remote(env.repo, timeout=30)
        except ShiplineError as exc:
            log.warning("branch head unreadable", extra={"environment": env.name, "error": str(exc)})
            return
        head = refs.get(f"refs/heads/{env.branch}", "")
        if not head:
            return
        history = await asyncio.to_thread(self.store.history, env.name, env.retry.limit + 1)
        last = history[0] if history else None
        # A sync of the head whose engine died under it (a server killed mid-apply) did not fail:
        # it was cut short, and the cluster may be half way. It is synced again, once.
        again = last is not None and last.commit == head and await asyncio.to_thread(self._cut_short, last)
        # A sync of the head that failed is tried again as its `retry:` says: now, or at a look set for then.
        wait = None if again or last is None or last.commit != head else retry_wait(history, head, env.retry, datetime.now(UTC))
        retrying = wait == 0
        if wait:
            self._retry_at[env.name] = time.monotonic() + wait
        if not again and not retrying and (self._attempted.get(env.name) == head or (last is not None and last.commit == head)):
            self._attempted[env.name] = head  # tried already (verified, or failed: a new commit is needed)
            return
        if not await self._in_control():
            return  # the lease ran out while `ls-remote` waited: the new controller queues it
        verified = await asyncio.to_thread(self.store.verified_commits, env.name)
        run_id = await asyncio.to_thread(self.submit, env, Action.SYNC, head, verified[0] if verified else "")
        self._attempted[env.name] = head
        self._busy.add(env.name)
        if retrying:
            log.info(
                "environment sync tried again after it failed",
                extra={"environment": env.name, "commit": head, "run": run_id, "retry": failed_in_a_row(history, head)},
            )
        elif again and last is not None and last.run_id is not None:
            self._resynced.add(last.run_id)
            log.info(
                "environment sync queued again: the last one was cut short (its engine stopped)",
                extra={"environment": env.name, "commit": head, "run": run_id, "cut_short": last.run_id},
            )
        else:
            log.info("environment sync queued", extra={"environment": env.name, "commit": head, "run": run_id})

    def _cut_short(self, entry: HistoryEntry) -> bool:
        """Whether the entry is of a sync whose engine died under it, not synced again yet.

        Asked at every look at the branch: only a failed sync's run is read (the usual last entry,
        a verified one, costs nothing)."""
        if entry.outcome != Outcome.FAILED or entry.action != Action.SYNC.value or entry.run_id is None:
            return False
        if entry.run_id in self._resynced:
            return False
        try:
            return self.sql.get_run(entry.run_id).interrupted
        except NotFound:  # pruned
            return False

    def _let_go(self) -> None:
        """Stop watching and forget what this process knew: whoever holds the lease next starts afresh."""
        for name in list(self._watches):
            self._unwatch(name)
        self._recorded.clear()
        self._busy.clear()
        self._healing.clear()
        self._attempted.clear()
        self._checked.clear()
        self._retry_at.clear()

    # --- drift ------------------------------------------------------------------------------

    def _keep_watch(self, env: Environment) -> None:
        """Watch the state the last applying run left (restarted when another run applies)."""
        last = self.store.last_applied(env.name)
        if last is None or last.run_id is None:
            self._unwatch(env.name)
            return
        current = self._watches.get(env.name)
        if current is not None and current.run_id == last.run_id:
            return
        if env.name in self._busy:
            return  # start watching once the run under way is over
        self._unwatch(env.name)
        rendered = self.workspace(last.run_id) / ("previous-rendered" if last.outcome == Outcome.ROLLED_BACK else "rendered")
        if not rendered.is_dir():
            return  # the run's workspace was pruned: nothing to compare with until the next sync
        secret = env.kubeconfig_secret
        if self.secrets.missing([secret]):
            return
        fd, name = tempfile.mkstemp(prefix=f"shipline-{env.name}-", suffix=".kubeconfig")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(self.secrets.reveal([secret])[secret])
            cluster = Cluster.connect(Path(name), environment=env.name, target=Target(env.namespace, env.cluster))
        finally:
            os.unlink(name)  # read: the credentials stay on disk no longer than that
        desired = cluster.load(rendered)
        watched = _Watched(last.run_id, last.applied_commit, cluster, {d.ref: d for d in desired})
        watch = ObjectWatch(cluster, [d.kind for d in desired], lambda kind, obj: self._seen(env.name, watched, kind, obj))
        watched.watch = watch
        self._watches[env.name] = watched
        watch.start()
        log.info("watching for drift", extra={"environment": env.name, "objects": len(desired), "commit": last.applied_commit})

    def _unwatch(self, name: str) -> None:
        watched = self._watches.pop(name, None)
        if watched is not None and watched.watch is not None:
            watched.watch.stop()

    def _seen(self, name: str, watched: _Watched, kind: str, obj: dict[str, Any]) -> None:
        """A watch event (in the watch's thread): compare the object with what was applied."""
        ref = ref_of(obj)
        item = watched.desired.get(ref)
        if item is None:
            return
        want = item.body
        if kind == "DELETED":
            what = f"{ref} was deleted"
        else:
            # As a change made to the applied state: applied value -> live value.
            changes = [FieldChange(c.path, c.new, c.old) for c in diff_fields(want, obj)]
            what = f"{ref}: " + "; ".join(str(c) for c in changes[:3]) if changes else ""
        if self._loop is not None:
            with suppress(RuntimeError):  # the server's loop has closed: it is shutting down
                self._loop.call_soon_threadsafe(self._drifted, name, watched, ref, what)

    def _drifted(self, name: str, watched: _Watched, ref: ObjectRef, what: str) -> None:
        if self._watches.get(name) is not watched or name in self._busy:
            return  # an old watch, or our own run changing things
        if what and not what.endswith(" was deleted"):
            # A value the server normalises (cpu: 0.5 reads back as 500m) looks changed: the cluster confirms.
            task = asyncio.get_running_loop().create_task(self._confirm(name, watched, ref, what))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)
            return
        self._mark(name, watched, ref, what)

    async def _confirm(self, name: str, watched: _Watched, ref: ObjectRef, what: str) -> None:
        try:
            found = await asyncio.to_thread(watched.cluster.drifted, [watched.desired[ref]])
        except ShiplineError as exc:
            log.warning("drift not confirmed", extra={"environment": name, "error": str(exc)})
            return
        self._mark(name, watched, ref, what if found else "")

    def _mark(self, name: str, watched: _Watched, ref: ObjectRef, what: str) -> None:
        if self._watches.get(name) is not watched or name in self._busy:
            return
        if what:
            watched.drift[ref] = what
        else:
            watched.drift.pop(ref, None)
        message = "; ".join(watched.drift[r] for r in sorted(watched.drift))
        self.store.set_drift(name, message[:2000])
        if not message:
            return
        log.info("drift", extra={"environment": name, "drift": message})
        stored = self.store.get(name)
        if stored.environment.self_heal and name not in self._healing and (self.lease is None or self.lease.held()):
            verified = self.store.verified_commits(name)
            back = watched.commit if watched.commit in verified else (verified[0] if verified else "")
            run_id = self.submit(stored.environment, Action.SYNC, watched.commit, back)
            self._healing[name] = run_id
            self._busy.add(name)
            log.info("self-heal queued", extra={"environment": name, "commit": watched.commit, "run": run_id})
