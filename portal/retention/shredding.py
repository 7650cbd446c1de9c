"""Crypto-shredding of blobs: rows go in the caller's transaction, bytes after it commits.

Deleting the ``data_key`` row is what makes a blob unreadable. The ``blob`` row goes in the same
transaction, so bytes that survive a failed delete (or a crash before it) are orphans that the next
``portal purge`` removes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.core import Portal
from portal.models import Blob
from portal.storage.base import BlobStoreError

log = logging.getLogger(__name__)


async def shred_rows(portal: Portal, db: AsyncSession, blob_id: str) -> None:
    """Delete a blob's data key and its ``blob`` row in the caller's transaction.

    The caller first clears every column that refers to the blob (``document.blob_id``,
    ``share.copy_blob_id``).
    """
    await portal.blobs.shred(db, blob_id)
    await db.execute(delete(Blob).where(Blob.id == blob_id))


async def delete_bytes_after_commit(portal: Portal, blob_ids: Iterable[str]) -> int:
    """Delete the stored bytes of blobs whose rows are already gone, and return how many deletes succeeded.

    A failure is logged and not raised: the data key is already destroyed, and the next purge removes the
    leftover bytes as an orphan.
    """
    deleted = 0
    for blob_id in blob_ids:
        try:
            await portal.blobs.delete_bytes(blob_id)
        except (OSError, BlobStoreError, SQLAlchemyError) as error:
            log.warning(
                "deleting the bytes of a shredded blob failed, so the next purge removes them as an orphan",
                extra={"blob_id": blob_id, "error": type(error).__name__},
            )
            continue
        deleted += 1
    return deleted
