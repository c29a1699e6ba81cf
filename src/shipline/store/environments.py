"""Registered environments and the history of what was applied to each.

A declaration is stored as written (re-applying replaces it); each sync or
rollback that ends adds one history entry, from which `shipline env status`
knows the applied commit and the last verified one (the rollback target).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, insert, select, update

from shipline.domain.environments import Environment, HistoryEntry, Outcome
from shipline.exceptions import NotFound, StoreError
from shipline.store.environment_tables import environment_history, environments
from shipline.store.sql import SqlStore, _utc, utcnow


class StoredEnvironment(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: Environment
    source: str
    """The declaration file it was applied from."""
    drift: str
    """What the reconciler last saw drift from the repository ("" when nothing)."""
    created_at: datetime
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.environment.name


def _stored(row: Any) -> StoredEnvironment:
    return StoredEnvironment(
        environment=Environment.model_validate(row.declaration),
        source=row.source,
        drift=row.drift or "",
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def history_entry(row: Any) -> HistoryEntry:
    """A row of `environment_history` as the domain's entry."""
    return HistoryEntry(
        id=row.id,
        environment=row.environment,
        action=row.action,
        run_id=row.run_id,
        commit=row.commit,
        applied_commit=row.applied_commit,
        outcome=Outcome(row.status),
        verified=bool(row.verified),
        rolled_back_to=row.rolled_back_to,
        message=row.message,
        created_at=_utc(row.created_at),
    )


class EnvironmentStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    def put(self, env: Environment, source: str) -> bool:
        """Register or replace an environment; True when it is new."""
        moment = utcnow()
        declaration = env.declared()
        with self.sql.transaction() as conn:
            changed = conn.execute(
                update(environments)
                .where(environments.c.name == env.name)
                .values(declaration=declaration, source=source, updated_at=moment)
            )
            if changed.rowcount:
                return False
            conn.execute(
                insert(environments).values(
                    name=env.name, declaration=declaration, source=source, drift="", created_at=moment, updated_at=moment
                )
            )
        return True

    def get(self, name: str) -> StoredEnvironment:
        with self.sql.transaction() as conn:
            row = conn.execute(select(environments).where(environments.c.name == name)).first()
        if row is None:
            raise NotFound(
                f"no environment {name!r} is registered (see `shipline env list`; add it with `shipline env apply FILE`)"
            )
        return _stored(row)

    def all(self) -> list[StoredEnvironment]:
        with self.sql.transaction() as conn:
            return [_stored(row) for row in conn.execute(select(environments).order_by(environments.c.name))]

    def remove(self, name: str) -> StoredEnvironment:
        stored = self.get(name)
        with self.sql.transaction() as conn:
            conn.execute(delete(environments).where(environments.c.name == name))
        return stored

    def set_drift(self, name: str, drift: str) -> None:
        with self.sql.transaction() as conn:
            conn.execute(update(environments).where(environments.c.name == name).values(drift=drift))

    # --- history ----------------------------------------------------------------------

    def record(
        self,
        name: str,
        *,
        action: str,
        run_id: int | None,
        commit: str,
        applied_commit: str,
        outcome: Outcome,
        verified: bool,
        rolled_back_to: str = "",
        message: str = "",
    ) -> HistoryEntry:
        """Add an entry; for a run that has one already (another process recorded it), that one."""
        if run_id is not None and (existing := self.entry_of_run(run_id)) is not None:
            return existing
        try:
            entry = self._insert(name, action, run_id, commit, applied_commit, outcome, verified, rolled_back_to, message)
        except StoreError:
            if run_id is not None and (existing := self.entry_of_run(run_id)) is not None:
                return existing  # lost a race with another recorder of the same run
            raise
        if outcome != Outcome.FAILED or applied_commit:
            # What was applied is what the repository now holds, as far as drift goes.
            self.set_drift(name, "")
        return entry

    def _insert(
        self,
        name: str,
        action: str,
        run_id: int | None,
        commit: str,
        applied_commit: str,
        outcome: Outcome,
        verified: bool,
        rolled_back_to: str,
        message: str,
    ) -> HistoryEntry:
        with self.sql.transaction() as conn:
            inserted = conn.execute(
                insert(environment_history).values(
                    environment=name,
                    action=action,
                    run_id=run_id,
                    commit=commit,
                    applied_commit=applied_commit,
                    status=outcome.value,
                    verified=verified,
                    rolled_back_to=rolled_back_to,
                    message=message,
                    created_at=utcnow(),
                )
            ).inserted_primary_key
            assert inserted is not None
            row = conn.execute(select(environment_history).where(environment_history.c.id == inserted[0])).one()
        return history_entry(row)

    def history(self, name: str, limit: int = 50) -> list[HistoryEntry]:
        """Newest first."""
        with self.sql.transaction() as conn:
            rows = conn.execute(
                select(environment_history)
                .where(environment_history.c.environment == name)
                .order_by(environment_history.c.id.desc())
                .limit(limit)
            ).all()
        return [history_entry(row) for row in rows]

    def entry_of_run(self, run_id: int) -> HistoryEntry | None:
        with self.sql.transaction() as conn:
            row = conn.execute(select(environment_history).where(environment_history.c.run_id == run_id)).first()
        return history_entry(row) if row is not None else None

    def last_applied(self, name: str) -> HistoryEntry | None:
        """The newest entry that left something applied (verified, or rolled back to a commit)."""
        with self.sql.transaction() as conn:
            row = conn.execute(
                select(environment_history)
                .where(environment_history.c.environment == name, environment_history.c.applied_commit != "")
                .order_by(environment_history.c.id.desc())
                .limit(1)
            ).first()
        return history_entry(row) if row is not None else None

    def verified_commits(self, name: str) -> list[str]:
        """Commits that were applied and verified, newest first, each once."""
        with self.sql.transaction() as conn:
            rows = conn.execute(
                select(environment_history.c.commit)
                .where(environment_history.c.environment == name, environment_history.c.verified.is_(True))
                .order_by(environment_history.c.id.desc())
            ).scalars()
            seen: list[str] = []
            for commit in rows:
                if commit not in seen:
                    seen.append(commit)
        return seen
