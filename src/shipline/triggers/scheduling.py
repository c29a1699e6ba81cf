"""The cron scheduler: schedule rules come due, runs start.

Times are UTC.  A schedule that was due while the server was down is not
made up for (one run at the next due time, not a burst).  The delivery id is
the rule and the due time, so two servers never start the same tick twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter  # type: ignore[import-untyped]

from shipline.exceptions import UsageError

log = logging.getLogger("shipline.triggers.cron")


def next_fire(cron: str, after: datetime) -> datetime:
    """The first time strictly after `after` that the expression names (UTC)."""
    if not croniter.is_valid(cron):
        raise UsageError(f"{cron!r} is not a cron expression: five fields, e.g. '0 3 * * *' (03:00 UTC daily)")
    value = croniter(cron, after.astimezone(UTC)).get_next(datetime)
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Scheduled:
    key: int
    """The trigger's id."""
    cron: str


Fire = Callable[[Scheduled, datetime], None]


class CronScheduler:
    def __init__(self, entries: Callable[[], list[Scheduled]], fire: Fire, tick: float = 1.0) -> None:
        self.entries = entries
        self.fire = fire
        self.tick = tick
        self._next: dict[tuple[int, str], datetime] = {}

    def due(self, now: datetime) -> list[tuple[Scheduled, datetime]]:
        """What is due at `now`; each entry's next time moves on.  Pure apart from its own memory."""
        out = []
        live = set()
        for entry in self.entries():
            key = (entry.key, entry.cron)
            live.add(key)
            when = self._next.get(key)
            if when is None:
                self._next[key] = next_fire(entry.cron, now)
                continue
            if when <= now:
                out.append((entry, when))
                self._next[key] = next_fire(entry.cron, now)
        for gone in set(self._next) - live:
            del self._next[gone]
        return out

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for entry, when in self.due(datetime.now(UTC)):
                try:
                    self.fire(entry, when)
                except Exception:
                    log.exception("schedule not handled", extra={"trigger": entry.key, "due": when.isoformat()})
            try:
                await asyncio.wait_for(stop.wait(), self.tick)
            except TimeoutError:
                pass
