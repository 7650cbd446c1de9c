"""Encrypted blobs: each with its own data key, wrapped by the key ring and kept in ``data_key``.

The bytes are written to the blob store before the transaction that records them commits; the caller
deletes them again if that transaction fails (``discard``), and ``portal purge`` removes any file left
by a crash between the two.

Reading from the filesystem store runs in worker threads, one hop per step: each step reads whole
sealed segments into a reused buffer with ``os.preadv`` and decrypts them straight from it. A download
decrypts each step into a buffer of its own that no chunk still views (``StreamBuffers``), which goes to
the server without a copy (``portal.streaming``). Other stores go through ``BlobStore.read`` and
``decrypt_async``.

A download reads the copy once (``open_plaintext``): before the response starts, it checks the header and
the blob size, authenticates the final segment and decrypts the first MiB, so a truncated copy, a copy
under another blob's key or id, and damage in the first MiB are refused before any byte is sent. Damage
further in stops the stream before the damaged segment.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.crypto.envelope import (
    HEADER_SIZE,
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    SegmentDecryptor,
    decrypt_async,
    encrypt_stream,
    new_data_key,
    plaintext_size,
)
from portal.crypto.errors import BlobIntegrityError
from portal.crypto.keyring import KeyRing
from portal.models import Blob, DataKey
from portal.storage.base import BlobStore
from portal.storage.filesystem import BlobFile, FileBlobStore

_CHUNK = 1024 * 1024
# Segments per thread hop: 1 MiB of plaintext per chunk of a download, and 8 MiB per step of a pass
# that only authenticates, where fewer hops matter more than the time between event-loop turns.
STREAM_SEGMENTS = 16
AUTHENTICATE_SEGMENTS = 128
# Buffers one download keeps for reuse. The server still references at most the chunk it is sending, and
# the read path the chunk it yielded last, so the third buffer is nearly always free again.
STREAM_BUFFERS = 3


class BlobUnavailable(Exception):
    """The blob's data key is gone (erased or purged), so its bytes can no longer be read."""


@dataclass(frozen=True)
class StagedBlob:
    """Bytes written to the store whose rows are not yet committed."""

    blob_id: str
    kind: str
    size: int
    kek_id: str
    wrapped_key: bytes

    def rows(self) -> list[Blob | DataKey]:
        return [
            Blob(id=self.blob_id, kind=self.kind, size=self.size),
            DataKey(blob_id=self.blob_id, kek_id=self.kek_id, wrapped_key=self.wrapped_key),
        ]


@dataclass
class PlaintextCopy:
    """A blob opened for one pass of reading: its plaintext size and its chunks, the first already decrypted.

    Iterate ``chunks`` once; it closes the file when it ends, fails or is closed (``aclose``). A chunk
    from the filesystem store is a view of a buffer of its own, which no one changes after it is yielded.
    """

    size: int
    chunks: AsyncGenerator[bytes | memoryview, None]


class BlobService:
    def __init__(self, store: BlobStore, keyring: KeyRing) -> None:
        self.store = store
        self.keyring = keyring

    async def stage(self, kind: str, data: bytes) -> StagedBlob:
        """Encrypt ``data`` under a new data key and write it to the store."""
        blob_id = secrets.token_hex(16)
        data_key = new_data_key()
        chunks = (data[offset : offset + _CHUNK] for offset in range(0, len(data), _CHUNK))

        await self.store.write(blob_id, encrypt_stream(data_key, blob_id, chunks))
        kek_id, wrapped = self.keyring.wrap(data_key)
        return StagedBlob(blob_id=blob_id, kind=kind, size=len(data), kek_id=kek_id, wrapped_key=wrapped)

    async def discard(self, staged: StagedBlob | None) -> None:
        if staged is not None:
            await self.store.delete(staged.blob_id)

    async def data_key(self, db: AsyncSession, blob_id: str) -> bytes:
        row = await db.get(DataKey, blob_id)
        if row is None:
            return self.unwrap_data_key(blob_id, None, None)
        return self.unwrap_data_key(blob_id, row.kek_id, row.wrapped_key)

    def unwrap_data_key(self, blob_id: str, kek_id: str | None, wrapped_key: bytes | None) -> bytes:
        """Unwrap a data key read with its blob, or raise BlobUnavailable when the row was missing (None)."""
        if kek_id is None or wrapped_key is None:
            raise BlobUnavailable(f"blob {blob_id} has no data key; it was erased or purged")
        return self.keyring.unwrap(kek_id, wrapped_key)

    def plaintext(self, blob_id: str, data_key: bytes) -> AsyncIterator[bytes]:
        """Stream the decrypted bytes; a damaged blob raises BlobIntegrityError before its bad segment.

        From the filesystem store the chunks are 1 MiB, the last one shorter.
        """
        if isinstance(self.store, FileBlobStore):
            return self._file_plaintext(self.store, blob_id, data_key)
        return decrypt_async(data_key, blob_id, self.store.read(blob_id))

    async def open_plaintext(self, blob_id: str, data_key: bytes) -> PlaintextCopy:
        """Open a blob for a single streaming pass, after the checks that can run before the first byte.

        The header, a size that some plaintext encrypts to, the final segment and the first chunk are
        checked here: 1 MiB from the filesystem store, the segments of the first row from the database
        store. Later segments are authenticated as they are read, each before its plaintext is handed on.

        Raises:
            BlobIntegrityError: one of those checks fails.
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        if not isinstance(self.store, FileBlobStore):
            return await self._open_from_store(blob_id, data_key)

        decryption = await asyncio.to_thread(_FileDecryption, self.store, blob_id, data_key, STREAM_SEGMENTS)
        buffers = StreamBuffers(STREAM_SEGMENTS * SEGMENT_SIZE)
        try:
            size = plaintext_size(decryption.file.size)
            await asyncio.to_thread(decryption.check_final_segment)
            first = await asyncio.to_thread(decryption.step, buffers.take())
        except BaseException:
            decryption.close()
            raise
        return PlaintextCopy(size, _stream_rest(decryption, buffers, first))

    async def _open_from_store(self, blob_id: str, data_key: bytes) -> PlaintextCopy:
        total = await self.store.size(blob_id)
        size = plaintext_size(total)
        decryptor = SegmentDecryptor(data_key, blob_id)
        decryptor.start(await self._read_range(blob_id, 0, HEADER_SIZE))
        count = max(1, -(-(total - HEADER_SIZE) // SEALED_SEGMENT_SIZE))
        last = HEADER_SIZE + (count - 1) * SEALED_SEGMENT_SIZE
        decryptor.check_final(await self._read_range(blob_id, last, total - last), index=count - 1)

        chunks = _joined(decrypt_async(data_key, blob_id, self.store.read(blob_id)))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await chunks.aclose()
            raise
        return PlaintextCopy(size, _prepend(first, chunks))

    async def _read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes from ``offset``, or fewer when the blob ends first."""
        collected = bytearray()
        reader = self.store.read(blob_id, offset)
        try:
            async for chunk in reader:
                collected += chunk
                if len(collected) >= length:
                    break
        finally:
            await reader.aclose()  # type: ignore[attr-defined]
        return bytes(collected[:length])

    async def authenticate(self, blob_id: str, data_key: bytes) -> int:
        """Authenticate every segment of a blob and return its plaintext size; nothing is kept.

        Raises:
            BlobIntegrityError: a segment fails authentication or the blob was truncated.
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        if not isinstance(self.store, FileBlobStore):
            size = 0
            async for chunk in decrypt_async(data_key, blob_id, self.store.read(blob_id)):
                size += len(chunk)
            return size

        decryption = await asyncio.to_thread(
            _FileDecryption, self.store, blob_id, data_key, AUTHENTICATE_SEGMENTS
        )
        try:
            scratch = bytearray(AUTHENTICATE_SEGMENTS * SEGMENT_SIZE)
            size = 0
            while (plaintext := await asyncio.to_thread(decryption.step, scratch)) is not None:
                size += len(plaintext)
            return size
        finally:
            decryption.close()

    async def _file_plaintext(
        self, store: FileBlobStore, blob_id: str, data_key: bytes
    ) -> AsyncIterator[bytes]:
        decryption = await asyncio.to_thread(_FileDecryption, store, blob_id, data_key, STREAM_SEGMENTS)
        try:
            buffer = bytearray(STREAM_SEGMENTS * SEGMENT_SIZE)
            while (chunk := await asyncio.to_thread(decryption.step_bytes, buffer)) is not None:
                yield chunk
        finally:
            decryption.close()

    async def read_all(self, db: AsyncSession, blob_id: str) -> bytes:
        """Read and decrypt a whole blob; on SQLite with the database store, prefer ``read_with_key``."""
        return await self.read_with_key(blob_id, await self.data_key(db, blob_id))

    async def read_with_key(self, blob_id: str, data_key: bytes) -> bytes:
        parts = [chunk async for chunk in self.plaintext(blob_id, data_key)]
        return b"".join(parts)

    async def shred(self, db: AsyncSession, blob_id: str) -> None:
        """Destroy the data key in this transaction; the bytes are removed by ``delete_bytes`` after commit."""
        await db.execute(delete(DataKey).where(DataKey.blob_id == blob_id))

    async def delete_bytes(self, blob_id: str) -> None:
        await self.store.delete(blob_id)

    async def known_ids(self, db: AsyncSession) -> set[str]:
        return set((await db.scalars(select(Blob.id))).all())


async def _joined(plaintexts: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Join the plaintext into chunks of about 1 MiB, so the HTTP layer sends fewer pieces."""
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for plaintext in plaintexts:
            pending.append(plaintext)
            pending_size += len(plaintext)
            if pending_size >= _CHUNK:
                yield b"".join(pending)
                pending, pending_size = [], 0
        if pending:
            yield b"".join(pending)
    finally:
        await plaintexts.aclose()


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


async def _stream_rest(
    decryption: _FileDecryption, buffers: StreamBuffers, first: memoryview | None
) -> AsyncGenerator[memoryview, None]:
    try:
        if first:
            yield first
        while (chunk := await asyncio.to_thread(decryption.step, buffers.take())) is not None:
            yield chunk
    finally:
        decryption.close()


class StreamBuffers:
    """The output buffers of one download: a buffer is reused once no view of an earlier chunk remains.

    The server may still be sending a chunk after ``send()`` returns, so a buffer must not change while
    anything views it. CPython refuses to resize a ``bytearray`` while a buffer export of it exists (a
    ``memoryview``, a slice of one, or the server's own hold on it), and that refusal is the test. Call
    ``take`` on the event loop, which also frees the buffers; a buffer allocated in a worker thread and
    freed on the event loop made downloads slower (docs/architecture.md).
    """

    def __init__(self, size: int, keep: int = STREAM_BUFFERS) -> None:
        self._size = size
        self._keep = keep
        self._buffers: list[bytearray] = []

    def take(self) -> bytearray:
        """Return a kept buffer that nothing views, or a new one when every kept buffer is still viewed."""
        for buffer in self._buffers:
            if _unviewed(buffer):
                return buffer
        buffer = bytearray(self._size)
        if len(self._buffers) < self._keep:
            self._buffers.append(buffer)
        return buffer


def _unviewed(buffer: bytearray) -> bool:
    """Return whether no export of ``buffer`` exists. Its size is the same afterwards in both cases."""
    try:
        # Shrinking in place raises BufferError while an export exists, and neither step reallocates.
        del buffer[-1:]
    except BufferError:
        return False
    buffer.append(0)
    return True


class _FileDecryption:
    """Reads and decrypts one blob file in steps of whole sealed segments; blocking, for worker threads."""

    def __init__(self, store: FileBlobStore, blob_id: str, data_key: bytes, segments_per_step: int) -> None:
        self.blob_id = blob_id
        self.decryptor = SegmentDecryptor(data_key, blob_id)
        self.file: BlobFile = store.open_file(blob_id)
        try:
            header = bytearray(HEADER_SIZE)
            self.decryptor.start(header[: self.file.read_into(header, 0)])
        except BaseException:
            self.file.close()
            raise
        self.offset = HEADER_SIZE
        self.finished = False
        self.buffer = bytearray(segments_per_step * SEALED_SEGMENT_SIZE)

    def step(self, into: bytearray) -> memoryview | None:
        """Decrypt the next run of segments into ``into``; return None after the final segment.

        Raises:
            BlobIntegrityError: a segment fails authentication, or the file is shorter than when opened.
        """
        if self.finished:
            return None
        wanted = min(len(self.buffer), self.file.size - self.offset)
        view = memoryview(self.buffer)[:wanted]
        if self.file.read_into(view, self.offset) != wanted:
            raise BlobIntegrityError(
                f"Blob {self.blob_id}: the file became shorter while being read. "
                "The stored blob was truncated."
            )

        self.offset += wanted
        self.finished = self.offset == self.file.size
        return self.decryptor.open_segments(view, ends_blob=self.finished, into=into)

    def check_final_segment(self) -> None:
        """Authenticate the last sealed segment as the final one, without moving the read position.

        Raises:
            BlobIntegrityError: the file ends before its final segment (truncated at a segment boundary),
                or that segment was altered or comes from another blob.
        """
        sealed_bytes = self.file.size - HEADER_SIZE
        count = max(1, -(-sealed_bytes // SEALED_SEGMENT_SIZE))
        offset = HEADER_SIZE + (count - 1) * SEALED_SEGMENT_SIZE
        last = bytearray(self.file.size - offset)
        if self.file.read_into(last, offset) != len(last):
            raise BlobIntegrityError(
                f"Blob {self.blob_id}: the file became shorter while being read. "
                "The stored blob was truncated."
            )
        self.decryptor.check_final(last, index=count - 1)

    def step_bytes(self, into: bytearray) -> bytes | None:
        """Decrypt the next run of segments like ``step`` and return a copy that outlives ``into``."""
        plaintext = self.step(into)
        # Copied here, in the worker thread, because the HTTP layer accepts only bytes.
        return None if plaintext is None else bytes(plaintext)

    def close(self) -> None:
        self.file.close()
