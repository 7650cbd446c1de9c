"""Account administration: change a role, disable or enable an account, list and revoke API tokens.

Changing a role or disabling an account ends every session of that person and revokes their API tokens
in the same transaction, so the next request they make fails. Disabling also ends the account's open
password reset links. Enabling an account again brings back neither
the sessions nor the tokens: the person signs in again with the password and second factor that the account
kept, and needs new API tokens.
An administrator cannot change, disable or enable their own account, which also keeps at least one
administrator in place.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import Actor, record
from portal.errors import InvalidInput, NotFound
from portal.i18n import _
from portal.labels import role_label
from portal.models import ApiToken, StaffUser, utcnow
from portal.staff.password_reset import end_reset_links, follow_role
from portal.staff.service import MAX_TOKEN_DAYS, check_role, cut_off

EventDetails = dict[str, str | int | bool | None]


def _parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def list_staff(db: AsyncSession) -> list[StaffUser]:
    return list((await db.scalars(select(StaffUser).order_by(StaffUser.email))).all())


async def load_staff(db: AsyncSession, staff_id: str) -> StaffUser:
    key = _parse_id(staff_id)
    user = await db.get(StaffUser, key) if key else None
    if user is None:
        raise NotFound(_("No staff account with this id. Go back to the list and pick one."))
    return user


def _not_self(admin: StaffUser, target: StaffUser) -> None:
    if admin.id == target.id:
        raise InvalidInput(_("You cannot change or disable your own account. Ask another administrator."))


async def change_role(db: AsyncSession, who: Actor, admin: StaffUser, target: StaffUser, role: str) -> int:
    """Give ``target`` a new role, end their sessions and revoke their tokens; return the tokens revoked."""
    check_role(role)
    _not_self(admin, target)
    if target.role == role:
        raise InvalidInput(
            _("{email} already has the role “{role}”. Choose another role to change it.").format(
                email=target.email, role=role_label(role)
            ),
            field="role",
        )

    previous = target.role
    target.role = role
    revoked = await cut_off(db, target.id)
    await follow_role(db, target.id, role)
    details: EventDetails = {
        "staff_id": str(target.id),
        "from": previous,
        "to": role,
        "tokens_revoked": revoked,
    }
    await record(db, who, "staff.role_changed", details=details)
    return revoked


async def disable(db: AsyncSession, who: Actor, admin: StaffUser, target: StaffUser) -> int:
    """Disable ``target``, end their sessions and revoke their tokens; return the tokens revoked."""
    _not_self(admin, target)
    if not await _switch_disabled(db, target, disabled=True):
        raise InvalidInput(_("{email} is already disabled.").format(email=target.email))

    revoked = await cut_off(db, target.id)
    # An open reset link would otherwise set a password on the disabled account; enabling does not revive it.
    await end_reset_links(db, target.id, utcnow())
    await record(db, who, "staff.disabled", details={"staff_id": str(target.id), "tokens_revoked": revoked})
    return revoked


async def enable(db: AsyncSession, who: Actor, admin: StaffUser, target: StaffUser) -> None:
    """Enable the disabled account ``target`` again, keeping its password and second factor.

    Raises InvalidInput when the account is not disabled, or is the administrator's own.
    """
    _not_self(admin, target)
    if not await _switch_disabled(db, target, disabled=False):
        raise InvalidInput(
            _("{email} is not disabled, so there is nothing to enable.").format(email=target.email)
        )

    await record(db, who, "staff.enabled", details={"staff_id": str(target.id)})


async def _switch_disabled(db: AsyncSession, target: StaffUser, *, disabled: bool) -> bool:
    """Disable or enable ``target`` if it is not so already; return False when another request did it first.

    A conditional update, so two administrators acting on one account at once record one event, not two.
    """
    current = StaffUser.disabled_at.is_(None) if disabled else StaffUser.disabled_at.is_not(None)
    result = await db.execute(
        update(StaffUser)
        .where(StaffUser.id == target.id, current)
        .values(disabled_at=utcnow() if disabled else None)
        .execution_options(synchronize_session=False)
    )
    await db.refresh(target)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def list_tokens(db: AsyncSession) -> list[ApiToken]:
    return list((await db.scalars(select(ApiToken).order_by(ApiToken.created_at.desc()))).unique().all())


def parse_days(value: str | None) -> int:
    text = (value or "").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_TOKEN_DAYS:
        raise InvalidInput(
            _("Expiry must be a whole number of days from 1 to {maximum}.").format(maximum=MAX_TOKEN_DAYS),
            field="days",
        )
    return int(text)


async def revoke_token(db: AsyncSession, who: Actor, token_id: str) -> None:
    """Revoke one API token; revoking an already revoked token changes nothing and records nothing."""
    key = _parse_id(token_id)
    row = await db.get(ApiToken, key) if key else None
    if row is None:
        raise NotFound(_("No API token with this id. Go back to the list and pick one."))

    result = await db.execute(
        update(ApiToken)
        .where(ApiToken.id == row.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        await record(
            db, who, "api_token.revoked", details={"token_id": str(row.id), "staff_id": str(row.user_id)}
        )
