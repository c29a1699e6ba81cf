"""The environments' tables.  Revision 0008 creates exactly this."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Index, Integer, String, Table, Text

from shipline.store.tables import metadata

environments = Table(
    "environments",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("declaration", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("drift", Text, nullable=False, server_default=""),  # what the reconciler saw drift; "" when none
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

environment_history = Table(
    "environment_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment", String(50), nullable=False),
    Column("action", String(16), nullable=False),
    Column("run_id", Integer, nullable=True),
    Column("commit", String(64), nullable=False),
    Column("applied_commit", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("rolled_back_to", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_environment_history_environment", "environment", "id"),
    Index("uq_environment_history_run", "run_id", unique=True),
)
