"""From an event in a repository to runs: the one path webhooks, the poller and cron share.

Order matters and is the same for every source: record the delivery (a
redelivery stops here), pick the first rule that fires, load the pipeline,
apply the concurrency policy, submit.  Values from the event reach the run
only as params and as the trigger record: data, never code or paths.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shipline.domain.pipelines import ResolvedPipeline
from shipline.domain.urls import public_url
from shipline.engine.events import Event, EventBus
from shipline.engine.loading import MAX_DEFINITION_BYTES, load_pipeline, recording_reads
from shipline.engine.processes import owner_alive
from shipline.engine.running import Engine
from shipline.exceptions import DefinitionError, ShiplineError
from shipline.server.observing import Metrics
from shipline.server.sourcing import FROM_REPOSITORY, RepoPipelines
from shipline.store.repositories import Claim, Repository, ServerStore
from shipline.triggers.events import EventKind, ForgeEvent
from shipline.triggers.matching import Match, concurrency_key, event_params, match
from shipline.triggers.rules import DEFAULT_RULES, Concurrency, TriggerRule

log = logging.getLogger("shipline.server.dispatch")


@dataclass(frozen=True)
class Outcome:
    result: str
    """started | ignored | duplicate | ping | error"""
    run_ids: list[int] = field(default_factory=list)
    message: str = ""


class PipelineCache:
    """Parsed pipeline files, by content: a file (and every file it uses) is parsed once per content.

    A broken file is remembered too, so a GET that lists pipelines does not
    parse it again and again.  Safe to share between threads.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root.resolve() if root is not None else None
        """The server's pipelines folder: a file in it may use files anywhere in it, no further."""
        self._lock = threading.Lock()
        # path -> the files its last load read, with their digests, and what came of it
        self._cache: dict[Path, tuple[dict[Path, str], ResolvedPipeline | DefinitionError]] = {}

    def load(self, path: str) -> ResolvedPipeline:
        p = Path(path)
        with self._lock:
            hit = self._cache.get(p)
            if hit is None or any(_digest(f) != d for f, d in hit[0].items()):
                with recording_reads() as files:
                    try:
                        inside = self.root is not None and p.resolve().is_relative_to(self.root)
                        outcome: ResolvedPipeline | DefinitionError = load_pipeline(p, root=self.root if inside else None)
                    except DefinitionError as exc:
                        outcome = exc
                hit = ({f: _digest(f) for f in files}, outcome)
                self._cache[p] = hit
        if isinstance(hit[1], DefinitionError):
            raise hit[1]
        return hit[1]


def _digest(path: Path) -> str:
    """What the file holds, as far as the cache cares: a hash of its bytes (a file too large is not read)."""
    try:
        if path.stat().st_size > MAX_DEFINITION_BYTES:
            return f"too large: {path.stat().st_size}"
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.__class__.__name__}"


def _claimant_dead(owner: str, claimed_at: datetime) -> bool:
    """A claim's server is gone: a dead process on this host, or another host's claim over a minute old."""
    return not owner_alive(owner, claimed_at, datetime.now(UTC))


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        state: ServerStore,
        bus: EventBus,
        metrics: Metrics,
        cancel: Callable[[int], object],
        wake: Callable[[], None],
        repo_pipelines: RepoPipelines | None = None,
    ) -> None:
        self.engine = engine
        self.cancel = cancel
        self.wake = wake
        self.state = state
        self.bus = bus
        self.metrics = metrics
        self.pipelines = PipelineCache(engine.settings.pipelines)
        self.repo_pipelines = repo_pipelines or RepoPipelines(engine.settings)
        self.loop: asyncio.AbstractEventLoop | None = None
        """The server's loop, whose bus `notify` publishes on."""

    def rules_for(self, repo: Repository) -> list[TriggerRule]:
        return [t.rule for t in self.state.list_triggers(repo.id)] or list(DEFAULT_RULES)

    def dispatch(
        self,
        repo: Repository,
        event: ForgeEvent,
        source: str,
        delivery_id: str,
        rule: tuple[int, TriggerRule] | None = None,
    ) -> Outcome:
        """Start what this event should start, exactly once per delivery id.

        `rule` names the rule directly (a schedule that came due) instead of matching.
        """
        claim = self.state.claim_delivery(source, delivery_id, repo.id, event.kind.value, self.engine.owner, _claimant_dead)
        if claim is Claim.SEEN:
            log.info("redelivery ignored", extra={"source": source, "delivery": delivery_id, "repository": repo.name})
            return Outcome("duplicate", message=f"delivery {delivery_id} was already handled; nothing started")
        if claim is Claim.ORPHANED and (started := self.state.runs_of_delivery(source, delivery_id)):
            self.state.finish_delivery(source, delivery_id, "started", started)
            runs = ", ".join(map(str, started))
            return Outcome(
                "duplicate",
                started,
                f"delivery {delivery_id} had started run {runs} before a server stopped; nothing new started",
            )
        if event.kind is EventKind.PING:
            self.state.finish_delivery(source, delivery_id, "ping", [])
            return Outcome("ping", message=f"pong: repository {repo.name!r} is registered")
        try:
            outcome = self._start(repo, event, source, delivery_id, rule)
        except ShiplineError as exc:
            # Our side failed (a broken pipeline file, bad params): let the forge's redelivery retry it.
            self.state.forget_delivery(source, delivery_id)
            log.warning(
                "delivery failed", extra={"source": source, "delivery": delivery_id, "repository": repo.name, "error": str(exc)}
            )
            raise
        self.state.finish_delivery(source, delivery_id, outcome.result, outcome.run_ids)
        return outcome

    def _start(
        self, repo: Repository, event: ForgeEvent, source: str, delivery_id: str, rule: tuple[int, TriggerRule] | None
    ) -> Outcome:
        if rule is not None:
            index, fixed = rule
            matches = [Match(index, fixed, {**event_params(event, public_url(repo.url)), **fixed.params})]
        else:
            matches = match(self.rules_for(repo), event, public_url(repo.url))
        if not matches:
            what = event.kind.value + (f" to {event.branch}" if event.branch else "") + (f" of {event.tag}" if event.tag else "")
            return Outcome("ignored", message=f"no trigger rule of {repo.name!r} fires for this {what}")
        chosen = matches[0]  # the first rule that fires decides: one event, one run
        if repo.pipeline == FROM_REPOSITORY:
            pipeline = self.repo_pipelines.load(repo, event.sha or event.branch or event.tag or repo.default_branch)
        else:
            pipeline = self.pipelines.load(repo.pipeline)
        params = {k: v for k, v in chosen.params.items() if k in pipeline.params}
        key = concurrency_key(pipeline.name, event)
        trigger: dict[str, object] = {
            **event.summary(),
            "source": source,
            "delivery": delivery_id,
            "repository_id": repo.id,
            "repository_name": repo.name,
            "rule": chosen.rule_index,
            "concurrency": chosen.rule.concurrency.value,
            "concurrency_key": key,
        }
        if event.pr_from_fork:
            trigger["secrets"] = "withheld"  # its code (and pipeline file) is anyone's: see engine/running.py
        cancelled = []
        if chosen.rule.concurrency is Concurrency.CANCEL:
            for run_id, other in self.state.active_runs(pipeline.name):
                if isinstance(other, dict) and other.get("concurrency_key") == key:
                    self.cancel(run_id)
                    self.notify(run_id)
                    cancelled.append(run_id)
        # A rule's `queue` or `cancel` keeps runs of one branch (PR, tag) from overlapping, as a
        # pipeline's own `concurrency:` group does; the pipeline's group, if it has one, wins.
        group = key if chosen.rule.concurrency is not Concurrency.PARALLEL else None
        run_id = self.engine.submit(pipeline, params, trigger=trigger, fallback_group=group)
        self.wake()
        self.notify(run_id, "queued", pipeline.name)
        self.metrics.runs_started.labels(source).inc()
        log.info(
            "run queued",
            extra={
                "run": run_id,
                "pipeline": pipeline.name,
                "source": source,
                "delivery": delivery_id,
                "repository": repo.name,
                "event": event.kind.value,
                "cancelled": cancelled,
            },
        )
        message = f"run {run_id} of {pipeline.name} queued"
        if cancelled:
            message += f"; cancelled older run{'s' if len(cancelled) > 1 else ''} {', '.join(map(str, cancelled))}"
        return Outcome("started", [run_id], message)

    def notify(self, run_id: int, status: str | None = None, pipeline: str | None = None) -> None:
        """Tell live views a run appeared or was cancelled outside the engine's driver."""
        if status is None or pipeline is None:
            try:
                record = self.engine.store.get_run(run_id)
            except ShiplineError:
                return
            status, pipeline = record.status.value, record.pipeline
        if self.bus.has_subscribers:
            event = Event(run_id, "run", {"status": status, "pipeline": pipeline})
            # The bus belongs to the server's loop; webhooks, API routes and the poller call from threads.
            loop = self.loop
            if loop is None or _running_loop() is loop:
                self.bus.publish(event)
            else:
                with suppress(RuntimeError):  # the loop is closing
                    loop.call_soon_threadsafe(self.bus.publish, event)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
