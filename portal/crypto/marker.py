"""Forensic markers: a share id encrypted as one AES-256 block, to hide in a delivered PDF's /ID and XMP.

A single AES block under a secret key is a keyed pseudorandom permutation: markers of different shares look
unrelated, and only the key holder can map a marker back to its share. Any 16 bytes decrypt to some UUID,
so ``decode_marker`` cannot tell a forged or foreign marker from a real one. The caller looks the UUID up
and treats an unknown id as "not ours".
"""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MARKER_SIZE = 16
_KEY_SIZE = 32


def encode_marker(key: bytes, share_id: uuid.UUID) -> bytes:
    """Encrypt a share id into a 16-byte marker under the 32-byte ``marker`` key."""
    encryptor = _cipher(key).encryptor()
    return encryptor.update(share_id.bytes) + encryptor.finalize()


def decode_marker(key: bytes, marker: bytes) -> uuid.UUID:
    """Decrypt a 16-byte marker back into the share id it was made from.

    Raises:
        ValueError: the key is not 32 bytes or the marker is not 16 bytes.
    """
    if len(marker) != MARKER_SIZE:
        raise ValueError(f"A marker must be {MARKER_SIZE} bytes, got {len(marker)}.")

    decryptor = _cipher(key).decryptor()
    return uuid.UUID(bytes=decryptor.update(marker) + decryptor.finalize())


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    if len(key) != _KEY_SIZE:
        raise ValueError(f"The marker key must be {_KEY_SIZE} bytes, got {len(key)}.")

    # ECB over exactly one block is the raw block cipher, which is the permutation wanted here. Because the
    # input is always one block, ECB's pattern leak across blocks cannot occur.
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305
