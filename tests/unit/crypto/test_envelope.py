"""Round trips and tamper detection of the segmented AES-256-GCM envelope."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable

import pytest

from portal.crypto.envelope import (
    HEADER_SIZE,
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    BlobIntegrityError,
    ciphertext_size,
    decrypt_async,
    decrypt_stream,
    encrypt_async,
    encrypt_stream,
    new_data_key,
    plaintext_size,
)

BLOB_ID = "3f1c0a9e8d7b6c5a4f3e2d1c0b9a8f7e"
OTHER_BLOB_ID = "0123456789abcdef0123456789abcdef"
# Three full segments and a short final one.
MULTI_SEGMENT_SIZE = 3 * SEGMENT_SIZE + 100


def encrypt(dek: bytes, blob_id: str, plaintext: bytes) -> bytes:
    return b"".join(encrypt_stream(dek, blob_id, [plaintext]))


def segment_offset(index: int) -> int:
    return HEADER_SIZE + index * SEALED_SEGMENT_SIZE


def split(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def decrypt_until_error(dek: bytes, blob_id: str, ciphertext: bytes) -> tuple[bytes, BlobIntegrityError]:
    """Decrypt fed one sealed segment at a time; return what was yielded before the error."""
    yielded = bytearray()
    with pytest.raises(BlobIntegrityError) as raised:
        for piece in decrypt_stream(dek, blob_id, split(ciphertext, SEALED_SEGMENT_SIZE)):
            yielded += piece
    return bytes(yielded), raised.value


@pytest.fixture
def dek() -> bytes:
    return new_data_key()


@pytest.fixture
def plaintext() -> bytes:
    return os.urandom(MULTI_SEGMENT_SIZE)


@pytest.mark.parametrize(
    "size",
    [0, 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 5_000_000],
    ids=["empty", "one-byte", "one-segment", "one-segment-plus-one", "5MB"],
)
def test_envelope_round_trip(dek: bytes, size: int) -> None:
    plaintext = os.urandom(size)

    # Odd chunk sizes on both sides exercise the buffering across segment boundaries.
    ciphertext = b"".join(encrypt_stream(dek, BLOB_ID, split(plaintext, 10_007) or [b""]))
    decrypted = b"".join(decrypt_stream(dek, BLOB_ID, split(ciphertext, 7_919)))

    assert decrypted == plaintext
    assert len(ciphertext) == ciphertext_size(size)
    assert plaintext_size(len(ciphertext)) == size


def test_envelope_segment_count(dek: bytes) -> None:
    assert len(encrypt(dek, BLOB_ID, b"")) == HEADER_SIZE + TAG_SIZE
    assert len(encrypt(dek, BLOB_ID, bytes(SEGMENT_SIZE))) == HEADER_SIZE + SEALED_SEGMENT_SIZE
    assert (
        len(encrypt(dek, BLOB_ID, bytes(SEGMENT_SIZE + 1)))
        == HEADER_SIZE + SEALED_SEGMENT_SIZE + 1 + TAG_SIZE
    )


def test_envelope_items_per_segment(dek: bytes, plaintext: bytes) -> None:
    items = list(encrypt_stream(dek, BLOB_ID, [plaintext]))

    assert len(items[0]) == HEADER_SIZE
    assert [len(item) for item in items[1:]] == [SEALED_SEGMENT_SIZE] * 3 + [100 + TAG_SIZE]


def test_envelope_fresh_nonce_per_encryption(dek: bytes, plaintext: bytes) -> None:
    assert encrypt(dek, BLOB_ID, plaintext) != encrypt(dek, BLOB_ID, plaintext)


async def test_envelope_async_round_trip(dek: bytes, plaintext: bytes) -> None:
    async def source(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    ciphertext = b"".join(
        [item async for item in encrypt_async(dek, BLOB_ID, source(split(plaintext, 5_000)))]
    )
    decrypted = b"".join(
        [item async for item in decrypt_async(dek, BLOB_ID, source(split(ciphertext, 3_000)))]
    )

    assert decrypted == plaintext
    assert b"".join(decrypt_stream(dek, BLOB_ID, [ciphertext])) == plaintext


def test_envelope_flipped_bit(dek: bytes, plaintext: bytes) -> None:
    ciphertext = bytearray(encrypt(dek, BLOB_ID, plaintext))
    ciphertext[segment_offset(1) + 1000] ^= 0x01

    yielded, error = decrypt_until_error(dek, BLOB_ID, bytes(ciphertext))

    assert yielded == plaintext[:SEGMENT_SIZE]
    assert "segment 1" in str(error)


def test_envelope_flipped_tag_bit(dek: bytes, plaintext: bytes) -> None:
    ciphertext = bytearray(encrypt(dek, BLOB_ID, plaintext))
    ciphertext[-1] ^= 0x80

    yielded, _ = decrypt_until_error(dek, BLOB_ID, bytes(ciphertext))

    assert yielded == plaintext[: 3 * SEGMENT_SIZE]


@pytest.mark.parametrize("position", [0, 4, HEADER_SIZE - 1], ids=["magic", "version", "nonce-prefix"])
def test_envelope_altered_header(dek: bytes, plaintext: bytes, position: int) -> None:
    ciphertext = bytearray(encrypt(dek, BLOB_ID, plaintext))
    ciphertext[position] ^= 0x01

    yielded, _ = decrypt_until_error(dek, BLOB_ID, bytes(ciphertext))

    assert yielded == b""


def test_envelope_truncated_inside_segment(dek: bytes, plaintext: bytes) -> None:
    ciphertext = encrypt(dek, BLOB_ID, plaintext)[: segment_offset(2) + 500]

    yielded, _ = decrypt_until_error(dek, BLOB_ID, ciphertext)

    assert yielded == plaintext[: 2 * SEGMENT_SIZE]


def test_envelope_truncated_at_segment_boundary(dek: bytes, plaintext: bytes) -> None:
    ciphertext = encrypt(dek, BLOB_ID, plaintext)[: segment_offset(2)]

    yielded, error = decrypt_until_error(dek, BLOB_ID, ciphertext)

    assert yielded == plaintext[:SEGMENT_SIZE]
    assert "truncated" in str(error)


@pytest.mark.parametrize("length", [0, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1])
def test_envelope_truncated_to_header(dek: bytes, plaintext: bytes, length: int) -> None:
    ciphertext = encrypt(dek, BLOB_ID, plaintext)[:length]

    yielded, _ = decrypt_until_error(dek, BLOB_ID, ciphertext)

    assert yielded == b""


def test_envelope_empty_blob_truncated(dek: bytes) -> None:
    ciphertext = encrypt(dek, BLOB_ID, b"")

    yielded, _ = decrypt_until_error(dek, BLOB_ID, ciphertext[:-1])

    assert yielded == b""


def test_envelope_appended_bytes(dek: bytes, plaintext: bytes) -> None:
    ciphertext = encrypt(dek, BLOB_ID, plaintext) + b"\x00" * 40

    yielded, _ = decrypt_until_error(dek, BLOB_ID, ciphertext)

    assert yielded == plaintext[: 3 * SEGMENT_SIZE]


def test_envelope_swapped_segments(dek: bytes, plaintext: bytes) -> None:
    ciphertext = encrypt(dek, BLOB_ID, plaintext)
    first, second = slice(segment_offset(1), segment_offset(2)), slice(segment_offset(2), segment_offset(3))
    swapped = ciphertext[: first.start] + ciphertext[second] + ciphertext[first] + ciphertext[second.stop :]

    yielded, error = decrypt_until_error(dek, BLOB_ID, swapped)

    assert yielded == plaintext[:SEGMENT_SIZE]
    assert "segment 1" in str(error)


@pytest.mark.parametrize("other_blob_id", [OTHER_BLOB_ID, BLOB_ID], ids=["other-blob", "same-id-reencrypted"])
def test_envelope_spliced_segment(dek: bytes, plaintext: bytes, other_blob_id: str) -> None:
    # Same data key on purpose: the hardest case, where only the blob id or nonce prefix differs.
    ciphertext = encrypt(dek, BLOB_ID, plaintext)
    donor = encrypt(dek, other_blob_id, plaintext)
    segment = slice(segment_offset(1), segment_offset(2))
    spliced = ciphertext[: segment.start] + donor[segment] + ciphertext[segment.stop :]

    yielded, _ = decrypt_until_error(dek, BLOB_ID, spliced)

    assert yielded == plaintext[:SEGMENT_SIZE]


@pytest.mark.parametrize("size", [0, MULTI_SEGMENT_SIZE], ids=["empty", "multi-segment"])
def test_envelope_wrong_blob_id(dek: bytes, size: int) -> None:
    ciphertext = encrypt(dek, BLOB_ID, os.urandom(size))

    yielded, _ = decrypt_until_error(dek, OTHER_BLOB_ID, ciphertext)

    assert yielded == b""


@pytest.mark.parametrize("size", [0, MULTI_SEGMENT_SIZE], ids=["empty", "multi-segment"])
def test_envelope_wrong_key(dek: bytes, size: int) -> None:
    ciphertext = encrypt(dek, BLOB_ID, os.urandom(size))

    yielded, _ = decrypt_until_error(new_data_key(), BLOB_ID, ciphertext)

    assert yielded == b""


def test_envelope_invalid_arguments_at_call(dek: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_stream(dek[:16], BLOB_ID, [])
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt_stream(dek[:16], BLOB_ID, [])
    with pytest.raises(ValueError, match="blob id"):
        encrypt_stream(dek, "", [])


@pytest.mark.parametrize("size", [HEADER_SIZE + TAG_SIZE - 1, HEADER_SIZE + SEALED_SEGMENT_SIZE + 3])
def test_plaintext_size_impossible(size: int) -> None:
    with pytest.raises(BlobIntegrityError):
        plaintext_size(size)
