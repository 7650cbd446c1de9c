"""Let an invitation row reset the password of an existing account

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 17:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows are invitations for new accounts: no account to reset and no second factor to clear.
    with op.batch_alter_table("invitation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staff_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("reset_totp", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_invitation_staff_id"), ["staff_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_invitation_staff_id_staff_user"), "staff_user", ["staff_id"], ["id"]
        )


def downgrade() -> None:
    # Reset links have no meaning without the column, so they go before it does.
    op.execute("DELETE FROM invitation WHERE staff_id IS NOT NULL")
    with op.batch_alter_table("invitation", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_invitation_staff_id_staff_user"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_invitation_staff_id"))
        batch_op.drop_column("reset_totp")
        batch_op.drop_column("staff_id")
