"""TOTP enrolment for the signed-in staff member.

The set-up page shows a new secret and carries it, sealed and time-stamped, in a hidden form field. The
database stores nothing until the staff member confirms with a valid code. Confirming stores the sealed
secret, the confirmed time step (so that code cannot sign in again) and 10 new recovery codes, which are
returned once for display.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import RecoveryCode, StaffUser
from portal.security import totp
from portal.security.hashing import CODE_HASHER, hash_secret


@dataclass(frozen=True)
class EnrolmentForm:
    """Content of the set-up page: the secret as text and QR code, and the sealed field to post back."""

    secret: str
    qr_svg: str
    pending: str


def start_enrolment(key: bytes, user: StaffUser, issuer: str) -> EnrolmentForm:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, user.email, issuer)
    return EnrolmentForm(
        secret=secret,
        qr_svg=totp.qr_svg(uri, _("QR code for your authenticator app")),
        pending=totp.seal_pending(key, user.id, secret),
    )


def grouped(secret: str) -> str:
    """Return the secret in groups of four characters, as authenticator apps accept it typed."""
    return " ".join(secret[index : index + 4] for index in range(0, len(secret), 4))


def reopen_enrolment(key: bytes, user: StaffUser, issuer: str, pending: str) -> EnrolmentForm | None:
    """Rebuild the set-up form from its sealed field, so a mistyped code keeps the same secret."""
    try:
        secret = totp.unseal_pending(key, user.id, pending)
    except totp.SealedSecretInvalid:
        return None
    uri = totp.provisioning_uri(secret, user.email, issuer)
    return EnrolmentForm(
        secret=secret, qr_svg=totp.qr_svg(uri, _("QR code for your authenticator app")), pending=pending
    )


async def confirm_enrolment(
    db: AsyncSession, user: StaffUser, key: bytes, pending: str, entered: str
) -> list[str]:
    """Activate TOTP after a valid code and return the new recovery codes in printed form.

    Raises:
        InvalidInput: TOTP is already active, the form expired, or the code does not match.
    """
    if user.totp_secret_sealed is not None:
        raise InvalidInput(_("Two-step sign-in is already on for your account."), field="code")

    try:
        secret = totp.unseal_pending(key, user.id, pending)
    except totp.SealedSecretInvalid:
        raise InvalidInput(
            _("The set-up page expired. Scan the new QR code below and enter the code it shows."),
            field="code",
        ) from None

    step = totp.matching_step(secret, entered, None)
    if step is None:
        raise InvalidInput(
            _(
                "The code does not match. Enter the 6-digit code your app shows now, "
                "and check the phone's clock."
            ),
            field="code",
        )

    user.totp_secret_sealed = totp.seal(key, user.id, secret)
    user.totp_last_step = step
    codes = totp.new_recovery_codes()
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    for code in codes:
        db.add(RecoveryCode(user_id=user.id, code_hash=await hash_secret(CODE_HASHER, code)))
    await db.flush()
    return codes
