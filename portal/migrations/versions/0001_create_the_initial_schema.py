"""Create the initial schema

Revision ID: 0001
Revises:
Create Date: 2026-12-04 22:08:24.773689
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The access log and its checkpoints are insert-only. Copied here, not imported, so this revision never changes.
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER access_event_no_update BEFORE UPDATE ON access_event
    BEGIN SELECT RAISE(ABORT, 'access_event is insert-only'); END""",
    """CREATE TRIGGER access_event_no_delete BEFORE DELETE ON access_event
    BEGIN SELECT RAISE(ABORT, 'access_event is insert-only'); END""",
    """CREATE TRIGGER checkpoint_no_update BEFORE UPDATE ON checkpoint
    BEGIN SELECT RAISE(ABORT, 'checkpoint is insert-only'); END""",
    """CREATE TRIGGER checkpoint_no_delete BEFORE DELETE ON checkpoint
    BEGIN SELECT RAISE(ABORT, 'checkpoint is insert-only'); END""",
]

_POSTGRESQL_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION portal_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is insert-only';
    END
    $$""",
    """CREATE TRIGGER access_event_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON access_event
    FOR EACH STATEMENT EXECUTE FUNCTION portal_reject_change()""",
    """CREATE TRIGGER checkpoint_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION portal_reject_change()""",
]


def _create_triggers() -> None:
    statements = _SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _POSTGRESQL_TRIGGERS
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "access_event",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("share_id", sa.String(length=36), nullable=True),
        sa.Column("document_id", sa.String(length=36), nullable=True),
        sa.Column("patient_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("user_agent_family", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_access_event")),
    )
    with op.batch_alter_table("access_event", schema=None) as batch_op:
        batch_op.create_index("ix_access_event_actor_time", ["actor", "time"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_event_document_id"), ["document_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_event_event_type"), ["event_type"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_event_ip_prefix"), ["ip_prefix"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_access_event_patient_pseudonym"), ["patient_pseudonym"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_access_event_share_id"), ["share_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_event_time"), ["time"], unique=False)

    op.create_table(
        "auth_session",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("idle_seconds", sa.Integer(), nullable=False),
        sa.Column("ip_prefix", sa.String(length=64), nullable=True),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_auth_session")),
    )
    with op.batch_alter_table("auth_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_session_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "blob",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blob")),
    )
    op.create_table(
        "checkpoint",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_checkpoint")),
    )
    op.create_table(
        "staff_user",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_user")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_user_email")),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["staff_user.id"], name=op.f("fk_api_token_user_id_staff_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )
    op.create_table(
        "data_key",
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("kek_id", sa.String(length=32), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blob.id"], name=op.f("fk_data_key_blob_id_blob"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("blob_id", name=op.f("pk_data_key")),
    )
    op.create_table(
        "document",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("patient_ref_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("patient_pseudonym", sa.String(length=64), nullable=False),
        sa.Column("report_date", sa.Date(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_id", sa.String(length=64), nullable=True),
        sa.Column("uploaded_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("removed_content", sa.Text(), nullable=False),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.Column("erased_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["blob_id"], ["blob.id"], name=op.f("fk_document_blob_id_blob"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["staff_user.id"], name=op.f("fk_document_uploaded_by_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document")),
    )
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_document_patient_pseudonym"), ["patient_pseudonym"], unique=False
        )

    op.create_table(
        "share",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.String(length=16), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=False),
        sa.Column("recipient_name", sa.String(length=200), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=False),
        sa.Column("redemptions", sa.Integer(), nullable=False),
        sa.Column("allow_view", sa.Boolean(), nullable=False),
        sa.Column("allow_download", sa.Boolean(), nullable=False),
        sa.Column("max_downloads", sa.Integer(), nullable=False),
        sa.Column("downloads_started", sa.Integer(), nullable=False),
        sa.Column("downloads_completed", sa.Integer(), nullable=False),
        sa.Column("first_opened_at", sa.DateTime(), nullable=True),
        sa.Column("code_locator", sa.String(length=8), nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_at", sa.DateTime(), nullable=True),
        sa.Column("copy_blob_id", sa.String(length=64), nullable=True),
        sa.Column("copy_password_is_code", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["copy_blob_id"], ["blob.id"], name=op.f("fk_share_copy_blob_id_blob"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["staff_user.id"], name=op.f("fk_share_created_by_staff_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share")),
        sa.UniqueConstraint("code_locator", name=op.f("uq_share_code_locator")),
        sa.UniqueConstraint("reference", name=op.f("uq_share_reference")),
    )
    op.create_table(
        "share_document",
        sa.Column("share_id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["document.id"], name=op.f("fk_share_document_document_id_document")
        ),
        sa.ForeignKeyConstraint(
            ["share_id"], ["share.id"], name=op.f("fk_share_document_share_id_share"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("share_id", "document_id", name=op.f("pk_share_document")),
    )

    _create_triggers()


def downgrade() -> None:
    op.drop_table("share_document")
    op.drop_table("share")
    with op.batch_alter_table("document", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_patient_pseudonym"))

    op.drop_table("document")
    op.drop_table("data_key")
    op.drop_table("api_token")
    op.drop_table("staff_user")
    op.drop_table("checkpoint")
    op.drop_table("blob")
    with op.batch_alter_table("auth_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_session_subject_id"))

    op.drop_table("auth_session")
    with op.batch_alter_table("access_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_event_time"))
        batch_op.drop_index(batch_op.f("ix_access_event_share_id"))
        batch_op.drop_index(batch_op.f("ix_access_event_patient_pseudonym"))
        batch_op.drop_index(batch_op.f("ix_access_event_ip_prefix"))
        batch_op.drop_index(batch_op.f("ix_access_event_event_type"))
        batch_op.drop_index(batch_op.f("ix_access_event_document_id"))
        batch_op.drop_index("ix_access_event_actor_time")

    op.drop_table("access_event")
