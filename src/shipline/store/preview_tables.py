"""The preview environments' table.  Revision 0011 creates exactly this."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Integer, String, Table, Text, UniqueConstraint

from shipline.store.tables import metadata

previews = Table(
    "previews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, nullable=False),
    Column("pr_number", Integer, nullable=False),
    Column("service", String(100), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("open", Boolean, nullable=False),  # the pull request is open (a closed one's preview is removed)
    Column("state", String(16), nullable=False),  # building | deploying | ready | failed | removed
    Column("reason", Text, nullable=False),
    Column("wanted", JSON, nullable=True),  # the newest succeeded run's release: run, version, chart, chart_version, image
    Column("attempted_run", Integer, nullable=True),  # the run whose release was last deployed (well or not)
    Column("deployed", JSON, nullable=True),  # the release that is up and verified
    Column("last_run", Integer, nullable=True),  # the newest run of the pull request seen
    Column("last_status", String(16), nullable=False),
    Column("comment_id", BigInteger, nullable=True),
    Column("comment", Text, nullable=False),  # the comment's text as last posted: edited only when it changes
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("repository_id", "pr_number", name="uq_previews_pull_request"),
)
