"""Deliveries remember which server claimed them, so a dead server's claim can be taken over.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("claimed_by", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("deliveries", "claimed_by")
