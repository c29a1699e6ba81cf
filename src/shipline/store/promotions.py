"""Promotions: which version of which service was proposed to which environment, and where it got to.

One row per (environment, service, version), so a release or a sync handled
twice (the outbox delivers at least once) finds its row instead of adding
one.  The promotion notifier (`gitops/promoting.py`) is the only writer;
the API, the CLI and the DORA figures read.

States: `proposed` (row made, no pull request yet), `open` (its pull request
is open), `merged`, `verified` (a sync that contains it was verified),
`failed` (that sync failed verification and was rolled back, or the version
could not be proposed), `superseded` (a newer version of the service took
its place before it was verified), `closed` (its pull request was closed
unmerged, or the environment already had the version).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select, update

from shipline.exceptions import NotFound, StoreError
from shipline.store.promotion_tables import promotions
from shipline.store.sql import SqlStore, _utc, utcnow


class PromotionState(StrEnum):
    PROPOSED = "proposed"
    OPEN = "open"
    MERGED = "merged"
    VERIFIED = "verified"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    CLOSED = "closed"

    @property
    def live(self) -> bool:
        """Still on its way: a newer version takes its place, a sync may verify it."""
        return self in (PromotionState.PROPOSED, PromotionState.OPEN, PromotionState.MERGED)


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    service: str
    environment: str
    version: str
    previous_version: str
    """The version the environment had when it was proposed ("" if none)."""
    service_commit: str
    commit_time: datetime | None
    """When the service commit was made (None when unknown): the start of its lead time."""
    source_run: int
    """The run that proposed it: the service's release run, or the sync of the previous environment."""
    image: str
    chart: str
    pr_number: int | None
    pr_url: str
    branch: str
    state: PromotionState
    message: str
    merge_commit: str
    """The environment repository's commit that merged it ("" until then)."""
    created_at: datetime
    updated_at: datetime
    merged_at: datetime | None
    verified_at: datetime | None


def _promotion(row: Any) -> Promotion:
    return Promotion(
        id=row.id,
        service=row.service,
        environment=row.environment,
        version=row.version,
        previous_version=row.previous_version,
        service_commit=row.service_commit,
        commit_time=_utc(row.commit_time),
        source_run=row.source_run,
        image=row.image,
        chart=row.chart,
        pr_number=row.pr_number,
        pr_url=row.pr_url,
        branch=row.branch,
        state=PromotionState(row.state),
        message=row.message,
        merge_commit=row.merge_commit,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        merged_at=_utc(row.merged_at),
        verified_at=_utc(row.verified_at),
    )


_WRITABLE = frozenset(
    {"previous_version", "pr_number", "pr_url", "branch", "state", "message", "merge_commit", "merged_at", "verified_at"}
)


class PromotionStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def propose(
        self,
        *,
        service: str,
        environment: str,
        version: str,
        service_commit: str,
        commit_time: datetime | None,
        source_run: int,
        image: str,
        chart: str,
        previous_version: str = "",
        state: PromotionState = PromotionState.PROPOSED,
        message: str = "",
    ) -> tuple[Promotion, bool]:
        """(the row for this version in this environment, True when this call made it).

        A second call for the same version (a redelivered release) returns the first row unchanged."""
        found = self.find(environment, service, version)
        if found is not None:
            return found, False
        moment = utcnow()
        made = False
        try:
            with self.sql.transaction() as conn:
                conn.execute(
                    insert(promotions).values(
                        service=service,
                        environment=environment,
                        version=version,
                        previous_version=previous_version,
                        service_commit=service_commit,
                        commit_time=commit_time,
                        source_run=source_run,
                        image=image,
                        chart=chart,
                        pr_url="",
                        branch="",
                        state=state.value,
                        message=message[:2000],
                        merge_commit="",
                        created_at=moment,
                        updated_at=moment,
                    )
                )
            made = True
        except StoreError:
            pass  # another writer made it first (the unique key): theirs is the row
        found = self.find(environment, service, version)
        if found is None:
            raise StoreError(f"promotion of {service} {version} to {environment} could not be recorded; see the store's log")
        return found, made

    def find(self, environment: str, service: str, version: str) -> Promotion | None:
        with self.sql.transaction() as conn:
            row = conn.execute(
                select(promotions).where(
                    promotions.c.environment == environment, promotions.c.service == service, promotions.c.version == version
                )
            ).first()
        return _promotion(row) if row is not None else None

    def get(self, promotion_id: int) -> Promotion:
        with self.sql.transaction() as conn:
            row = conn.execute(select(promotions).where(promotions.c.id == promotion_id)).first()
        if row is None:
            raise NotFound(f"no promotion {promotion_id} (see `shipline env promotions`)")
        return _promotion(row)

    def update(self, promotion_id: int, **values: Any) -> Promotion:
        unknown = set(values) - _WRITABLE
        if unknown:
            raise ValueError(f"promotion columns not writable: {sorted(unknown)}")
        if isinstance(values.get("state"), PromotionState):
            values["state"] = values["state"].value
        if "message" in values:
            values["message"] = str(values["message"])[:2000]
        with self.sql.transaction() as conn:
            conn.execute(update(promotions).where(promotions.c.id == promotion_id).values(**values, updated_at=utcnow()))
        return self.get(promotion_id)

    def live(self, environment: str, service: str | None = None) -> list[Promotion]:
        """Promotions on their way in an environment (proposed, open, merged), oldest first."""
        return self.list(
            environment=environment, service=service, states=[s for s in PromotionState if s.live], newest_first=False
        )

    def list(
        self,
        *,
        environment: str | None = None,
        service: str | None = None,
        states: Sequence[PromotionState] | None = None,
        limit: int = 200,
        newest_first: bool = True,
    ) -> list[Promotion]:
        query = select(promotions)
        if environment:
            query = query.where(promotions.c.environment == environment)
        if service:
            query = query.where(promotions.c.service == service)
        if states is not None:
            query = query.where(promotions.c.state.in_([s.value for s in states]))
        query = query.order_by(promotions.c.id.desc() if newest_first else promotions.c.id).limit(max(1, min(limit, 1000)))
        with self.sql.transaction() as conn:
            return [_promotion(row) for row in conn.execute(query)]
