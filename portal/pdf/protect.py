"""AES-256 encryption of delivered copies, and nothing weaker.

pikepdf writes RC4 or AES-128 when asked for a lower revision, so every encrypted save in this package goes
through ``save_encrypted``, which rejects anything but revision 6 (AES-256). The owner password is 256
random bits from ``secrets``; it is never returned or stored, so no one can use it to lift the permissions.
Permissions themselves are advisory: a viewer that ignores them can still print or copy.
"""

import secrets
from typing import Literal

import pikepdf

from portal.pdf import buffers

REVISION: Literal[6] = 6


class WeakEncryptionError(ValueError):
    """Raised when code tries to save a copy with an encryption weaker than AES-256 revision 6."""


def build_encryption(user_password: str | None, allow_print: bool, allow_copy: bool) -> pikepdf.Encryption:
    """Build the revision 6 (AES-256) settings for one copy with a fresh random owner password."""
    permissions = pikepdf.Permissions(
        accessibility=True,
        extract=allow_copy,
        modify_annotation=False,
        modify_assembly=False,
        modify_form=False,
        modify_other=False,
        print_lowres=allow_print,
        print_highres=allow_print,
    )
    encryption = pikepdf.Encryption(
        owner=secrets.token_hex(32),
        user=user_password or "",
        R=REVISION,
        allow=permissions,
        aes=True,
        metadata=True,
    )
    check_encryption(encryption)
    return encryption


def check_encryption(encryption: pikepdf.Encryption) -> None:
    """Raise ``WeakEncryptionError`` unless ``encryption`` is AES-256 R6 with a long owner password."""
    if encryption.R != REVISION or not encryption.aes:
        raise WeakEncryptionError(
            f"Refusing to write PDF encryption revision {encryption.R} (aes={encryption.aes}); "
            "only revision 6 (AES-256) is allowed."
        )
    if len(encryption.owner) < 32:
        raise WeakEncryptionError(
            "Refusing to write a PDF whose owner password is shorter than 32 characters."
        )


def save_encrypted(pdf: pikepdf.Pdf, encryption: pikepdf.Encryption) -> bytes:
    """Save ``pdf`` encrypted with ``encryption`` after checking that it is revision 6.

    XMP is not rewritten, because qpdf fails on unparseable XMP when ``fix_metadata_version`` is on.
    """
    check_encryption(encryption)
    return buffers.save_bytes(
        pdf,
        encryption=encryption,
        fix_metadata_version=False,
        object_stream_mode=pikepdf.ObjectStreamMode.preserve,
    )
