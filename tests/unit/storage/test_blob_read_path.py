"""The filesystem read path of BlobService: whole-file steps, sizes and damaged blobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portal.blobs import AUTHENTICATE_SEGMENTS, STREAM_SEGMENTS, BlobService
from portal.crypto.envelope import (
    HEADER_SIZE,
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    encrypt_stream,
    new_data_key,
)
from portal.crypto.errors import BlobIntegrityError
from portal.storage.base import BlobNotFound, new_blob_id
from portal.storage.filesystem import FileBlobStore

SIZES = [
    0,
    1,
    SEGMENT_SIZE,
    SEGMENT_SIZE + 1,
    STREAM_SEGMENTS * SEGMENT_SIZE,
    STREAM_SEGMENTS * SEGMENT_SIZE + 7,
    AUTHENTICATE_SEGMENTS * SEGMENT_SIZE,
    AUTHENTICATE_SEGMENTS * SEGMENT_SIZE + SEGMENT_SIZE - 1,
]


async def stored_blob(tmp_path: Path, size: int) -> tuple[BlobService, str, bytes, bytes, Path]:
    store = FileBlobStore(tmp_path / "blobs")
    data_key, blob_id, plaintext = new_data_key(), new_blob_id(), os.urandom(size)
    await store.write(blob_id, encrypt_stream(data_key, blob_id, [plaintext]))
    path = store.root / blob_id[:2] / blob_id[2:4] / blob_id
    # Reads need no key ring.
    return BlobService(store, None), blob_id, data_key, plaintext, path  # type: ignore[arg-type]


@pytest.mark.parametrize("size", SIZES)
async def test_read_path_round_trip(tmp_path: Path, size: int) -> None:
    service, blob_id, data_key, plaintext, _path = await stored_blob(tmp_path, size)

    chunks = [chunk async for chunk in service.plaintext(blob_id, data_key)]

    assert b"".join(chunks) == plaintext
    assert all(type(chunk) is bytes for chunk in chunks)
    assert all(len(chunk) == STREAM_SEGMENTS * SEGMENT_SIZE for chunk in chunks[:-1])
    assert await service.authenticate(blob_id, data_key) == size


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 20 * SEALED_SEGMENT_SIZE + 5] ^= 0x01
    path.write_bytes(bytes(data))


def cut_at_boundary(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: HEADER_SIZE + 20 * SEALED_SEGMENT_SIZE])


def cut_inside_tag(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: HEADER_SIZE + 20 * SEALED_SEGMENT_SIZE + 5])


def append_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 40)


def swap_segments(path: Path) -> None:
    data = bytearray(path.read_bytes())
    first = slice(HEADER_SIZE, HEADER_SIZE + SEALED_SEGMENT_SIZE)
    second = slice(HEADER_SIZE + SEALED_SEGMENT_SIZE, HEADER_SIZE + 2 * SEALED_SEGMENT_SIZE)
    data[first], data[second] = data[second], data[first]
    path.write_bytes(bytes(data))


def cut_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: HEADER_SIZE - 1])


DAMAGE = {
    "flipped-bit": flip_bit,
    "cut-at-boundary": cut_at_boundary,
    "cut-inside-tag": cut_inside_tag,
    "appended": append_bytes,
    "swapped": swap_segments,
    "cut-header": cut_header,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_read_path_damaged(tmp_path: Path, damage: str) -> None:
    service, blob_id, data_key, plaintext, path = await stored_blob(tmp_path, 40 * SEGMENT_SIZE + 3)
    DAMAGE[damage](path)

    with pytest.raises(BlobIntegrityError):
        await service.authenticate(blob_id, data_key)

    received = bytearray()
    with pytest.raises(BlobIntegrityError):
        async for chunk in service.plaintext(blob_id, data_key):
            received += chunk
    # Whatever came out before the error is an authentic prefix, never altered bytes.
    assert plaintext.startswith(bytes(received))


async def test_read_path_wrong_key(tmp_path: Path) -> None:
    service, blob_id, _data_key, _plaintext, _path = await stored_blob(tmp_path, 3 * SEGMENT_SIZE)

    with pytest.raises(BlobIntegrityError, match="segment 0 failed authentication"):
        await service.authenticate(blob_id, new_data_key())


async def test_read_path_missing_blob(tmp_path: Path) -> None:
    service, _blob_id, data_key, _plaintext, _path = await stored_blob(tmp_path, 10)

    with pytest.raises(BlobNotFound):
        await service.authenticate(new_blob_id(), data_key)
    with pytest.raises(BlobNotFound):
        [chunk async for chunk in service.plaintext(new_blob_id(), data_key)]


@pytest.mark.parametrize("size", SIZES)
async def test_single_pass_round_trip(tmp_path: Path, size: int) -> None:
    service, blob_id, data_key, plaintext, _path = await stored_blob(tmp_path, size)

    copy = await service.open_plaintext(blob_id, data_key)
    chunks = [chunk async for chunk in copy.chunks]

    assert copy.size == size
    assert b"".join(chunks) == plaintext
    assert all(len(chunk) for chunk in chunks)
    # The server may still hold a chunk after taking the next one, so no two chunks share a buffer.
    buffers = [chunk.obj for chunk in chunks if isinstance(chunk, memoryview)]
    assert len(buffers) == len(chunks)
    assert len({id(buffer) for buffer in buffers}) == len(buffers)


def flip_bit_in_first_step(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 3 * SEALED_SEGMENT_SIZE + 9] ^= 0x80
    path.write_bytes(bytes(data))


def flip_bit_in_last_segment(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


# Damage that ``open_plaintext`` finds before the first byte would be sent.
REFUSED_BEFORE_SENDING = {
    **{
        name: DAMAGE[name]
        for name in ("cut-at-boundary", "cut-inside-tag", "appended", "swapped", "cut-header")
    },
    "flipped-bit-first-step": flip_bit_in_first_step,
    "flipped-bit-last-segment": flip_bit_in_last_segment,
}


@pytest.mark.parametrize("damage", sorted(REFUSED_BEFORE_SENDING))
async def test_single_pass_refuses_before_first_byte(tmp_path: Path, damage: str) -> None:
    service, blob_id, data_key, _plaintext, path = await stored_blob(tmp_path, 40 * SEGMENT_SIZE + 3)
    REFUSED_BEFORE_SENDING[damage](path)

    with pytest.raises(BlobIntegrityError):
        await service.open_plaintext(blob_id, data_key)


async def test_single_pass_stops_before_damaged_segment(tmp_path: Path) -> None:
    service, blob_id, data_key, plaintext, path = await stored_blob(tmp_path, 40 * SEGMENT_SIZE + 3)
    # Segment 20 lies in the second step (segments 16 to 31), past what is checked before sending.
    flip_bit(path)

    copy = await service.open_plaintext(blob_id, data_key)
    received = bytearray()
    with pytest.raises(BlobIntegrityError, match="segment 20 failed authentication"):
        async for chunk in copy.chunks:
            received += chunk

    # Only whole steps before the damaged one were handed on, all authentic.
    assert bytes(received) == plaintext[: STREAM_SEGMENTS * SEGMENT_SIZE]


async def test_single_pass_wrong_key_and_missing_blob(tmp_path: Path) -> None:
    service, blob_id, data_key, _plaintext, _path = await stored_blob(tmp_path, 3 * SEGMENT_SIZE)

    with pytest.raises(BlobIntegrityError, match="segment 2, the last one stored, failed authentication"):
        await service.open_plaintext(blob_id, new_data_key())
    with pytest.raises(BlobNotFound):
        await service.open_plaintext(new_blob_id(), data_key)
