"""New passwords for existing accounts: a reset link an administrator issues, and the signed-in staff
member's own password change.

A reset link is a row of the invitation table with ``staff_id`` set, so it shares the invitation's token
handling: 256 random bits of which only the SHA-256 is stored, single use through a conditional UPDATE,
and withdrawal from the staff page. It works for 24 hours, until it is used or withdrawn, until a newer
reset link for the same account replaces it, or until the account is disabled. Unknown, used, expired and
withdrawn links get the same response.

A signed-in staff member changes their own password by typing the current one. A wrong current password
counts against the same per-account throttle as a failed sign-in, and the throttles that stop sign-ins
stop password changes too.

Either way of setting a password ends every session of the account; API tokens stay valid, because they
belong to systems rather than to a browser. A password change then issues a fresh session for the browser
that made it. A reset link may also remove the account's TOTP secret and recovery codes, for a lost phone.
The next sign-in then leads to TOTP set-up again when the security policy requires two-step sign-in, and
signs in with the password alone when it does not.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import Actor, record
from portal.errors import InvalidInput, NotAuthenticated
from portal.i18n import _
from portal.models import Invitation, RecoveryCode, StaffUser
from portal.policies import SecurityPolicy
from portal.security.hashing import STAFF_PASSWORD_HASHER, hash_secret, verify_secret
from portal.security.sessions import end_sessions_of
from portal.staff.invitations import (
    InvitationUnavailable,
    end_open_links,
    find_open_link,
    open_link,
    spend_link,
)
from portal.staff.service import MAX_PASSWORD_LENGTH, STAFF_SESSION_KINDS, check_password
from portal.staff.signin import LoginThrottle, count_failure, start_full_session, throttle_reason

EventDetails = dict[str, str | int | bool | None]

RESET_LINK_LIFETIME = dt.timedelta(hours=24)


def _unavailable() -> InvitationUnavailable:
    return InvitationUnavailable(
        _("This password reset link is invalid, expired or already used. Ask an administrator for a new one.")
    )


async def issue_reset(
    db: AsyncSession, who: Actor, admin: StaffUser, target: StaffUser, *, reset_totp: bool
) -> tuple[Invitation, str]:
    """Create a reset link for ``target`` and return its row with the raw token; record
    ``staff.password_reset_issued``. An older open reset link for the account stops working.

    Raises:
        InvalidInput: the account is the administrator's own, or it is disabled.
    """
    # A signed-in administrator changes their own password on the password page, which requires the
    # current one. A reset link for oneself would let a borrowed session replace the password and remove
    # the second factor without knowing either.
    if admin.id == target.id:
        raise InvalidInput(
            _(
                "You cannot reset your own password here. Change it on your password page, or ask another "
                "administrator for a reset link."
            )
        )
    if target.disabled_at is not None:
        raise InvalidInput(
            _("The account of {email} is disabled. Enable it first, then create a reset link.").format(
                email=target.email
            )
        )

    row, token, replaced = await open_link(
        db,
        Invitation.staff_id == target.id,
        Invitation(
            email=target.email,
            role=target.role,
            created_by=admin.id,
            staff_id=target.id,
            reset_totp=reset_totp,
        ),
        RESET_LINK_LIFETIME,
    )
    details: EventDetails = {
        "staff_id": str(target.id),
        "invitation_id": str(row.id),
        "totp_reset": reset_totp,
        "replaced": replaced,
    }
    await record(db, who, "staff.password_reset_issued", details=details)
    return row, token


async def end_reset_links(db: AsyncSession, staff_id: uuid.UUID, now: dt.datetime) -> int:
    """End the open reset links of one account, for example when it is disabled; return how many."""
    return await end_open_links(db, Invitation.staff_id == staff_id, now)


async def follow_role(db: AsyncSession, staff_id: uuid.UUID, role: str) -> None:
    """Give the open reset links of one account its new role, so the open-invitations list shows it."""
    await db.execute(
        update(Invitation)
        .where(Invitation.staff_id == staff_id, Invitation.used_at.is_(None))
        .values(role=role)
        .execution_options(synchronize_session=False)
    )


async def load_reset(db: AsyncSession, token: str) -> tuple[Invitation, StaffUser]:
    """Return the open reset link for ``token`` and its active account; raise InvitationUnavailable
    otherwise."""
    row = await find_open_link(db, token, reset=True)
    account = await db.get(StaffUser, row.staff_id) if row and row.staff_id else None
    if row is None or account is None or account.disabled_at is not None:
        raise _unavailable()
    return row, account


def _check_new_password(account: StaffUser, password: str, repeated: str) -> None:
    if password != repeated:
        raise InvalidInput(
            _("The two passwords differ. Type the same password twice."), field="password_repeat"
        )
    check_password(password, account.email)


async def _store_password(db: AsyncSession, account: StaffUser, password: str) -> None:
    """Store the argon2id hash of ``password`` and end every session of the account."""
    account.password_hash = await hash_secret(STAFF_PASSWORD_HASHER, password)
    for kind in STAFF_SESSION_KINDS:
        await end_sessions_of(db, kind=kind, subject_id=account.id)


async def complete_reset(
    db: AsyncSession, who: Actor, token: str, password: str, repeated: str
) -> tuple[StaffUser, bool]:
    """Spend the reset link and give its account ``password``; return the account and whether TOTP was
    removed. Records ``staff.password_changed``.

    Raises:
        InvitationUnavailable: the link is unknown, used, expired or withdrawn, or the account is disabled
            (also when two requests race).
        InvalidInput: the passwords differ or break a password rule; the link stays usable.
    """
    row, account = await load_reset(db, token)
    _check_new_password(account, password, repeated)
    if not await spend_link(db, row):
        raise _unavailable()

    await _store_password(db, account, password)
    if row.reset_totp:
        account.totp_secret_sealed = None
        account.totp_last_step = None
        await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == account.id))
    await db.flush()

    actor = Actor(f"staff:{account.id}", who.ip_prefix, who.user_agent_family, who.request_id)
    details: EventDetails = {
        "staff_id": str(account.id),
        "via": "reset_link",
        "invitation_id": str(row.id),
        "totp_reset": row.reset_totp,
    }
    await record(db, actor, "staff.password_changed", details=details)
    return account, row.reset_totp


@dataclass(frozen=True)
class PasswordChange:
    """Outcome of a password change, with the new session id for the cookie when it succeeded."""

    outcome: str  # changed | wrong_password | throttled
    session_id: str | None = None


async def change_own_password(
    db: AsyncSession,
    who: Actor,
    user: StaffUser,
    *,
    current: str,
    password: str,
    repeated: str,
    policy: SecurityPolicy,
    throttle: LoginThrottle,
    session_id: str | None,
) -> PasswordChange:
    """Replace ``user``'s password after checking the current one; record ``staff.password_changed``.

    A wrong current password is returned as an outcome rather than raised, so the failure count and the
    event commit with the transaction. On success every session of the account ends, ``session_id``
    included, and the result carries a fresh session id for this browser.

    Raises:
        InvalidInput: the new passwords differ, break a password rule or equal the current password.
    """
    # The signed-in user was loaded in another transaction; this one changes the stored row.
    account = await db.get(StaffUser, user.id)
    if account is None or account.disabled_at is not None:
        raise NotAuthenticated(_("Sign in to continue."))

    reason = await throttle_reason(db, throttle, account.email)
    if reason:
        details: EventDetails = {"staff_id": str(account.id), "via": "self_service", "reason": reason}
        await record(db, who, "staff.password_changed", outcome="failure", details=details)
        return PasswordChange("throttled")

    if not await verify_secret(STAFF_PASSWORD_HASHER, account.password_hash, current[:MAX_PASSWORD_LENGTH]):
        await count_failure(db, throttle, account.email)
        details = {"staff_id": str(account.id), "via": "self_service", "reason": "wrong_current_password"}
        await record(db, who, "staff.password_changed", outcome="failure", details=details)
        return PasswordChange("wrong_password")

    _check_new_password(account, password, repeated)
    if password == current:
        raise InvalidInput(
            _("The new password is the same as the current one. Choose a different password."),
            field="password",
        )

    await _store_password(db, account, password)
    await db.flush()
    new_id = await start_full_session(db, who, account, policy, previous_session_id=session_id)
    await record(
        db, who, "staff.password_changed", details={"staff_id": str(account.id), "via": "self_service"}
    )
    return PasswordChange("changed", new_id)
