"""Runs by status come newest first from an index: (status, id) instead of (status).

`GET /api/v1/runs?status=...`, `shipline runs list --status ...` and the
engine's look for queued runs filter on the status and order by id.  SQLite
keeps the row id in every index, so (status) served them there; PostgreSQL
sorted every run of that status to hand back a page.  (status, id) serves
both, and every query (status) served.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_status_id", "runs", ["status", "id"])
    op.drop_index("ix_runs_status", "runs")


def downgrade() -> None:
    op.create_index("ix_runs_status", "runs", ["status"])
    op.drop_index("ix_runs_status_id", "runs")
