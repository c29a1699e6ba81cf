"""Commit statuses on the forge for pull-request runs: pending when they start, the outcome when they end.

`post_commit_status(run_id)` is the whole job for one run: read the run as it
is now, work out its status (`triggers/statuses.py`, pure), and set it on the
pull request's head commit.  It is idempotent (it always posts the run's
current state, so a late or repeated call does no harm) and is driven, for
now, by the run events of the server's bus; a durable outbox can call the
same function instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from shipline.engine.events import EventBus
from shipline.exceptions import ShiplineError
from shipline.integrations.forges import CommitState, Forge, connect, has_token, repo_ref
from shipline.settings import Settings
from shipline.store.repositories import ServerStore
from shipline.store.sql import SqlStore
from shipline.triggers.statuses import StatusUpdate, commit_status

log = logging.getLogger("shipline.server.notify")
POSTED_MEMORY = 10_000


@dataclass
class CommitStatuses:
    settings: Settings
    sql: SqlStore
    state: ServerStore
    forge_for: Callable[[str], Forge] | None = None
    _posted: OrderedDict[int, tuple[str, str]] = field(default_factory=OrderedDict)
    """run id -> (state, description) last posted by this process (the latest POSTED_MEMORY runs): a repeat is not sent again."""

    def post_commit_status(self, run_id: int) -> StatusUpdate | None:
        """Set the run's current status on its commit; returns what was set (None: the run reports none).

        Raises ForgeError when the forge refused or could not be reached (the caller may retry)."""
        record = self.sql.get_run(run_id)
        update = commit_status(
            run_id=record.id, pipeline=record.pipeline, status=record.status, trigger=record.trigger,
            server_url=self.settings.server_url, message=record.message, results=record.results,
        )
        if update is None:
            return None
        if self._posted.get(run_id) == (update.state, update.description):
            return update
        repo = self.state.get_repository(str(update.repository_id))
        if repo.forge not in ("gitea", "github") or not has_token(self.settings, repo.forge):
            return None  # no token for this forge: nothing to report with
        forge = self.forge_for(repo.forge) if self.forge_for else connect(self.settings, repo.forge)
        try:
            forge.set_status(
                repo_ref(repo.url), update.sha, state=CommitState(update.state), context=update.context,
                description=update.description, target_url=update.target_url,
            )
        finally:
            forge.close()
        self._posted[run_id] = (update.state, update.description)
        self._posted.move_to_end(run_id)
        while len(self._posted) > POSTED_MEMORY:
            self._posted.popitem(last=False)
        log.info("commit status set", extra={"run": run_id, "repository": repo.name, "sha": update.sha,
                                             "context": update.context, "state": update.state})
        return update

    async def watch(self, bus: EventBus) -> None:
        """Post a status for each run event that changes a run's status, one at a time (so they land in order)."""
        with bus.subscribe(maxsize=100_000) as sub:
            async for event in sub:
                if event.kind != "run":
                    continue
                try:
                    await asyncio.to_thread(self.post_commit_status, event.run_id)
                except ShiplineError as exc:
                    log.warning("commit status not set", extra={"run": event.run_id, "error": str(exc)})
                except Exception:  # a notifier must outlive any one bad run
                    log.exception("commit status failed", extra={"run": event.run_id})
