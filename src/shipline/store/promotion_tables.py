"""The promotions table.  Revision 0010 creates exactly this."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text

from shipline.store.tables import metadata

promotions = Table(
    "promotions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(63), nullable=False),
    Column("environment", String(50), nullable=False),
    Column("version", String(128), nullable=False),
    Column("previous_version", String(128), nullable=False, server_default=""),
    Column("service_commit", String(64), nullable=False),
    Column("commit_time", DateTime(timezone=True), nullable=True),
    Column("source_run", Integer, nullable=False),
    Column("image", Text, nullable=False),
    Column("chart", Text, nullable=False),
    Column("pr_number", Integer, nullable=True),
    Column("pr_url", Text, nullable=False, server_default=""),
    Column("branch", Text, nullable=False, server_default=""),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("merge_commit", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("merged_at", DateTime(timezone=True), nullable=True),
    Column("verified_at", DateTime(timezone=True), nullable=True),
    Index("uq_promotions_environment_service_version", "environment", "service", "version", unique=True),
    Index("ix_promotions_state", "state", "environment"),
)
