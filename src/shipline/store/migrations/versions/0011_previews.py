"""Preview environments: a repository's opt-in, and one row per pull request's preview.

Revision ID: 0011
Revises: 0009 (the lead re-points this to 0010 when `promotions` is merged)
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("previews", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "previews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("pr_number", sa.Integer, nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("open", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("wanted", sa.JSON, nullable=True),
        sa.Column("attempted_run", sa.Integer, nullable=True),
        sa.Column("deployed", sa.JSON, nullable=True),
        sa.Column("last_run", sa.Integer, nullable=True),
        sa.Column("last_status", sa.String(16), nullable=False),
        sa.Column("comment_id", sa.BigInteger, nullable=True),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("repository_id", "pr_number", name="uq_previews_pull_request"),
    )


def downgrade() -> None:
    op.drop_table("previews")
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("previews")
