"""The records DORA metrics are computed from: environment history and promotions, read-only.

History comes from `environment_history` (written by `EnvironmentStore.record`),
promotions from `promotions` (written by the promotion notifier,
`gitops/promoting.py`).  Only the columns the figures need are read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from shipline.domain.dora import Promotion
from shipline.domain.environments import HistoryEntry
from shipline.store.environment_tables import environment_history
from shipline.store.environments import history_entry
from shipline.store.promotion_tables import promotions
from shipline.store.sql import SqlStore, _utc

ENDED = ("merged", "verified", "failed", "superseded")
"""Promotion states worth reading: the others never reached an environment."""


class DeliveryRecords:
    """What happened to environments and services up to a moment, oldest first."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def history(self, since: datetime, until: datetime, environment: str = "") -> list[HistoryEntry]:
        """Every sync and rollback that ended after `since` and by `until`."""
        query = select(environment_history).where(
            environment_history.c.created_at > since, environment_history.c.created_at <= until
        )
        if environment:
            query = query.where(environment_history.c.environment == environment)
        with self.sql.transaction() as conn:
            rows = conn.execute(query.order_by(environment_history.c.id)).all()
        return [history_entry(row) for row in rows]

    def promotions(self, since: datetime, environment: str = "", service: str = "") -> list[Promotion]:
        """Promotions that reached an environment (merged or further), last changed after `since`."""
        query = select(
            promotions.c.service,
            promotions.c.environment,
            promotions.c.state,
            promotions.c.commit_time,
            promotions.c.updated_at,
            promotions.c.merged_at,
            promotions.c.verified_at,
            promotions.c.pr_number,
        ).where(promotions.c.state.in_(ENDED), promotions.c.updated_at > since)
        if environment:
            query = query.where(promotions.c.environment == environment)
        if service:
            query = query.where(promotions.c.service == service)
        with self.sql.transaction() as conn:
            rows = conn.execute(query).all()
        out = []
        for row in rows:
            updated = _utc(row.updated_at)
            assert updated is not None
            out.append(
                Promotion(
                    service=row.service,
                    environment=row.environment,
                    state=row.state,
                    commit_time=_utc(row.commit_time),
                    updated_at=updated,
                    merged_at=_utc(row.merged_at),
                    verified_at=_utc(row.verified_at),
                    pr_number=row.pr_number,
                )
            )
        return out
