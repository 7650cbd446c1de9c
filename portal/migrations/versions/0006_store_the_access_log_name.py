"""Store the access log's name, so checkpoints keep one origin whatever the public URL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Like the checkpoints, the name is insert-only. 0001 created portal_reject_change() on PostgreSQL.
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER access_log_name_no_update BEFORE UPDATE ON access_log_name
    BEGIN SELECT RAISE(ABORT, 'access_log_name is insert-only'); END""",
    """CREATE TRIGGER access_log_name_no_delete BEFORE DELETE ON access_log_name
    BEGIN SELECT RAISE(ABORT, 'access_log_name is insert-only'); END""",
]

_POSTGRESQL_TRIGGERS = [
    """CREATE TRIGGER access_log_name_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON access_log_name
    FOR EACH STATEMENT EXECUTE FUNCTION portal_reject_change()""",
]


def upgrade() -> None:
    table = op.create_table(
        "access_log_name",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("legacy_tree_size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log_name")),
    )
    bind = op.get_bind()
    for statement in _SQLITE_TRIGGERS if bind.dialect.name == "sqlite" else _POSTGRESQL_TRIGGERS:
        op.execute(statement)

    # Checkpoints signed so far name the log after the public URL of the process that signed each one. The log
    # keeps the name of its first checkpoint; later ones signed under another URL keep verifying under theirs.
    rows = bind.execute(sa.text("SELECT tree_size, note FROM checkpoint ORDER BY tree_size")).all()
    if not rows:
        return
    origins = [(tree_size, note.split("\n", 1)[0]) for tree_size, note in rows]
    origin = origins[0][1]
    legacy = max((tree_size for tree_size, other in origins if other != origin), default=0)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    op.bulk_insert(table, [{"id": 1, "origin": origin, "legacy_tree_size": legacy, "created_at": now}])


def downgrade() -> None:
    op.drop_table("access_log_name")
