"""Staff accounts and API tokens: creating them and checking their input."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import SYSTEM, Actor, record
from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import ApiToken, StaffUser, utcnow
from portal.security import passwords
from portal.security.hashing import STAFF_PASSWORD_HASHER, hash_secret, sha256_hex
from portal.security.sessions import end_sessions_of

ROLES = ("clinician", "admin", "dpo")
# API token lifetimes in days: the default of the admin page's form and of `portal tokens create`, and the
# maximum that both accept.
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365
# API token scopes: upload documents, create and follow shares, read the access log.
TOKEN_SCOPES = ("upload", "share", "audit-read")
# The roles whose API routes each scope opens. A token acts with its owner's role, so a scope outside it
# would be rejected on every request and is not granted.
SCOPE_ROLES: dict[str, tuple[str, ...]] = {
    "upload": ("clinician", "admin"),
    "share": ("clinician", "admin"),
    "audit-read": ("dpo", "admin"),
}


def scopes_for_role(role: str) -> list[str]:
    """Return the scopes a token of a staff member with ``role`` can use, in canonical order."""
    return [scope for scope in TOKEN_SCOPES if role in SCOPE_ROLES[scope]]


# Session kinds of one staff member: signed in, waiting for the second factor, waiting for TOTP enrolment.
STAFF_SESSION_KINDS = ("staff", "staff_totp", "staff_enrol")
MIN_PASSWORD_LENGTH = passwords.MIN_LENGTH
MAX_PASSWORD_LENGTH = passwords.MAX_LENGTH
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if "<" in value or ">" in value:
        raise InvalidInput(
            _("'{value}' has a name or angle brackets. Enter only the address, for example a.b@clinic.example.").format(
                value=email[:80]
            ),
            field="email",
        )
    if not _EMAIL.match(value):
        raise InvalidInput(_("'{value}' is not an e-mail address.").format(value=email[:80]), field="email")
    return value


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(
            _("Role '{role}' is unknown. Use clinician, admin or dpo.").format(role=role[:20]), field="role"
        )
    return role


def check_password(password: str, email: str | None = None) -> None:
    """Raise InvalidInput naming the password rule that ``password`` breaks."""
    passwords.check_password(password, email)


async def add_user(
    db: AsyncSession, email: str, role: str, password: str, *, who: Actor = SYSTEM
) -> StaffUser:
    """Create an active staff account and record ``staff.created``."""
    check_role(role)
    address = normalise_email(email)
    check_password(password, address)
    if await db.scalar(select(StaffUser).where(StaffUser.email == address)):
        raise InvalidInput(
            _("A staff account for {address} exists already.").format(address=address), field="email"
        )

    user = StaffUser(
        email=address, role=role, password_hash=await hash_secret(STAFF_PASSWORD_HASHER, password)
    )
    db.add(user)
    await db.flush()
    await record(db, who, "staff.created", details={"role": role, "staff_id": str(user.id)})
    return user


def parse_scopes(values: Sequence[str]) -> list[str]:
    """Return the requested token scopes in canonical order; raise InvalidInput for unknown or none."""
    unknown = sorted(set(values) - set(TOKEN_SCOPES))
    if unknown:
        raise InvalidInput(
            _("Unknown token scope '{scope}'. Use upload, share or audit-read.").format(
                scope=unknown[0][:20]
            ),
            field="scopes",
        )
    if not values:
        raise InvalidInput(_("Choose at least one scope for the token."), field="scopes")
    return [scope for scope in TOKEN_SCOPES if scope in values]


async def issue_token(
    db: AsyncSession,
    who: Actor,
    owner: StaffUser,
    *,
    label: str,
    scopes: Sequence[str] | None = None,
    days: int | None = None,
) -> tuple[ApiToken, str]:
    """Create an API token for ``owner`` and return the row with the token; only its SHA-256 is stored.

    Without ``scopes`` the token gets every scope the owner's role can use.

    Raises:
        InvalidInput: the owner is disabled, or a scope is unknown or outside the owner's role.
    """
    if owner.disabled_at is not None:
        raise InvalidInput(
            _("{email} is disabled; tokens can only belong to active accounts.").format(email=owner.email)
        )
    usable = scopes_for_role(owner.role)
    granted = parse_scopes(usable if scopes is None else scopes)
    for scope in granted:
        if scope not in usable:
            raise InvalidInput(
                _(
                    "A token of {email} cannot use the scope '{scope}', because the account's role does not "
                    "allow those requests. Choose from: {usable}."
                ).format(email=owner.email, scope=scope, usable=", ".join(usable)),
                field="scopes",
            )

    token = "pt_" + secrets.token_urlsafe(32)
    expires_at = utcnow() + dt.timedelta(days=days) if days else None
    row = ApiToken(
        user_id=owner.id,
        token_hash=sha256_hex(token),
        label=label.strip()[:100],
        scopes=" ".join(granted),
        expires_at=expires_at,
    )
    db.add(row)
    await db.flush()
    await record(
        db,
        who,
        "api_token.created",
        details={"token_id": str(row.id), "staff_id": str(owner.id), "scopes": row.scopes},
    )
    return row, token


async def create_token(
    db: AsyncSession, email: str, label: str, days: int | None, scopes: Sequence[str] | None = None
) -> str:
    """Create an API token for the staff member with ``email`` (the command line's entry point).

    Without ``scopes`` the token gets every scope the staff member's role can use.
    """
    user = await db.scalar(select(StaffUser).where(StaffUser.email == normalise_email(email)))
    if user is None or user.disabled_at is not None:
        raise InvalidInput(f"No active staff account for {email}. Add it first with 'portal users add'.")

    _row, token = await issue_token(db, SYSTEM, user, label=label, scopes=scopes, days=days)
    return token


async def cut_off(db: AsyncSession, user_id: uuid.UUID) -> int:
    """End every session of a staff member and revoke their live API tokens; return how many tokens."""
    for kind in STAFF_SESSION_KINDS:
        await end_sessions_of(db, kind=kind, subject_id=user_id)

    result = await db.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0  # type: ignore[attr-defined]
