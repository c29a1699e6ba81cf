"""The server's tables: registered repositories, their trigger rules, webhook deliveries,
API tokens and what the poller last saw.  Revision 0002 creates exactly this."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from shipline.store.tables import metadata

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("url_key", String(500), nullable=False),
    Column("forge", String(16), nullable=False),
    Column("secret", Text, nullable=False),
    Column("pipeline", Text, nullable=False),
    Column("default_branch", String(255), nullable=False),
    Column("poll_seconds", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("previews", Boolean, nullable=False, default=False),  # preview environments for its pull requests (0011)
    Index("ix_repositories_url_key", "url_key"),
)

triggers = Table(
    "triggers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("rule", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("delivery_id", String(255), nullable=False),
    Column("repository_id", Integer, nullable=True),
    Column("event", String(100), nullable=False),
    Column("result", String(32), nullable=False),
    Column("run_ids", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(255), nullable=False, server_default=""),  # the engine owner id handling it (0004)
    UniqueConstraint("source", "delivery_id", name="uq_deliveries_source_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

poll_refs = Table(
    "poll_refs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("ref", String(500), primary_key=True),
    Column("sha", String(64), nullable=False),
)
