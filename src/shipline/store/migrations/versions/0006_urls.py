"""Repository URLs keep no credentials: ones an older version stored are dropped.

Such a URL (`https://TOKEN@host/o/r.git`) is now refused when a repository is
registered; polling takes the server user's git credentials instead.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from shipline.domain.urls import public_url

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    repositories = sa.table("repositories", sa.column("id", sa.Integer), sa.column("url", sa.Text))
    conn = op.get_bind()
    for repo_id, url in conn.execute(sa.select(repositories.c.id, repositories.c.url)).all():
        if public_url(url) != url:
            conn.execute(sa.update(repositories).where(repositories.c.id == repo_id).values(url=public_url(url)))


def downgrade() -> None:
    pass  # the credentials are gone for good, as intended
