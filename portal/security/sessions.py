"""Database-backed sessions for staff and recipients.

The cookie carries 256 random bits; the table stores only their SHA-256, so a database dump cannot be
replayed as cookies. Every authentication step issues a fresh id and deletes the one the browser sent,
so a session id planted before login is dead afterwards. Idle and absolute limits are checked on every
request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from litestar.datastructures import Cookie
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.models import AuthSession, UTCDateTime, utcnow
from portal.security.hashing import sha256_hex

STAFF_COOKIE = "__Host-portal-staff"
RECIPIENT_COOKIE = "__Host-portal-access"
COOKIE_FOR_KIND = {"staff": STAFF_COOKIE, "recipient": RECIPIENT_COOKIE}

# last_seen_at is written at most this often, so page views do not each cost a write.
_TOUCH_INTERVAL = dt.timedelta(seconds=30)

_SESSIONS: Table = AuthSession.__table__  # type: ignore[assignment]  # a declarative class maps one Table
INSERT_SESSION = insert(_SESSIONS)
DELETE_SESSION = delete(_SESSIONS).where(_SESSIONS.c.id_hash == bindparam("id_hash"))
# An UPDATE may not name a parameter after a column of its table, so this one is "session_hash".
TOUCH_SESSION = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id_hash == bindparam("session_hash"))
    .values(last_seen_at=bindparam("now", type_=UTCDateTime()))
)


async def start_session(
    db: AsyncSession,
    *,
    kind: str,
    subject_id: uuid.UUID,
    idle: dt.timedelta,
    absolute: dt.timedelta,
    ip_prefix: str | None,
    previous_id: str | None,
    secret: str | None = None,
) -> str:
    """Create a session and return its raw id for the cookie; the id the browser sent is deleted."""
    if previous_id:
        await db.execute(DELETE_SESSION, {"id_hash": sha256_hex(previous_id)})

    raw_id, values = new_session(
        kind=kind, subject_id=subject_id, idle=idle, absolute=absolute, ip_prefix=ip_prefix, secret=secret
    )
    # A plain INSERT, because nothing reads the row back in this transaction: skipping the session's unit
    # of work saves CPU on every code redemption and sign-in.
    await db.execute(INSERT_SESSION, values)
    return raw_id


def new_session(
    *,
    kind: str,
    subject_id: uuid.UUID,
    idle: dt.timedelta,
    absolute: dt.timedelta,
    ip_prefix: str | None,
    secret: str | None = None,
) -> tuple[str, dict[str, object]]:
    """Return a new raw session id and the ``INSERT_SESSION`` parameters of its row; nothing is written."""
    raw_id = secrets.token_urlsafe(32)
    now = utcnow()
    return raw_id, {
        "id_hash": sha256_hex(raw_id),
        "kind": kind,
        "subject_id": subject_id,
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + absolute,
        "idle_seconds": int(idle.total_seconds()),
        "ip_prefix": ip_prefix,
        "sealed_secret": _seal(raw_id, secret) if secret else None,
    }


def _sealing_key(raw_id: str) -> bytes:
    return hmac.new(raw_id.encode(), b"portal session seal", hashlib.sha256).digest()


def _seal(raw_id: str, secret: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_sealing_key(raw_id)).encrypt(nonce, secret.encode(), b"session")


def open_sealed_secret(session: AuthSession, raw_id: str) -> str | None:
    """Return the secret sealed into the session at its start, or None if there is none."""
    if not session.sealed_secret:
        return None
    sealed = session.sealed_secret
    try:
        return AESGCM(_sealing_key(raw_id)).decrypt(sealed[:12], sealed[12:], b"session").decode()
    except InvalidTag:
        return None


async def load_session(db: AsyncSession, *, kind: str, raw_id: str | None) -> AuthSession | None:
    """Return the live session for ``raw_id``, or None if it is unknown, of another kind or timed out."""
    id_hash = session_id_hash(raw_id)
    if id_hash is None:
        return None

    row = await db.scalar(select(AuthSession).where(AuthSession.id_hash == id_hash))
    if row is None or row.kind != kind:
        return None

    now = utcnow()
    if not session_live(row.last_seen_at, row.expires_at, row.idle_seconds, now):
        await db.execute(delete(AuthSession).where(AuthSession.id_hash == id_hash))
        return None

    if needs_touch(row.last_seen_at, now):
        await db.execute(TOUCH_SESSION, {"session_hash": id_hash, "now": now})
    return row


def session_id_hash(raw_id: str | None) -> str | None:
    """Return the stored hash of a session id from a cookie, or None for a missing or oversized value."""
    if not raw_id or len(raw_id) > 100:
        return None
    return sha256_hex(raw_id)


def session_live(
    last_seen_at: dt.datetime, expires_at: dt.datetime, idle_seconds: int, now: dt.datetime
) -> bool:
    """Return whether a session has reached neither its absolute limit nor its idle limit at ``now``."""
    return now < expires_at and now < last_seen_at + dt.timedelta(seconds=idle_seconds)


def needs_touch(last_seen_at: dt.datetime, now: dt.datetime) -> bool:
    """Return whether a request at ``now`` should write the session's ``last_seen_at``."""
    return now - last_seen_at >= _TOUCH_INTERVAL


async def end_session(db: AsyncSession, raw_id: str | None) -> None:
    if raw_id:
        await db.execute(delete(AuthSession).where(AuthSession.id_hash == sha256_hex(raw_id)))


async def end_sessions_of(db: AsyncSession, *, kind: str, subject_id: uuid.UUID) -> None:
    """End every session of one staff member or one share (disable, demote, revoke)."""
    await db.execute(
        delete(AuthSession).where(AuthSession.kind == kind, AuthSession.subject_id == subject_id)
    )


class _SessionCookie(Cookie):
    """A session cookie whose header is written here, equal to the one Litestar writes for these attributes.

    Litestar builds each header through ``http.cookies.SimpleCookie`` and ``dataclasses.asdict``: about
    20 microseconds of event-loop CPU per sign-in and code redemption on a 2-core server. A value
    outside URL-safe base64, which a raw session id never has, goes through Litestar.
    """

    def to_encoded_header(self) -> tuple[bytes, bytes]:
        if _SESSION_ID.fullmatch(self.value or "") is None:
            return super().to_encoded_header()
        return b"set-cookie", f"{self.key}={self.value}; HttpOnly; Path=/; SameSite=strict; Secure".encode()


_SESSION_ID = re.compile(r"[A-Za-z0-9_-]+")


def session_cookie(kind: str, raw_id: str) -> Cookie:
    # No Max-Age: the browser forgets the cookie when it closes; the server enforces the real limits.
    return _SessionCookie(
        key=COOKIE_FOR_KIND[kind],
        value=raw_id,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def expired_cookie(kind: str) -> Cookie:
    return Cookie(
        key=COOKIE_FOR_KIND[kind],
        value="",
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
        max_age=0,
    )
