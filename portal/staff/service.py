"""Staff accounts, sign-in and API tokens."""

from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import SYSTEM, Actor, record
from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import ApiToken, StaffUser
from portal.policies import SecurityPolicy
from portal.security.hashing import (
    STAFF_PASSWORD_HASHER,
    hash_secret,
    needs_rehash,
    sha256_hex,
    verify_secret,
)
from portal.security.sessions import end_session, start_session

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value):
        raise InvalidInput(_("'{value}' is not an e-mail address.").format(value=email[:80]), field="email")
    return value


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            _("The password is too short. Use at least {count} characters.").format(count=MIN_PASSWORD_LENGTH),
            field="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            _("The password is too long. Use at most {count} characters.").format(count=MAX_PASSWORD_LENGTH),
            field="password",
        )


async def add_user(db: AsyncSession, email: str, role: str, password: str) -> StaffUser:
    if role not in ("clinician", "admin", "dpo"):
        raise InvalidInput(f"Role {role!r} is unknown. Use clinician, admin or dpo.", field="role")
    address = normalise_email(email)
    check_password(password)
    if await db.scalar(select(StaffUser).where(StaffUser.email == address)):
        raise InvalidInput(f"A staff account for {address} exists already.", field="email")

    user = StaffUser(email=address, role=role, password_hash=await hash_secret(STAFF_PASSWORD_HASHER, password))
    db.add(user)
    await db.flush()
    await record(db, SYSTEM, "staff.created", details={"role": role, "staff_id": str(user.id)})
    return user


async def sign_in(
    db: AsyncSession,
    who: Actor,
    *,
    email: str,
    password: str,
    policy: SecurityPolicy,
    previous_session_id: str | None,
) -> tuple[StaffUser, str] | None:
    """Check the credentials; on success start a fresh staff session and return it with the user."""
    address = email.strip().lower()[:254]
    user = await db.scalar(select(StaffUser).where(StaffUser.email == address))
    usable = user is not None and user.disabled_at is None

    # An unknown address costs one dummy verification, so timing does not reveal which addresses exist.
    valid = await verify_secret(STAFF_PASSWORD_HASHER, user.password_hash if usable and user else None, password[:MAX_PASSWORD_LENGTH])
    if not valid or user is None:
        await end_session(db, previous_session_id)
        await record(db, who, "staff.login.failed", outcome="failure", details={"known_account": usable})
        return None

    if needs_rehash(STAFF_PASSWORD_HASHER, user.password_hash):
        user.password_hash = await hash_secret(STAFF_PASSWORD_HASHER, password)

    raw_id = await start_session(
        db,
        kind="staff",
        subject_id=user.id,
        idle=dt.timedelta(minutes=policy.staff_idle_minutes),
        absolute=dt.timedelta(hours=policy.staff_absolute_hours),
        ip_prefix=who.ip_prefix,
        previous_id=previous_session_id,
    )
    await record(db, Actor(f"staff:{user.id}", who.ip_prefix, who.user_agent_family, who.request_id), "staff.login")
    return user, raw_id


async def create_token(db: AsyncSession, email: str, label: str, days: int | None) -> str:
    """Create an API token for the staff member and return it; only its SHA-256 is stored."""
    user = await db.scalar(select(StaffUser).where(StaffUser.email == normalise_email(email)))
    if user is None or user.disabled_at is not None:
        raise InvalidInput(f"No active staff account for {email}. Add it first with 'portal users add'.")

    token = "pt_" + secrets.token_urlsafe(32)
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=days) if days else None
    row = ApiToken(user_id=user.id, token_hash=sha256_hex(token), label=label[:100], expires_at=expires_at)
    db.add(row)
    await db.flush()
    await record(db, SYSTEM, "api_token.created", details={"token_id": str(row.id), "staff_id": str(user.id)})
    return token
