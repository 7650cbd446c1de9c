"""Staff sign-in in one or two steps, with throttles in the database.

Step one checks the e-mail address and password. A staff member with TOTP gets a pending session
(kind ``staff_totp``, 5 minutes) that only the second step accepts. One who must still enrol gets a
``staff_enrol`` session that only the enrolment page accepts. Every step deletes the session id the
browser sent and issues a fresh one, and every step records one access-log event.

Throttles count per account (failed steps, 10 per 15 minutes) and per client address (every attempt,
30 per minute; IPv4 /32, IPv6 /64). The counters are fixed windows, so up to twice a limit can pass
around a window boundary. Bucket names are HMACs of the address or e-mail, so the throttle table holds
neither.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import Actor, record
from portal.models import RecoveryCode, StaffUser, Throttle, utcnow
from portal.policies import SecurityPolicy
from portal.security import totp
from portal.security.hashing import (
    CODE_HASHER,
    STAFF_PASSWORD_HASHER,
    hash_secret,
    needs_rehash,
    verify_secret,
)
from portal.security.sessions import end_session, load_session, start_session
from portal.security.throttle import hit, keyed_bucket, window_start
from portal.staff.service import MAX_PASSWORD_LENGTH

EventDetails = dict[str, str | int | bool | None]

ACCOUNT_FAILURE_LIMIT = 10
ACCOUNT_WINDOW = dt.timedelta(minutes=15)
ADDRESS_ATTEMPT_LIMIT = 30
ADDRESS_WINDOW = dt.timedelta(minutes=1)
SECOND_FACTOR_MINUTES = 5
ENROLMENT_MINUTES = 15


@dataclass(frozen=True)
class LoginThrottle:
    """Names the throttle buckets of one request: its client address and the account it names."""

    secret: bytes  # keys the HMAC of bucket names
    client_address: str | None  # IPv4 /32 or IPv6 /64 prefix

    def _bucket(self, kind: str, value: str) -> str:
        return keyed_bucket(f"login-{kind}", value, self.secret)

    def account_bucket(self, email: str) -> str:
        return self._bucket("account", email)

    def address_bucket(self) -> str | None:
        return self._bucket("address", self.client_address) if self.client_address else None


@dataclass(frozen=True)
class SignInResult:
    """Outcome of one sign-in step, with the new session id for the cookie when the step issued one."""

    outcome: str  # signed_in | second_factor | enrol | invalid | throttled | expired
    user: StaffUser | None = None
    session_id: str | None = None


async def _failures(db: AsyncSession, bucket: str) -> int:
    start = window_start(utcnow(), ACCOUNT_WINDOW)
    count = await db.scalar(
        select(Throttle.count).where(Throttle.bucket == bucket, Throttle.window_start == start)
    )
    return count or 0


async def throttle_reason(db: AsyncSession, throttle: LoginThrottle, email: str) -> str | None:
    """Count this attempt for the client address; return the reason if a limit is already reached.

    Besides sign-in, a password change checks this before it checks the current password.
    """
    address_bucket = throttle.address_bucket()
    if address_bucket and await hit(db, address_bucket, ADDRESS_WINDOW) > ADDRESS_ATTEMPT_LIMIT:
        return "throttled_address"
    if await _failures(db, throttle.account_bucket(email)) >= ACCOUNT_FAILURE_LIMIT:
        return "throttled_account"
    return None


async def count_failure(db: AsyncSession, throttle: LoginThrottle, email: str) -> None:
    """Count one failed step against the account ``email``, as a wrong password or code does."""
    await hit(db, throttle.account_bucket(email), ACCOUNT_WINDOW)


def _as(who: Actor, user: StaffUser) -> Actor:
    return Actor(f"staff:{user.id}", who.ip_prefix, who.user_agent_family, who.request_id)


async def sign_in(
    db: AsyncSession,
    who: Actor,
    *,
    email: str,
    password: str,
    policy: SecurityPolicy,
    previous_session_id: str | None,
    throttle: LoginThrottle,
) -> SignInResult:
    """Check the password step and issue the session that the account's second factor calls for."""
    address = email.strip().lower()[:254]
    await end_session(db, previous_session_id)

    reason = await throttle_reason(db, throttle, address)
    if reason:
        await record(
            db, who, "staff.login.failed", outcome="failure", details={"step": "password", "reason": reason}
        )
        return SignInResult("throttled")

    user = await db.scalar(select(StaffUser).where(StaffUser.email == address))
    usable = user is not None and user.disabled_at is None
    # An unknown address costs one dummy verification, so timing does not reveal which addresses exist.
    encoded = user.password_hash if usable and user else None
    valid = await verify_secret(STAFF_PASSWORD_HASHER, encoded, password[:MAX_PASSWORD_LENGTH])
    if not valid or user is None:
        await count_failure(db, throttle, address)
        details: EventDetails = {"step": "password", "reason": "invalid_credentials", "known_account": usable}
        await record(db, who, "staff.login.failed", outcome="failure", details=details)
        return SignInResult("invalid")

    if needs_rehash(STAFF_PASSWORD_HASHER, user.password_hash):
        user.password_hash = await hash_secret(STAFF_PASSWORD_HASHER, password)

    if user.totp_secret_sealed is not None:
        kind, minutes, outcome = "staff_totp", SECOND_FACTOR_MINUTES, "second_factor"
    elif policy.staff_require_totp:
        kind, minutes, outcome = "staff_enrol", ENROLMENT_MINUTES, "enrol"
    else:
        raw_id = await start_full_session(db, who, user, policy, previous_session_id=None)
        await record(db, _as(who, user), "staff.login", details={"step": "password", "second_factor": "none"})
        return SignInResult("signed_in", user, raw_id)

    raw_id = await start_session(
        db,
        kind=kind,
        subject_id=user.id,
        idle=dt.timedelta(minutes=minutes),
        absolute=dt.timedelta(minutes=minutes),
        ip_prefix=who.ip_prefix,
        previous_id=None,
    )
    await record(db, _as(who, user), "staff.login", details={"step": "password", "second_factor": "pending"})
    return SignInResult(outcome, user, raw_id)


async def start_full_session(
    db: AsyncSession, who: Actor, user: StaffUser, policy: SecurityPolicy, *, previous_session_id: str | None
) -> str:
    """Start a signed-in staff session, deleting ``previous_session_id``, and return its raw id."""
    return await start_session(
        db,
        kind="staff",
        subject_id=user.id,
        idle=dt.timedelta(minutes=policy.staff_idle_minutes),
        absolute=dt.timedelta(hours=policy.staff_absolute_hours),
        ip_prefix=who.ip_prefix,
        previous_id=previous_session_id,
    )


async def pending_user(db: AsyncSession, kind: str, raw_id: str | None) -> StaffUser | None:
    """Return the active staff member behind a pending session of ``kind``, or None."""
    session = await load_session(db, kind=kind, raw_id=raw_id)
    user = await db.get(StaffUser, session.subject_id) if session else None
    if user is None or user.disabled_at is not None:
        return None
    return user


async def verify_second_factor(
    db: AsyncSession,
    who: Actor,
    *,
    pending_session_id: str | None,
    entered: str,
    totp_key: bytes,
    policy: SecurityPolicy,
    throttle: LoginThrottle,
) -> SignInResult:
    """Check a TOTP or recovery code against the pending session's account; on success sign in fully."""
    user = await pending_user(db, "staff_totp", pending_session_id)
    if user is None:
        return SignInResult("expired")

    reason = await throttle_reason(db, throttle, user.email)
    if reason:
        details: EventDetails = {"step": "second_factor", "reason": reason}
        await record(db, _as(who, user), "staff.login.failed", outcome="failure", details=details)
        return SignInResult("throttled", user)

    if totp.looks_like_totp(entered):
        method, failure = "totp", await _accept_totp(db, user, entered, totp_key)
    else:
        method, failure = "recovery_code", await _accept_recovery_code(db, user, entered)

    if failure:
        await count_failure(db, throttle, user.email)
        details = {"step": "second_factor", "method": method, "reason": failure}
        await record(db, _as(who, user), "staff.login.failed", outcome="failure", details=details)
        return SignInResult("invalid", user)

    raw_id = await start_full_session(db, who, user, policy, previous_session_id=pending_session_id)
    await record(db, _as(who, user), "staff.login", details={"step": "second_factor", "method": method})
    return SignInResult("signed_in", user, raw_id)


async def _accept_totp(db: AsyncSession, user: StaffUser, entered: str, key: bytes) -> str | None:
    """Accept a TOTP code once; return None on success or the reason it failed."""
    if user.totp_secret_sealed is None:
        return "not_enrolled"
    secret = totp.unseal(key, user.id, user.totp_secret_sealed)

    step = totp.matching_step(secret, entered, user.totp_last_step)
    if step is None:
        replayed = totp.matching_step(secret, entered, None) is not None
        return "replayed" if replayed else "wrong_code"

    # The conditional UPDATE makes the step single-use even when two requests race with the same code.
    claimed = await db.execute(
        update(StaffUser)
        .where(
            StaffUser.id == user.id,
            or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return None if claimed.rowcount == 1 else "replayed"  # type: ignore[attr-defined]


async def _accept_recovery_code(db: AsyncSession, user: StaffUser, entered: str) -> str | None:
    """Spend one unused recovery code; return None on success or the reason it failed."""
    code = totp.normalise_recovery_code(entered)
    if code is None:
        return "malformed_code"

    rows = (
        await db.scalars(
            select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )
    ).all()
    for row in rows:
        if await verify_secret(CODE_HASHER, row.code_hash, code):
            spent = await db.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return None if spent.rowcount == 1 else "used_code"  # type: ignore[attr-defined]
    return "wrong_code"
