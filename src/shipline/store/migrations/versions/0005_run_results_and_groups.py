"""Runs get the pipeline's own results and a concurrency group.

A run *holds* its group from the moment an engine is allowed to start it
until it ends; other runs of the group wait (or were cancelled) meanwhile.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("results", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("concurrency_group", sa.String(255), nullable=True))
        batch.add_column(sa.Column("holds_group", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_runs_concurrency_group", ["concurrency_group", "status"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_concurrency_group")
        batch.drop_column("holds_group")
        batch.drop_column("concurrency_group")
        batch.drop_column("results")
