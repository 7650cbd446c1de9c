"""One suite that every blob store passes: filesystem, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from portal.blobs import BlobService
from portal.crypto.envelope import SEGMENT_SIZE, decrypt_async, encrypt_stream, new_data_key
from portal.crypto.errors import BlobIntegrityError
from portal.storage.base import BlobExists, BlobNotFound, BlobStore, InvalidBlobId, new_blob_id
from portal.storage.filesystem import FileBlobStore

if TYPE_CHECKING:
    from tests.unit.storage.conftest import StoreUnderTest

INVALID_IDS = [
    "../../etc/passwd",
    "..",
    "/tmp/blob",
    "ab/cd",
    "0123456789ABCDEF0123456789ABCDEF",
    "0123456789abcdef0123456789abcde",
    "0123456789abcdef0123456789abcdef\n",
    "0123456789abcdef\x000123456789abcde",
    "",
]


async def read_all(store: BlobStore, blob_id: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(blob_id)])


async def async_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def failing_chunks(good: int) -> Iterator[bytes]:
    for _ in range(good):
        yield os.urandom(100_000)
    raise OSError("upload interrupted")


@pytest.mark.parametrize(
    "size", [0, 1, 256 * 1024, 2_300_000], ids=["empty", "one-byte", "one-row", "several-batches"]
)
async def test_store_write_read(store_under_test: StoreUnderTest, size: int) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    data = os.urandom(size)

    written = await store.write(blob_id, [data[:1000], data[1000:]])

    assert written == size
    assert await read_all(store, blob_id) == data


@pytest.mark.parametrize(
    "offset", [0, 1, 256 * 1024 - 1, 256 * 1024, 1_100_000, 2_299_999, 2_300_000, 2_400_000]
)
async def test_store_size_and_offset_reads(store_under_test: StoreUnderTest, offset: int) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    data = os.urandom(2_300_000)
    await store.write(blob_id, [data])

    assert await store.size(blob_id) == len(data)
    assert b"".join([chunk async for chunk in store.read(blob_id, offset)]) == data[offset:]
    with pytest.raises(BlobNotFound):
        await store.size(new_blob_id())


async def test_store_async_source(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    chunks = [os.urandom(70_000) for _ in range(5)]

    written = await store.write(blob_id, async_chunks(chunks))

    assert written == 350_000
    assert await read_all(store, blob_id) == b"".join(chunks)


async def test_store_exists_and_list(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    blob_ids = sorted(new_blob_id() for _ in range(3))
    for blob_id in blob_ids:
        await store.write(blob_id, [b"x"])

    assert await store.list_ids() == blob_ids
    assert await store.exists(blob_ids[0])
    assert not await store.exists(new_blob_id())


async def test_store_delete_idempotent(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    kept_id, deleted_id = new_blob_id(), new_blob_id()
    await store.write(kept_id, [b"kept"])
    await store.write(deleted_id, [b"deleted"])

    await store.delete(deleted_id)
    await store.delete(deleted_id)
    await store.delete(new_blob_id())

    assert not await store.exists(deleted_id)
    assert await store.list_ids() == [kept_id]
    assert await read_all(store, kept_id) == b"kept"
    with pytest.raises(BlobNotFound):
        await read_all(store, deleted_id)


async def test_store_read_missing(store_under_test: StoreUnderTest) -> None:
    with pytest.raises(BlobNotFound):
        await read_all(store_under_test.store, new_blob_id())


async def test_store_no_overwrite(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    await store.write(blob_id, [b"first"])

    with pytest.raises(BlobExists):
        await store.write(blob_id, [b"second"])

    assert await read_all(store, blob_id) == b"first"
    assert await store.list_ids() == [blob_id]


@pytest.mark.parametrize("source", ["sync", "async"])
async def test_store_failed_write_leaves_nothing(store_under_test: StoreUnderTest, source: str) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    chunks = failing_chunks(good=4)

    with pytest.raises(OSError, match="upload interrupted"):
        await store.write(blob_id, chunks if source == "sync" else async_chunks(chunks))

    assert not await store.exists(blob_id)
    assert await store.list_ids() == []
    assert await store_under_test.count_leftovers() == 0


async def test_store_cancelled_write_leaves_nothing(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(10_000)
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(store.write(new_blob_id(), endless()))
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await store.list_ids() == []
    assert await store_under_test.count_leftovers() == 0


@pytest.mark.parametrize("blob_id", INVALID_IDS)
async def test_store_rejects_invalid_id(store_under_test: StoreUnderTest, blob_id: str) -> None:
    store = store_under_test.store

    with pytest.raises(InvalidBlobId):
        await store.write(blob_id, [b"x"])
    with pytest.raises(InvalidBlobId):
        store.read(blob_id)
    with pytest.raises(InvalidBlobId):
        await store.delete(blob_id)
    with pytest.raises(InvalidBlobId):
        await store.exists(blob_id)

    assert await store_under_test.count_leftovers() == 0


async def test_store_encrypted_round_trip(store_under_test: StoreUnderTest) -> None:
    store = store_under_test.store
    blob_id = new_blob_id()
    dek = new_data_key()
    plaintext = os.urandom(1_000_000)

    await store.write(blob_id, encrypt_stream(dek, blob_id, [plaintext]))
    decrypted = b"".join([chunk async for chunk in decrypt_async(dek, blob_id, store.read(blob_id))])

    assert decrypted == plaintext


@pytest.mark.parametrize("size", [0, 1, 3 * SEGMENT_SIZE + 5, 2_300_000])
async def test_single_pass_read_on_every_store(store_under_test: StoreUnderTest, size: int) -> None:
    service = BlobService(store_under_test.store, None)  # type: ignore[arg-type]  # reads need no key ring
    blob_id, dek, plaintext = new_blob_id(), new_data_key(), os.urandom(size)
    await store_under_test.store.write(blob_id, encrypt_stream(dek, blob_id, [plaintext]))

    copy = await service.open_plaintext(blob_id, dek)
    assert copy.size == size
    assert b"".join([chunk async for chunk in copy.chunks]) == plaintext

    # The final segment is checked before the first byte, so another key fails at the open.
    with pytest.raises(BlobIntegrityError, match="the last one stored"):
        await service.open_plaintext(blob_id, new_data_key())
    with pytest.raises(BlobNotFound):
        await service.open_plaintext(new_blob_id(), dek)


async def test_store_is_blob_store(store_under_test: StoreUnderTest) -> None:
    assert isinstance(store_under_test.store, BlobStore)


async def test_file_store_layout(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    blob_id = new_blob_id()

    await store.write(blob_id, [b"%PDF-1.7 stand-in"])

    path = tmp_path / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
    assert path.read_bytes() == b"%PDF-1.7 stand-in"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_file_store_ignores_foreign_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    blob_id = new_blob_id()
    await store.write(blob_id, [b"x"])
    stray = tmp_path / "blobs" / "zz" / "yy"
    stray.mkdir(parents=True)
    (stray / "notes.txt").write_text("not a blob")

    assert await store.list_ids() == [blob_id]


async def test_file_store_stale_temporary_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    blob_id = new_blob_id()
    await store.write(blob_id, [b"x"])
    folder = tmp_path / "blobs" / blob_id[:2] / blob_id[2:4]
    stale = folder / f".{new_blob_id()}.0000000000000000.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    fresh = folder / f".{new_blob_id()}.1111111111111111.tmp"
    fresh.write_bytes(b"in progress")

    removed = await store.remove_stale_temporary_files(older_than_seconds=3600)

    assert removed == 1
    assert not stale.exists()
    assert fresh.exists()
    assert await store.list_ids() == [blob_id]
