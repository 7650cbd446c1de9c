"""Database tables.

One module keeps the schema readable in one place; the feature packages hold the behaviour. Times are
stored as naive UTC and read back as aware UTC, so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from portal.storage.database import define_tables

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StaffUser(Base):
    __tablename__ = "staff_user"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # clinician | admin | dpo
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # TOTP secret sealed with the key ring's session secret; the last accepted time step blocks replays.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """A one-time second-factor recovery code; only its argon2id hash is kept."""

    __tablename__ = "recovery_code"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Invitation(Base):
    """A one-time link to set a password: for a new staff member, or for an existing account when
    ``staff_id`` is set (a password reset an administrator issued)."""

    __tablename__ = "invitation"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set on a password reset link: the account whose password the link replaces. Null for invitations.
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"), index=True)
    # A reset link that also removes the account's TOTP secret and recovery codes, for a lost phone.
    reset_totp: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    # SHA-256 of the token: tokens carry 256 bits of randomness, so a slow hash adds nothing.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    scopes: Mapped[str] = mapped_column(String(100), default="upload share audit-read")  # space-separated
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[StaffUser] = relationship(lazy="joined")


class AuthSession(Base):
    """A staff or recipient session; the cookie carries the id, the table only its SHA-256."""

    __tablename__ = "auth_session"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # staff | recipient
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)  # staff_user.id or share.id
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    idle_seconds: Mapped[int] = mapped_column(Integer)
    ip_prefix: Mapped[str | None] = mapped_column(String(64))
    # A recipient session keeps the copy's PDF password sealed under a key derived from the cookie value,
    # which the server never stores, so only a request carrying the cookie can render the pages.
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary)


class Blob(Base):
    """Encrypted bytes in the blob store; its data key lives in ``data_key``."""

    __tablename__ = "blob"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # original | copy
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataKey(Base):
    """A blob's AES-256-GCM data key, wrapped by a key-encryption key; deleting the row shreds the blob."""

    __tablename__ = "data_key"

    blob_id: Mapped[str] = mapped_column(ForeignKey("blob.id", ondelete="CASCADE"), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(32))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)


class Document(Base):
    __tablename__ = "document"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    # The clinic's own patient reference, sealed with AES-GCM; the HMAC pseudonym is what lookups match.
    patient_ref_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    patient_pseudonym: Mapped[str] = mapped_column(String(64), index=True)
    report_date: Mapped[dt.date | None] = mapped_column(Date)
    pages: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_id: Mapped[str | None] = mapped_column(ForeignKey("blob.id", ondelete="SET NULL"))
    uploaded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_content: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of kinds removed
    warnings: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of messages
    repaired: Mapped[bool] = mapped_column(Boolean, default=False)
    erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class LegalHold(Base):
    """A hold that stops retention and erasure for one document or every document of one patient."""

    __tablename__ = "legal_hold"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    document_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("document.id"), index=True)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Share(Base):
    __tablename__ = "share"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    reference: Mapped[str] = mapped_column(String(16), unique=True)  # printed in the watermark
    profile: Mapped[str] = mapped_column(String(32))
    recipient_name: Mapped[str] = mapped_column(String(200))
    recipient_org: Mapped[str | None] = mapped_column(String(200))
    # The language of the recipient's slip and of the watermark's footer on the copy.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    purpose: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("staff_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    # The lifetime chosen at creation, so a reissued code gets the same window; None: the profile's.
    lifetime_days: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expired_recorded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Four-eyes release: a share that needs approval has no usable code until a second clinician approves.
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_user.id"))
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reissue_count: Mapped[int] = mapped_column(Integer, default=0)

    max_redemptions: Mapped[int] = mapped_column(Integer)
    redemptions: Mapped[int] = mapped_column(Integer, default=0)
    allow_view: Mapped[bool] = mapped_column(Boolean)
    allow_download: Mapped[bool] = mapped_column(Boolean)
    max_downloads: Mapped[int] = mapped_column(Integer)
    downloads_started: Mapped[int] = mapped_column(Integer, default=0)
    downloads_completed: Mapped[int] = mapped_column(Integer, default=0)
    first_opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # The public locator part of the access code finds the share; only an argon2id hash of the code is kept.
    code_locator: Mapped[str] = mapped_column(String(8), unique=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    # argon2id hash of the recipient's date of birth (YYYY-MM-DD) when the profile asks for it.
    second_factor_hash: Mapped[str | None] = mapped_column(String(255))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    copy_blob_id: Mapped[str | None] = mapped_column(ForeignKey("blob.id", ondelete="SET NULL"))
    copy_password_is_code: Mapped[bool] = mapped_column(Boolean, default=True)

    documents: Mapped[list[ShareDocument]] = relationship(
        order_by="ShareDocument.position", lazy="selectin", cascade="all, delete-orphan"
    )


class ShareDocument(Base):
    __tablename__ = "share_document"

    share_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("share.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("document.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)

    document: Mapped[Document] = relationship(lazy="joined")


class AccessEvent(Base):
    """One access-log event; insert-only (database triggers reject UPDATE and DELETE)."""

    __tablename__ = "access_event"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(80))
    share_id: Mapped[str | None] = mapped_column(String(36), index=True)
    document_id: Mapped[str | None] = mapped_column(String(36), index=True)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)
    purpose: Mapped[str | None] = mapped_column(String(200))
    ip_prefix: Mapped[str | None] = mapped_column(String(64), index=True)
    user_agent_family: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON object
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


Index("ix_access_event_actor_time", AccessEvent.actor, AccessEvent.time)


class Throttle(Base):
    """A fixed-window request counter shared by every process, e.g. code attempts per IP prefix per minute."""

    __tablename__ = "throttle"

    bucket: Mapped[str] = mapped_column(String(120), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class AccessLogName(Base):
    """The access log's name, which is the origin of its checkpoints and the name its key signs under.

    The one row (id 1) is written when the first checkpoint is signed, or by migration 0006 for an older log.
    Triggers reject changes, so the portal's address can change without renaming the log.
    """

    __tablename__ = "access_log_name"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(Text)
    # Checkpoints up to this size were signed before the name was stored, each under the origin written in it.
    legacy_tree_size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Checkpoint(Base):
    """A signed statement of the access log's Merkle tree size and root."""

    __tablename__ = "checkpoint"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# Chunked blob rows for the database blob store (several machines sharing one PostgreSQL).
BLOB_CHUNK_TABLE = define_tables(Base.metadata)
