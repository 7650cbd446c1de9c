"""Encrypted blobs: each with its own data key, wrapped by the key ring and kept in ``data_key``.

The bytes are written to the blob store before the transaction that records them commits; the caller
deletes them again if that transaction fails (``discard``), and ``portal purge`` removes any file left
by a crash between the two.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.crypto.envelope import decrypt_async, encrypt_stream, new_data_key
from portal.crypto.keyring import KeyRing
from portal.models import Blob, DataKey
from portal.storage.base import BlobStore

_CHUNK = 1024 * 1024


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
            raise BlobUnavailable(f"blob {blob_id} has no data key; it was erased or purged")
        return self.keyring.unwrap(row.kek_id, row.wrapped_key)

    def plaintext(self, blob_id: str, data_key: bytes) -> AsyncIterator[bytes]:
        """Stream the decrypted bytes; a damaged blob raises BlobIntegrityError before its bad segment."""
        return decrypt_async(data_key, blob_id, self.store.read(blob_id))

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
