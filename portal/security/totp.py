"""Time-based one-time passwords (RFC 6238: SHA-1, 6 digits, 30-second steps) and recovery codes.

The TOTP secret is stored sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the key ring's
"session" secret, with the staff member's id as associated data, so a sealed secret copied to another row
does not open. A code is accepted for the current step and one step either side (clock drift), and only
for a step later than the last one accepted, which the caller enforces with a conditional UPDATE.

Recovery codes are 10 Crockford Base32 characters (50 bits from :mod:`secrets`), printed as two groups of
five. Only their argon2id hashes are stored, and each works once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
import uuid

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portal.security.codes import ALPHABET

STEP_SECONDS = 30
DIGITS = 6
# Steps accepted either side of the server's current step, for phones whose clock is slightly off.
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
RECOVERY_CODE_LENGTH = 10
# A confirmation form older than this must be reloaded, which shows a new secret.
PENDING_SECRET_SECONDS = 15 * 60

_NONCE_SIZE = 12
_ENTRY_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})


class SealedSecretInvalid(ValueError):
    """A sealed TOTP secret failed authentication, belongs to another account or has expired."""


def sealing_key(session_secret: bytes) -> bytes:
    """Derive the 32-byte key that seals TOTP secrets from the key ring's "session" secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"portal totp secret v1").derive(
        session_secret
    )


def new_secret() -> str:
    """Return a new Base32 TOTP secret of 160 bits, the key size RFC 4226 recommends."""
    return pyotp.random_base32(length=32)


def seal(key: bytes, user_id: uuid.UUID, secret: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, secret.encode(), b"totp:" + user_id.bytes)


def unseal(key: bytes, user_id: uuid.UUID, sealed: bytes) -> str:
    """Open a secret sealed by ``seal``; raise SealedSecretInvalid for a damaged or foreign value."""
    try:
        return (
            AESGCM(key).decrypt(sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], b"totp:" + user_id.bytes).decode()
        )
    except (InvalidTag, ValueError):
        raise SealedSecretInvalid(
            "The stored TOTP secret does not open under the current key ring."
        ) from None


def seal_pending(key: bytes, user_id: uuid.UUID, secret: str, now: float | None = None) -> str:
    """Seal a secret that awaits confirmation into a form field, stamped with the time it was issued."""
    issued = int(now if now is not None else time.time())
    nonce = secrets.token_bytes(_NONCE_SIZE)
    sealed = nonce + AESGCM(key).encrypt(
        nonce, f"{issued}:{secret}".encode(), b"totp-pending:" + user_id.bytes
    )
    return base64.urlsafe_b64encode(sealed).decode()


def unseal_pending(key: bytes, user_id: uuid.UUID, value: str, now: float | None = None) -> str:
    """Open a form field from ``seal_pending``; raises SealedSecretInvalid if it is damaged or too old."""
    try:
        sealed = base64.urlsafe_b64decode(value.encode())
        plain = AESGCM(key).decrypt(
            sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], b"totp-pending:" + user_id.bytes
        )
        issued_text, secret = plain.decode().split(":", 1)
        issued = int(issued_text)
    except (InvalidTag, ValueError, binascii.Error):
        raise SealedSecretInvalid("The set-up form is damaged or belongs to another account.") from None

    current = now if now is not None else time.time()
    if not 0 <= current - issued <= PENDING_SECRET_SECONDS:
        raise SealedSecretInvalid("The set-up form has expired.")
    return secret


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """Return the otpauth:// URI that authenticator apps read from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str, title: str) -> str:
    """Render ``uri`` as inline SVG markup; it has no style attributes, so the strict CSP allows it."""
    return segno.make(uri, error="m").svg_inline(scale=4, title=title, dark="#000", light="#fff")


def looks_like_totp(entered: str) -> bool:
    digits = entered.replace(" ", "").replace("-", "")
    return len(digits) == DIGITS and digits.isdigit()


def matching_step(secret: str, entered: str, last_step: int | None, now: float | None = None) -> int | None:
    """Return the time step whose code equals ``entered`` and is later than ``last_step``, else None."""
    code = entered.replace(" ", "").replace("-", "")
    if not (len(code) == DIGITS and code.isdigit()):
        return None

    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now if now is not None else time.time()) // STEP_SECONDS
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Return fresh recovery codes in printed form, e.g. ``7K2QD-M9XHA``."""
    codes = []
    for _index in range(RECOVERY_CODE_COUNT):
        body = "".join(secrets.choice(ALPHABET) for _position in range(RECOVERY_CODE_LENGTH))
        codes.append(f"{body[:5]}-{body[5:]}")
    return codes


def normalise_recovery_code(entered: str) -> str | None:
    """Return the canonical form of a typed recovery code (case, separators and I/L/O forgiven), or None."""
    text = "".join(entered.split()).replace("-", "").upper().translate(_ENTRY_ALIASES)
    if len(text) != RECOVERY_CODE_LENGTH or any(character not in ALPHABET for character in text):
        return None
    return f"{text[:5]}-{text[5:]}"
