"""The schema, as SQLAlchemy Core tables.  Alembic revisions create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("trigger", JSON, nullable=True),
    Column("rerun_of", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("owner", String(255), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("results", JSON, nullable=True),
    Column("concurrency_group", String(255), nullable=True),
    Column("holds_group", Boolean, nullable=False, default=False),
    Index("ix_runs_status_id", "status", "id"),
    Index("ix_runs_concurrency_group", "concurrency_group", "status"),
    Index("ix_runs_pipeline", "pipeline", "id"),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(63), nullable=False),
    Column("position", Integer, nullable=False),
    Column("is_finally", Boolean, nullable=False, default=False),
    Column("needs", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("results", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False, default=""),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("run_id", "name", name="uq_task_runs_run_name"),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("task", String(63), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("log_path", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("run_id", "task", "attempt", "idx", name="uq_step_runs_place"),
)

secrets = Table(
    "secrets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Text, nullable=False),  # sealed (Keyring.seal): never the value itself
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

run_events = Table(
    "run_events",
    metadata,
    # The transactional outbox: every run and task transition, appended in the transaction that
    # makes it, so a notifier that reads it after a crash misses nothing.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("task", String(63), nullable=True),
    Column("status", String(16), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_run_events_run", "run_id"),
)

outbox_cursors = Table(
    "outbox_cursors",
    metadata,
    # How far each notifier has read `run_events`, and which process holds its lease.
    Column("consumer", String(63), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)

servers = Table(
    "servers",
    metadata,
    # Where each `shipline serve` that ran runs can be reached by the others (0013): the step logs of
    # a run are in the home of the server that ran it, and another server passes a request for them on.
    Column("owner", String(255), primary_key=True),  # the engine's owner id, as `runs.owner` names it
    Column("url", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
)
