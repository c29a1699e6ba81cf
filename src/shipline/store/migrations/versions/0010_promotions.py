"""Promotions: each version of a service proposed to an environment, and where it got to.

One row per (environment, service, version): proposed, its pull request open,
merged, verified by a sync (or failed, superseded by a newer one, closed).
The promotion notifier is the only writer; DORA lead times read it.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(63), nullable=False),
        sa.Column("environment", sa.String(50), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("previous_version", sa.String(128), nullable=False, server_default=""),
        sa.Column("service_commit", sa.String(64), nullable=False),
        sa.Column("commit_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_run", sa.Integer, nullable=False),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("chart", sa.Text, nullable=False),
        sa.Column("pr_number", sa.Integer, nullable=True),
        sa.Column("pr_url", sa.Text, nullable=False, server_default=""),
        sa.Column("branch", sa.Text, nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("merge_commit", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
    )
    # One row per version of a service in an environment: a redelivered release or sync changes nothing.
    op.create_index("uq_promotions_environment_service_version", "promotions", ["environment", "service", "version"], unique=True)
    op.create_index("ix_promotions_state", "promotions", ["state", "environment"])


def downgrade() -> None:
    op.drop_index("ix_promotions_state", "promotions")
    op.drop_index("uq_promotions_environment_service_version", "promotions")
    op.drop_table("promotions")
