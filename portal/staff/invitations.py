"""Invitation links: an administrator invites an e-mail address with a role, the invitee sets a password.

The link carries 256 random bits; the table keeps only their SHA-256. A link works once (a conditional
UPDATE on ``used_at``) and for 72 hours, or until an administrator withdraws it or invites the same address
again. Unknown, used, expired and withdrawn links get the same response.

Password reset links (``portal.staff.password_reset``) are rows of the same table with ``staff_id`` set.
This module creates, lists and withdraws both kinds; an invitation link never opens a reset row.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import Actor, record
from portal.errors import InvalidInput, NotFound, PortalError
from portal.i18n import _
from portal.models import Invitation, StaffUser, utcnow
from portal.security.hashing import STAFF_PASSWORD_HASHER, hash_secret, sha256_hex
from portal.staff.service import check_password, check_role, normalise_email

EventDetails = dict[str, str | int | bool | None]

INVITATION_LIFETIME = dt.timedelta(hours=72)
# Longer path segments are not tokens this portal issued; they are rejected before any lookup.
_MAX_TOKEN_LENGTH = 100


class InvitationUnavailable(PortalError):
    """The invitation link is unknown, used or expired; the page does not say which."""

    status_code = 410
    code = "invitation_unavailable"


@dataclass(frozen=True)
class NewInvitation:
    """An invitation just created, with the raw token of its link."""

    invitation: Invitation
    token: str  # shown once and stored only as its SHA-256
    replaced: int  # how many open invitations for the same address this one ended


def _unavailable() -> InvitationUnavailable:
    # The error page adds the next steps for staff: ask for a new invitation, or sign in.
    hours = int(INVITATION_LIFETIME.total_seconds() // 3600)
    return InvitationUnavailable(
        _(
            "This invitation link no longer works, or it is incomplete. An invitation link works once and for "
            "{hours} hours, and stops working when an administrator withdraws it or sends a newer invitation."
        ).format(hours=hours)
    )


async def create_invitation(
    db: AsyncSession, who: Actor, *, email: str, role: str, created_by: StaffUser
) -> NewInvitation:
    """Create an invitation and record ``staff.invited``.

    Earlier invitations for the same address that are still open stop working, and the result counts them.
    """
    address = normalise_email(email)
    check_role(role)
    if await db.scalar(select(StaffUser).where(StaffUser.email == address)):
        raise InvalidInput(
            _("A staff account for {address} exists already.").format(address=address), field="email"
        )

    # A new link for the same address replaces any earlier one still open, so only the newest one works.
    invitation, token, replaced = await open_link(
        db,
        Invitation.email == address,
        Invitation(email=address, role=role, created_by=created_by.id),
        INVITATION_LIFETIME,
    )
    details: EventDetails = {
        "role": role,
        "invitation_id": str(invitation.id),
        "replaced": replaced,
    }
    await record(db, who, "staff.invited", details=details)
    return NewInvitation(invitation, token, replaced)


async def open_link(
    db: AsyncSession, replaces: ColumnElement[bool], row: Invitation, lifetime: dt.timedelta
) -> tuple[Invitation, str, int]:
    """Store ``row`` with a new token that works for ``lifetime``, after ending the open links matching ``replaces``.

    Return the row, the raw token for the link and how many links it replaced.
    """
    now = utcnow()
    replaced = await end_open_links(db, replaces, now)

    token = secrets.token_urlsafe(32)
    row.token_hash = sha256_hex(token)
    row.expires_at = now + lifetime
    db.add(row)
    await db.flush()
    return row, token, replaced


async def find_open_link(db: AsyncSession, token: str, *, reset: bool) -> Invitation | None:
    """Return the unused, unexpired link row for ``token`` of the kind asked for, or None.

    ``reset`` picks password reset rows (``staff_id`` set) or invitations (``staff_id`` null), so a token
    only opens the page of its own kind.
    """
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None

    kind = Invitation.staff_id.is_not(None) if reset else Invitation.staff_id.is_(None)
    row = await db.scalar(select(Invitation).where(Invitation.token_hash == sha256_hex(token), kind))
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


async def spend_link(db: AsyncSession, row: Invitation) -> bool:
    """Mark ``row`` used if it is still open; return False when another request used or ended it first."""
    now = utcnow()
    spent = await db.execute(
        update(Invitation)
        .where(Invitation.id == row.id, Invitation.used_at.is_(None), Invitation.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(spent.rowcount == 1)  # type: ignore[attr-defined]


async def load_invitation(db: AsyncSession, token: str) -> Invitation:
    """Return the unused, unexpired invitation for ``token``; raise InvitationUnavailable otherwise."""
    invitation = await find_open_link(db, token, reset=False)
    if invitation is None:
        raise _unavailable()
    return invitation


async def accept_invitation(
    db: AsyncSession, who: Actor, token: str, password: str, repeated: str
) -> StaffUser:
    """Spend the invitation and create the account with ``password``; record ``staff.created``.

    Raises:
        InvitationUnavailable: the link is unknown, used or expired (also when two requests race).
        InvalidInput: the passwords differ or break a password rule; the invitation stays unused.
    """
    invitation = await load_invitation(db, token)
    if password != repeated:
        raise InvalidInput(
            _("The two passwords differ. Type the same password twice."), field="password_repeat"
        )
    check_password(password, invitation.email)

    if not await spend_link(db, invitation):
        raise _unavailable()

    if await db.scalar(select(StaffUser).where(StaffUser.email == invitation.email)):
        raise _unavailable()

    user = StaffUser(
        email=invitation.email,
        role=invitation.role,
        password_hash=await hash_secret(STAFF_PASSWORD_HASHER, password),
    )
    db.add(user)
    await db.flush()
    actor = Actor(f"staff:{user.id}", who.ip_prefix, who.user_agent_family, who.request_id)
    details: EventDetails = {
        "stage": "activated",
        "role": user.role,
        "staff_id": str(user.id),
        "invitation_id": str(invitation.id),
    }
    await record(db, actor, "staff.created", details=details)
    return user


async def open_invitations(db: AsyncSession) -> list[Invitation]:
    """Return the invitations and password reset links that are neither used nor expired, newest first."""
    now = utcnow()
    query = (
        select(Invitation)
        .where(Invitation.used_at.is_(None), Invitation.expires_at > now)
        .order_by(Invitation.created_at.desc())
    )
    return list((await db.scalars(query)).all())


async def withdraw_invitation(db: AsyncSession, who: Actor, invitation_id: str) -> Invitation:
    """End an open invitation or password reset link at once, so it stops working.

    Records ``staff.invitation_withdrawn``, or ``staff.password_reset_withdrawn`` for a reset link.

    Raises:
        NotFound: no invitation has this id.
        InvalidInput: the invitation is used, expired or withdrawn already.
    """
    try:
        key = uuid.UUID(invitation_id)
    except ValueError:
        raise NotFound(_("No invitation has the id {value}.").format(value=invitation_id[:40])) from None
    invitation = await db.get(Invitation, key)
    if invitation is None:
        raise NotFound(_("No invitation has the id {value}.").format(value=key))

    # A conditional update, so two administrators withdrawing at once record one event, not two.
    if await end_open_links(db, Invitation.id == key, utcnow()) != 1:
        if invitation.staff_id is not None:
            message = _("The password reset link for {email} is used, expired or withdrawn already.")
        else:
            message = _("The invitation for {email} is used, expired or withdrawn already.")
        raise InvalidInput(message.format(email=invitation.email))
    await db.refresh(invitation)

    details: EventDetails = {"invitation_id": str(invitation.id), "role": invitation.role}
    if invitation.staff_id is None:
        await record(db, who, "staff.invitation_withdrawn", details=details)
    else:
        details["staff_id"] = str(invitation.staff_id)
        await record(db, who, "staff.password_reset_withdrawn", details=details)
    return invitation


async def end_open_links(db: AsyncSession, condition: ColumnElement[bool], now: dt.datetime) -> int:
    """Let the open invitations that match ``condition`` expire now; return how many there were."""
    ended = await db.execute(
        update(Invitation)
        .where(condition, Invitation.used_at.is_(None), Invitation.expires_at > now)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]
