"""Keep the lifetime chosen for a share, for reissued codes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing shares keep NULL: a reissue gives them the profile's lifetime, as before this revision.
    with op.batch_alter_table("share", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lifetime_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("share", schema=None) as batch_op:
        batch_op.drop_column("lifetime_days")
