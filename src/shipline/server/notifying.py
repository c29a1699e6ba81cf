"""Commit statuses on the forge for pull-request runs: pending when they start, the outcome when they end.

The server reads the outbox (`engine/outbox.py`) with a cursor of its own,
`commit-statuses`: every run transition, in order, durable before anyone is
told.  A server killed between "the run failed" and "the status was set" sets
it after it restarts; several servers on one PostgreSQL store share the
cursor's lease, so one of them posts.  `handle(transition)` is the whole job
for one transition: work out the status (`triggers/statuses.py`, pure) and
set it on the pull request's head.  Delivery is at least once, and setting a
status is idempotent.

A forge that cannot be reached (or answers 5xx) keeps the cursor where it is
and is tried again at the next poll, so statuses land in order; a forge that
refuses for good (4xx: a deleted repository, a token without the scope) is
logged and skipped, so one bad repository does not hold back every other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from shipline.domain.runs import RunStatus, RunTransition
from shipline.engine import outbox
from shipline.engine.events import EventBus
from shipline.engine.outbox import OutboxReader
from shipline.exceptions import ForgeError, NotFound
from shipline.integrations.forges import CommitState, Forge, connect, repo_ref, serves
from shipline.settings import Settings
from shipline.store.repositories import ServerStore
from shipline.store.sql import SqlStore
from shipline.triggers.statuses import StatusUpdate, commit_status

log = logging.getLogger("shipline.server.notify")
CONSUMER = "commit-statuses"
RETRY_SECONDS = 5.0


@dataclass
class CommitStatuses:
    settings: Settings
    sql: SqlStore
    state: ServerStore
    owner: str
    """This process, as the holder of the cursor's lease."""
    forge_for: Callable[[str], Forge] | None = None

    def update_for(self, transition: RunTransition) -> StatusUpdate | None:
        """The status a run transition calls for, if any."""
        if transition.kind != "run":
            return None
        results = transition.data.get("results")
        return commit_status(
            run_id=transition.run_id,
            pipeline=transition.pipeline,
            status=RunStatus(transition.status),
            trigger=transition.trigger,
            server_url=self.settings.server_url,
            message=str(transition.data.get("message") or ""),
            results={str(k): str(v) for k, v in results.items()} if isinstance(results, dict) else {},
        )

    def handle(self, transition: RunTransition) -> None:
        """Set the status this transition calls for, if any.

        Raises ForgeError when the forge could not be reached or failed on its side (try again later)."""
        update = self.update_for(transition)
        if update is None:
            return
        try:
            self.post(update)
        except ForgeError as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise
            log.warning("commit status refused; skipped", extra={"run": transition.run_id, "error": str(exc)})

    def post(self, update: StatusUpdate) -> None:
        try:
            repo = self.state.get_repository(str(update.repository_id))
        except NotFound:
            return  # the repository was removed since the run started
        if repo.forge not in ("gitea", "github") or not serves(self.settings, repo.forge, repo.url):
            return  # no token for this repository's forge: nothing to report with
        forge = self.forge_for(repo.forge) if self.forge_for else connect(self.settings, repo.forge)
        try:
            forge.set_status(
                repo_ref(repo.url),
                update.sha,
                state=CommitState(update.state),
                context=update.context,
                description=update.description,
                target_url=update.target_url,
            )
        finally:
            forge.close()
        log.info(
            "commit status set",
            extra={"repository": repo.name, "sha": update.sha, "context": update.context, "state": update.state},
        )

    async def follow(self, bus: EventBus, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Read the outbox until `stop`: at once when a run event is published here, else every `poll_seconds`."""
        reader = OutboxReader(self.sql, CONSUMER, self.owner, kind="run")
        await outbox.follow(
            reader,
            self.handle,
            bus,
            stop,
            name="commit statuses",
            poll_seconds=poll_seconds,
            retry_seconds=RETRY_SECONDS,
            transient=(ForgeError,),
        )
