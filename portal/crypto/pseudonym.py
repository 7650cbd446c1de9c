"""Pseudonyms of patient references: a keyed HMAC, so the access log can be searched by patient without
storing the clinic's reference itself.

Without the key a pseudonym cannot be recomputed from a guessed reference. With the key it can, so the
``pseudonym`` secret protects the log as much as the references themselves do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata

# Domain separation and a version, so a future scheme cannot produce the same strings.
_CONTEXT = b"portal.pseudonym.v1\x00"
# 128 bits: collisions stay negligible for any number of patients a clinic group will have.
_DIGEST_BYTES = 16
_MIN_KEY_BYTES = 32


def pseudonymise(key: bytes, patient_ref: str) -> str:
    """Return the 26-character lowercase base32 pseudonym of a patient reference under ``key``.

    The reference is normalised first (Unicode NFC, surrounding whitespace removed), so the same reference
    typed in a search form and stored at upload gives the same pseudonym. Letter case is kept: "ab12" and
    "AB12" are different references.

    Raises:
        ValueError: the key is shorter than 32 bytes or the reference is empty.
    """
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"The pseudonym key must be at least {_MIN_KEY_BYTES} bytes, got {len(key)}.")

    normalised = unicodedata.normalize("NFC", patient_ref).strip()
    if not normalised:
        raise ValueError("The patient reference is empty: a pseudonym needs a non-empty reference.")

    digest = hmac.new(key, _CONTEXT + normalised.encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest[:_DIGEST_BYTES]).decode("ascii").rstrip("=").lower()
