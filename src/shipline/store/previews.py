"""Preview environments as the server tracks them: one row per pull request of an opted-in repository.

The row is the work list: what should be up (`wanted`, the newest succeeded
run's release), what was last tried (`attempted_run`), what is up and
verified (`deployed`), whether the pull request is still open, and the
comment as last posted.  A server that stops half-way finds the unfinished
work here when it starts again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from shipline.domain.previews import PreviewState
from shipline.exceptions import NotFound, StoreError
from shipline.store.preview_tables import previews
from shipline.store.sql import SqlStore, _utc, utcnow


class Preview(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    repository_id: int
    pr_number: int
    service: str
    namespace: str
    open: bool
    state: PreviewState
    reason: str
    wanted: dict[str, Any] | None
    """The release to deploy: run, version, chart, chart_version, image (strings; run an int)."""
    attempted_run: int | None
    deployed: dict[str, Any] | None
    """The release that is up and verified, same keys as `wanted`."""
    last_run: int | None
    last_status: str
    comment_id: int | None
    comment: str
    created_at: datetime
    updated_at: datetime

    @property
    def needs_removal(self) -> bool:
        return not self.open and self.state is not PreviewState.REMOVED

    @property
    def needs_deploy(self) -> bool:
        return self.open and self.wanted is not None and self.wanted.get("run") != self.attempted_run


def _preview(row: Any) -> Preview:
    return Preview(
        id=row.id,
        repository_id=row.repository_id,
        pr_number=row.pr_number,
        service=row.service,
        namespace=row.namespace,
        open=bool(row.open),
        state=PreviewState(row.state),
        reason=row.reason,
        wanted=row.wanted,
        attempted_run=row.attempted_run,
        deployed=row.deployed,
        last_run=row.last_run,
        last_status=row.last_status,
        comment_id=row.comment_id,
        comment=row.comment,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


class PreviewStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def get(self, repository_id: int, pr_number: int) -> Preview | None:
        with self.sql.transaction() as conn:
            row = conn.execute(
                select(previews).where(previews.c.repository_id == repository_id, previews.c.pr_number == pr_number)
            ).first()
        return _preview(row) if row is not None else None

    def by_id(self, preview_id: int) -> Preview:
        with self.sql.transaction() as conn:
            row = conn.execute(select(previews).where(previews.c.id == preview_id)).first()
        if row is None:
            raise NotFound(f"no preview {preview_id}")
        return _preview(row)

    def ensure(self, repository_id: int, pr_number: int, *, service: str, namespace: str, open_: bool = True) -> Preview:
        """The pull request's row, made when missing (a closed pull request's stays closed)."""
        found = self.get(repository_id, pr_number)
        if found is not None:
            return found
        moment = utcnow()
        try:
            with self.sql.transaction() as conn:
                conn.execute(
                    insert(previews).values(
                        repository_id=repository_id,
                        pr_number=pr_number,
                        service=service,
                        namespace=namespace,
                        open=open_,
                        state=PreviewState.BUILDING.value if open_ else PreviewState.REMOVED.value,
                        reason="",
                        wanted=None,
                        attempted_run=None,
                        deployed=None,
                        last_run=None,
                        last_status="",
                        comment_id=None,
                        comment="",
                        created_at=moment,
                        updated_at=moment,
                    )
                )
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise  # else another server made it first: use theirs
        found = self.get(repository_id, pr_number)
        if found is None:
            raise NotFound(f"the preview of pull request #{pr_number} vanished while it was made")
        return found

    def change(self, preview_id: int, **values: Any) -> Preview:
        if "state" in values and isinstance(values["state"], PreviewState):
            values["state"] = values["state"].value
        with self.sql.transaction() as conn:
            conn.execute(update(previews).where(previews.c.id == preview_id).values(**values, updated_at=utcnow()))
        return self.by_id(preview_id)

    def all(self, *, include_removed: bool = False) -> list[Preview]:
        query = select(previews).order_by(previews.c.id)
        if not include_removed:
            query = query.where(previews.c.state != PreviewState.REMOVED.value)
        with self.sql.transaction() as conn:
            return [_preview(row) for row in conn.execute(query)]

    def holder(self, namespace: str, *, besides: int) -> Preview | None:
        """Another live preview (not removed) with this namespace: two services' names may shorten alike,
        and a pull request may rename its pipeline to another repository's service."""
        query = select(previews).where(
            previews.c.namespace == namespace, previews.c.id != besides, previews.c.state != PreviewState.REMOVED.value
        )
        with self.sql.transaction() as conn:
            row = conn.execute(query.order_by(previews.c.id)).first()
        return _preview(row) if row is not None else None

    def pending(self) -> list[Preview]:
        """Previews with work to do: a closed pull request's to remove, a new release to deploy."""
        query = (
            select(previews)
            .where(
                or_(
                    and_(previews.c.open.is_(False), previews.c.state != PreviewState.REMOVED.value),
                    and_(previews.c.open.is_(True), previews.c.wanted.is_not(None)),
                )
            )
            .order_by(previews.c.id)
        )
        with self.sql.transaction() as conn:
            rows = [_preview(row) for row in conn.execute(query)]
        return [p for p in rows if p.needs_removal or p.needs_deploy]
