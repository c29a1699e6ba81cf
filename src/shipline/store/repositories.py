"""The server's state beside the runs: repositories, trigger rules, deliveries, tokens, poll refs.

It shares the SqlStore's database and connection pool; the runs tables stay
the engine's (this module only reads them, for metrics and concurrency).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from shipline.domain.previews import REPOSITORY_REMOVED
from shipline.domain.runs import RunStatus
from shipline.domain.urls import check_url, public_url, url_key
from shipline.exceptions import Conflict, NotFound, StoreError, UsageError
from shipline.store.preview_tables import previews
from shipline.store.secrets import Keyring
from shipline.store.server_tables import api_tokens, deliveries, poll_refs, repositories, triggers
from shipline.store.sql import ACTIVE, ID_MAX, SqlStore, _utc, utcnow
from shipline.store.tables import runs
from shipline.triggers.rules import TriggerRule

FORGES = ("github", "gitea", "gitlab", "git")
"""`git`: a plain git remote that sends no webhooks; poll it."""


class Claim(StrEnum):
    """What recording a delivery found: a new one, one seen before, or one a dead server left unfinished."""

    NEW = "new"
    SEEN = "seen"
    ORPHANED = "orphaned"


STORED = {"stored": True}
"""Validation context of rules read back from the store (see `TriggerRule._no_credentials`)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class Role(StrEnum):
    READ = "read"
    """May read everything: runs, logs, repositories, triggers, metrics."""
    OPERATOR = "operator"
    """May also start, cancel and rerun runs, and manage repositories, triggers and tokens."""


class Repository(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    url: str
    forge: str
    pipeline: str
    default_branch: str
    poll_seconds: int | None
    created_at: datetime
    previews: bool = False
    """Its pull requests get preview environments (see docs/forges.md, "Preview environments")."""
    secret: str = Field(default="", exclude=True, repr=False)
    """The webhook secret as stored (sealed: see `ServerStore.webhook_secret`); never shown, excluded from every dump."""

    @field_serializer("url")
    def _hide_credentials(self, url: str) -> str:
        return public_url(url)  # one stored by an older version, which let them in


class Trigger(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    repository_id: int
    rule: TriggerRule
    created_at: datetime


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    source: str
    delivery_id: str
    repository_id: int | None
    event: str
    result: str
    run_ids: list[int]
    received_at: datetime
    pruned_run_ids: list[int] = []
    """Of `run_ids`, those no longer in the store (`shipline prune` removed them)."""


class Token(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None


def confine_pipeline(path: str, root: Path) -> str:
    """The absolute path of a pipeline file named relative to `root`; UsageError when it would leave `root`.

    What the API registers: a remote operator names a file in the server's pipelines
    folder, never any file the server can read (`/etc/passwd`, a key, a database).
    """
    if not path.strip() or "\0" in path:
        raise UsageError("pipeline: give the path of a pipeline file, relative to the server's pipelines folder")
    base = root.resolve()
    resolved = (base / path).resolve()  # an absolute `path` replaces `base`, and is checked the same way
    if not resolved.is_relative_to(base) or resolved == base:
        raise UsageError(
            f"pipeline {path!r} is outside the server's pipelines folder ({base}): put the file there and give "
            "its path relative to it (the folder is $SHIPLINE_PIPELINES_ROOT, default $SHIPLINE_HOME/pipelines)"
        )
    if resolved.suffix not in (".yaml", ".yml"):
        raise UsageError(f"pipeline {path!r}: a pipeline file ends in .yaml or .yml")
    return str(resolved)


def _new_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise StoreError("the database did not return the new row's id")
    return int(key[0])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _repo(row: Any) -> Repository:
    return Repository(
        id=row.id,
        name=row.name,
        url=row.url,
        forge=row.forge,
        pipeline=row.pipeline,
        default_branch=row.default_branch,
        poll_seconds=row.poll_seconds,
        created_at=_utc(row.created_at),
        previews=bool(row.previews),
        secret=row.secret,
    )


class ServerStore:
    def __init__(self, sql: SqlStore, keyring: Keyring) -> None:
        self.sql = sql
        self.keyring = keyring

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.sql.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"the store failed: {exc.__class__.__name__}: {exc}") from exc

    # --- repositories -----------------------------------------------------------------

    def add_repository(
        self,
        *,
        name: str,
        url: str,
        forge: str,
        secret: str,
        pipeline: str,
        default_branch: str = "main",
        poll_seconds: int | None = None,
        previews: bool = False,
    ) -> Repository:
        if not NAME_RE.match(name):
            raise UsageError(f"repository name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
        if forge not in FORGES:
            raise UsageError(f"forge {forge!r} is not one of {', '.join(FORGES)}")
        check_url(url)
        if poll_seconds is not None and not 1 <= poll_seconds <= 7 * 86400:
            raise UsageError(f"poll interval {poll_seconds}s: give 1 second to 7 days (604800)")
        if forge != "git" and not secret:
            raise UsageError(f"a {forge} repository needs a webhook secret (the same one set on the forge's hook)")
        try:
            with self._tx() as conn:
                repo_id = _new_id(
                    conn.execute(
                        insert(repositories).values(
                            name=name,
                            url=url,
                            url_key=url_key(url),
                            forge=forge,
                            secret=self.keyring.seal(secret) if secret else "",
                            pipeline=pipeline,
                            default_branch=default_branch,
                            poll_seconds=poll_seconds,
                            previews=previews,
                            created_at=utcnow(),
                        )
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a repository named {name!r} is already registered; pick another name or remove it first") from exc
        return self.get_repository(str(repo_id))

    def webhook_secret(self, repo: Repository) -> str:
        """The repository's webhook secret in clear, for checking a signature."""
        return self.keyring.open(repo.secret)

    def get_repository(self, ref: str) -> Repository:
        """By id or by name."""
        column = repositories.c.id if ref.isdigit() else repositories.c.name
        value: int | str = int(ref) if ref.isdigit() else ref
        if isinstance(value, int) and not 1 <= value <= ID_MAX:
            raise NotFound(f"no repository {ref!r} is registered (see `shipline repos list`)")
        with self._tx() as conn:
            row = conn.execute(select(repositories).where(column == value)).first()
        if row is None:
            raise NotFound(f"no repository {ref!r} is registered (see `shipline repos list`)")
        return _repo(row)

    def list_repositories(self) -> list[Repository]:
        with self._tx() as conn:
            return [_repo(row) for row in conn.execute(select(repositories).order_by(repositories.c.name))]

    def find_repositories(self, urls: Sequence[str]) -> list[Repository]:
        keys = list({url_key(u) for u in urls if u})
        if not keys:
            return []
        with self._tx() as conn:
            rows = conn.execute(select(repositories).where(repositories.c.url_key.in_(keys)).order_by(repositories.c.id))
            return [_repo(row) for row in rows]

    def set_previews(self, ref: str, on: bool) -> Repository:
        """Turn preview environments on or off for a repository's pull requests."""
        repo = self.get_repository(ref)
        with self._tx() as conn:
            conn.execute(update(repositories).where(repositories.c.id == repo.id).values(previews=on))
        return self.get_repository(str(repo.id))

    def remove_repository(self, ref: str) -> Repository:
        """Forget a repository: its triggers, its polled refs; its open previews are marked for
        removal (the server deletes their namespaces at its next look)."""
        repo = self.get_repository(ref)
        with self._tx() as conn:
            conn.execute(
                update(previews)
                .where(previews.c.repository_id == repo.id, previews.c.open.is_(True))
                .values(open=False, reason=REPOSITORY_REMOVED, updated_at=utcnow())
            )
            conn.execute(delete(triggers).where(triggers.c.repository_id == repo.id))
            conn.execute(delete(poll_refs).where(poll_refs.c.repository_id == repo.id))
            conn.execute(delete(repositories).where(repositories.c.id == repo.id))
        return repo

    # --- triggers ---------------------------------------------------------------------

    def add_trigger(self, repository_id: int, rule: TriggerRule) -> Trigger:
        with self._tx() as conn:
            trigger_id = _new_id(
                conn.execute(
                    insert(triggers).values(repository_id=repository_id, rule=rule.model_dump(mode="json"), created_at=utcnow())
                )
            )
        return self.get_trigger(int(trigger_id))

    def get_trigger(self, trigger_id: int) -> Trigger:
        if not 1 <= trigger_id <= ID_MAX:
            raise NotFound(f"no trigger {trigger_id} (see `shipline repos triggers`)")
        with self._tx() as conn:
            row = conn.execute(select(triggers).where(triggers.c.id == trigger_id)).first()
        if row is None:
            raise NotFound(f"no trigger {trigger_id} (see `shipline repos triggers`)")
        return Trigger(
            id=row.id,
            repository_id=row.repository_id,
            rule=TriggerRule.model_validate(row.rule, context=STORED),
            created_at=_utc(row.created_at),
        )

    def list_triggers(self, repository_id: int | None = None) -> list[Trigger]:
        query = select(triggers).order_by(triggers.c.id)
        if repository_id is not None:
            query = query.where(triggers.c.repository_id == repository_id)
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [
            Trigger(
                id=r.id,
                repository_id=r.repository_id,
                rule=TriggerRule.model_validate(r.rule, context=STORED),
                created_at=_utc(r.created_at),
            )
            for r in rows
        ]

    def remove_trigger(self, trigger_id: int) -> Trigger:
        trigger = self.get_trigger(trigger_id)
        with self._tx() as conn:
            conn.execute(delete(triggers).where(triggers.c.id == trigger_id))
        return trigger

    # --- deliveries -------------------------------------------------------------------

    def claim_delivery(
        self,
        source: str,
        delivery_id: str,
        repository_id: int | None,
        event: str,
        owner: str,
        orphaned: Callable[[str, datetime], bool],
    ) -> Claim:
        """Record a delivery, atomically: NEW the first time, SEEN for a redelivery.

        A delivery still `received` whose claimant is dead (`orphaned(claimed_by,
        received_at)`) was being handled by a server that stopped before it
        finished; the claim passes to `owner` (ORPHANED), who must first look
        for runs that server already started.
        """
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(deliveries).values(
                        source=source,
                        delivery_id=delivery_id,
                        repository_id=repository_id,
                        event=event[:100],
                        result="received",
                        run_ids=[],
                        received_at=utcnow(),
                        claimed_by=owner,
                    )
                )
            return Claim.NEW
        except IntegrityError:
            pass
        mine = (deliveries.c.source == source, deliveries.c.delivery_id == delivery_id)
        with self._tx() as conn:
            row = conn.execute(select(deliveries.c.result, deliveries.c.claimed_by, deliveries.c.received_at).where(*mine)).one()
            claimed_at = _utc(row.received_at)
            assert claimed_at is not None  # the column is NOT NULL
            if row.result != "received" or not orphaned(row.claimed_by, claimed_at):
                return Claim.SEEN
            # Two servers may both find it orphaned: the claimant in the WHERE lets one win.
            taken = conn.execute(
                update(deliveries)
                .where(*mine, deliveries.c.result == "received", deliveries.c.claimed_by == row.claimed_by)
                .values(claimed_by=owner, received_at=utcnow())
            )
        return Claim.ORPHANED if taken.rowcount == 1 else Claim.SEEN

    def runs_of_delivery(self, source: str, delivery_id: str) -> list[int]:
        """Runs started for this delivery (rare: only asked after a server died mid-delivery)."""
        with self._tx() as conn:
            rows = conn.execute(
                select(runs.c.id)
                .where(runs.c.trigger["source"].as_string() == source, runs.c.trigger["delivery"].as_string() == delivery_id)
                .order_by(runs.c.id)
            )
            return list(rows.scalars())

    def finish_delivery(self, source: str, delivery_id: str, result: str, run_ids: list[int]) -> None:
        with self._tx() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.source == source, deliveries.c.delivery_id == delivery_id)
                .values(result=result, run_ids=run_ids)
            )

    def forget_delivery(self, source: str, delivery_id: str) -> None:
        """Let a delivery that failed on our side be retried by the forge."""
        with self._tx() as conn:
            conn.execute(delete(deliveries).where(deliveries.c.source == source, deliveries.c.delivery_id == delivery_id))

    def list_deliveries(self, limit: int = 50) -> list[Delivery]:
        with self._tx() as conn:
            rows = conn.execute(select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)).all()
            started = {i for r in rows for i in r.run_ids}
            kept = set(conn.execute(select(runs.c.id).where(runs.c.id.in_(started))).scalars()) if started else set()
        return [
            Delivery(
                id=r.id,
                source=r.source,
                delivery_id=r.delivery_id,
                repository_id=r.repository_id,
                event=r.event,
                result=r.result,
                run_ids=list(r.run_ids),
                received_at=_utc(r.received_at),
                pruned_run_ids=[i for i in r.run_ids if i not in kept],
            )
            for r in rows
        ]

    # --- tokens -----------------------------------------------------------------------

    def create_token(self, name: str, role: Role) -> tuple[Token, str]:
        """A new token; the plain text is returned once and only its hash is kept."""
        plain = "shp_" + secrets.token_urlsafe(32)
        with self._tx() as conn:
            token_id = _new_id(
                conn.execute(
                    insert(api_tokens).values(name=name[:100], role=role.value, token_hash=hash_token(plain), created_at=utcnow())
                )
            )
        (token,) = [t for t in self.list_tokens() if t.id == token_id]
        return token, plain

    def check_token(self, plain: str) -> Token | None:
        with self._tx() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == hash_token(plain))).first()
        if row is None:
            return None
        return Token(
            id=row.id, name=row.name, role=Role(row.role), created_at=_utc(row.created_at), last_used_at=_utc(row.last_used_at)
        )

    def list_tokens(self) -> list[Token]:
        with self._tx() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).all()
        return [
            Token(id=r.id, name=r.name, role=Role(r.role), created_at=_utc(r.created_at), last_used_at=_utc(r.last_used_at))
            for r in rows
        ]

    def revoke_token(self, token_id: int) -> None:
        if not 1 <= token_id <= ID_MAX:
            raise NotFound(f"no token {token_id} (see `shipline tokens list`)")
        with self._tx() as conn:
            result = conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id))
        if not result.rowcount:
            raise NotFound(f"no token {token_id} (see `shipline tokens list`)")

    # --- poller -----------------------------------------------------------------------

    def load_refs(self, repository_id: int) -> dict[str, str] | None:
        """What the poller last saw; None when it never polled this repository."""
        with self._tx() as conn:
            rows = conn.execute(select(poll_refs.c.ref, poll_refs.c.sha).where(poll_refs.c.repository_id == repository_id)).all()
        if not rows:
            return None
        # The "" row marks "polled before", so an empty repository's first branch is a change.
        return {r.ref: r.sha for r in rows if r.ref}

    def save_refs(self, repository_id: int, refs: dict[str, str]) -> None:
        with self._tx() as conn:
            conn.execute(delete(poll_refs).where(poll_refs.c.repository_id == repository_id))
            rows = [{"repository_id": repository_id, "ref": r, "sha": s} for r, s in refs.items() if r]
            rows.append({"repository_id": repository_id, "ref": "", "sha": ""})
            conn.execute(insert(poll_refs), rows)

    # --- reading the runs tables ------------------------------------------------------

    def count_runs(self) -> dict[str, int]:
        with self._tx() as conn:
            rows = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        counts = {s.value: 0 for s in RunStatus}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def active_runs(self, pipeline: str) -> list[tuple[int, dict[str, Any] | None]]:
        """(id, trigger) of the queued and running runs of one pipeline."""
        with self._tx() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.trigger).where(runs.c.pipeline == pipeline, runs.c.status.in_(ACTIVE))
            ).all()
        return [(r.id, r.trigger) for r in rows]
