"""Environments: their declarations, and the history of their syncs and rollbacks.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("declaration", sa.JSON, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("drift", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "environment_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("environment", sa.String(50), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("applied_commit", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("rolled_back_to", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_environment_history_environment", "environment_history", ["environment", "id"])
    # One entry per run, even when the CLI that drove it and a server both see it end.
    op.create_index("uq_environment_history_run", "environment_history", ["run_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_environment_history_run", "environment_history")
    op.drop_index("ix_environment_history_environment", "environment_history")
    op.drop_table("environment_history")
    op.drop_table("environments")
