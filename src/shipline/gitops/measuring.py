"""DORA metrics over a window, read from the store: what the CLI, the API, `/metrics` and the dashboard show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shipline.domain.dora import Report, Window, report
from shipline.exceptions import NotFound
from shipline.store.deliveries import DeliveryRecords
from shipline.store.environments import EnvironmentStore
from shipline.store.sql import SqlStore, utcnow

HISTORY_BEFORE_WINDOW = timedelta(days=90)
"""History read from before the window: what the environment had applied when it began, and a
failure a restore in the window ended.  A failure older than this is not seen (nor its restore)."""


def dora(sql: SqlStore, days: int, *, environment: str = "", service: str = "", end: datetime | None = None) -> Report:
    """The four keys over the `days` before `end` (now), for everything, each environment and each service."""
    moment = (end or utcnow()).astimezone(UTC)
    records = DeliveryRecords(sql)
    since = moment - timedelta(days=days) - HISTORY_BEFORE_WINDOW
    history = [] if service else records.history(since, moment, environment)
    if environment and not history and environment not in {e.name for e in EnvironmentStore(sql).all()}:
        raise NotFound(f"no environment {environment!r} is registered or has history (see `shipline env list`)")
    return report(
        history,
        records.promotions(since, environment, service),
        Window(moment, days),
        environment=environment,
        service=service,
    )
