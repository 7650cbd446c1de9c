"""The blob store interface, blob ids and the errors every store raises.

A store keeps opaque bytes (encrypted blobs) under generated ids. It does not encrypt and has no access to
data keys. Crypto-shredding a blob means deleting its data key, and ``delete`` here only frees the space.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Protocol, runtime_checkable

# 128 random bits as 32 lowercase hex characters: no separators, dots or slashes can reach a path.
_BLOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
BLOB_ID_LENGTH = 32


class BlobStoreError(Exception):
    """Base class for the expected failures of a blob store."""


class InvalidBlobId(BlobStoreError, ValueError):
    """A blob id is not of the generated form (32 lowercase hex characters)."""


class BlobNotFound(BlobStoreError):
    """No blob is stored under the id, or it was deleted while being read."""


class BlobExists(BlobStoreError):
    """A blob is already stored under the id; stores never overwrite a blob."""


def new_blob_id() -> str:
    """Generate a random blob id of the form every store accepts."""
    return secrets.token_hex(BLOB_ID_LENGTH // 2)


def check_blob_id(blob_id: object) -> str:
    """Return ``blob_id`` if it has the generated form.

    Raises:
        InvalidBlobId: anything else, such as a path, an upper-case id or an id with a trailing newline.
    """
    if isinstance(blob_id, str) and _BLOB_ID_PATTERN.fullmatch(blob_id):
        return blob_id

    # The rejected value may come from a request, so the message shows only its type and length.
    length = len(blob_id) if isinstance(blob_id, str | bytes) else "n/a"
    raise InvalidBlobId(
        f"Invalid blob id ({type(blob_id).__name__}, length {length}): expected {BLOB_ID_LENGTH} lowercase "
        "hex characters from new_blob_id()."
    )


@runtime_checkable
class BlobStore(Protocol):
    """Storage of opaque blobs under generated ids.

    Every method raises ``InvalidBlobId`` for an id that ``check_blob_id`` rejects.
    """

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> int:
        """Store a new blob atomically: after a failure no trace of it is visible. Returns its size in bytes.

        Raises:
            BlobExists: a blob is already stored under ``blob_id``.
        """
        ...

    def read(self, blob_id: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Stream a blob's bytes in chunks, from byte ``offset`` to the end.

        Raises:
            BlobNotFound: at the first ``anext``, when no blob is stored under ``blob_id``.
        """
        ...

    async def size(self, blob_id: str) -> int:
        """Return the blob's size in bytes.

        Raises:
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        ...

    async def delete(self, blob_id: str) -> None:
        """Delete a blob. Deleting a missing blob succeeds."""
        ...

    async def exists(self, blob_id: str) -> bool:
        """Return whether a blob is stored under ``blob_id``."""
        ...

    async def list_ids(self) -> list[str]:
        """Return the ids of all stored blobs, sorted, to find blobs that no row refers to."""
        ...
