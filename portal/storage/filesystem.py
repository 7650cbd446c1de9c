"""Blob store on a local folder: one file per blob, written atomically.

Layout: ``<root>/<id[0:2]>/<id[2:4]>/<id>``, folders 0700 and files 0600. A write goes to a temporary
file ``.<id>.<random>.tmp`` in the blob's own folder, is fsynced, renamed to its final name, and the folder
is fsynced, so after a crash a blob is either complete or absent. A crash can leave temporary files behind:
``remove_stale_temporary_files`` deletes them.

Blocking file calls run in worker threads (``asyncio.to_thread``) so the event loop keeps serving.
``open_file`` gives a caller that decrypts in a worker thread positional reads into its own buffers, so
reading and decrypting a mebibyte costs one thread hop and no extra copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import BinaryIO

from portal.storage.base import BlobExists, BlobNotFound, InvalidBlobId, check_blob_id

READ_CHUNK_SIZE = 1024 * 1024
_TEMPORARY_SUFFIX = ".tmp"


class FileBlobStore:
    """Blob store in a folder on a local filesystem. Implements ``BlobStore``."""

    def __init__(self, root: Path) -> None:
        """Use ``root`` as the store's folder, creating it with mode 0700 if missing."""
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> int:
        """Store a new blob atomically and return its size in bytes.

        A synchronous iterable is consumed in a worker thread, so CPU work inside it, such as
        ``encrypt_stream``, runs off the event loop.

        Raises:
            BlobExists: a blob is already stored under ``blob_id``.
            InvalidBlobId: ``blob_id`` is not of the generated form.
        """
        final_path = self._path(check_blob_id(blob_id))
        temporary = await asyncio.to_thread(_TemporaryFile.open, final_path)

        try:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    await asyncio.to_thread(temporary.write, chunk)
            else:
                await asyncio.to_thread(temporary.write_all, chunks)
            await asyncio.to_thread(temporary.commit)
        except BaseException:
            # Synchronous, so a cancelled task still removes its temporary file.
            temporary.discard()
            raise

        return temporary.size

    def read(self, blob_id: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Stream a blob from byte ``offset`` in chunks of up to 1 MiB.

        Raises:
            InvalidBlobId: at the call, when ``blob_id`` is not of the generated form.
            BlobNotFound: at the first ``anext``, when no blob is stored under ``blob_id``.
        """
        return self._read(self._path(check_blob_id(blob_id)), offset)

    async def size(self, blob_id: str) -> int:
        """Return the blob's size in bytes.

        Raises:
            InvalidBlobId: ``blob_id`` is not of the generated form.
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        file = await asyncio.to_thread(BlobFile, self._path(check_blob_id(blob_id)))
        file.close()
        return file.size

    def open_file(self, blob_id: str) -> BlobFile:
        """Open a blob for positional reads. Blocking: call it from a worker thread.

        Raises:
            InvalidBlobId: ``blob_id`` is not of the generated form.
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        return BlobFile(self._path(check_blob_id(blob_id)))

    async def delete(self, blob_id: str) -> None:
        """Delete a blob's file. Deleting a missing blob succeeds.

        The bytes may stay on the disk until overwritten; only the destroyed data key makes them unreadable.
        """
        path = self._path(check_blob_id(blob_id))
        await asyncio.to_thread(_unlink_durably, path)

    async def exists(self, blob_id: str) -> bool:
        """Return whether a blob is stored under ``blob_id``."""
        path = self._path(check_blob_id(blob_id))
        return await asyncio.to_thread(path.is_file)

    async def list_ids(self) -> list[str]:
        """Return the ids of all stored blobs, sorted. Temporary files are not listed."""
        return await asyncio.to_thread(self._list_ids)

    async def remove_stale_temporary_files(self, older_than_seconds: float = 3600.0) -> int:
        """Delete temporary files left by interrupted writes, if unmodified for ``older_than_seconds``.

        Returns:
            The number of files deleted.
        """
        return await asyncio.to_thread(self._remove_stale_temporary_files, older_than_seconds)

    def _path(self, blob_id: str) -> Path:
        return self.root / blob_id[0:2] / blob_id[2:4] / blob_id

    async def _read(self, path: Path, offset: int) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(BlobFile, path)
        try:
            while chunk := await asyncio.to_thread(os.pread, file.descriptor, READ_CHUNK_SIZE, offset):
                offset += len(chunk)
                yield chunk
        finally:
            file.close()

    def _list_ids(self) -> list[str]:
        found = []
        for path in self.root.glob("*/*/*"):
            with contextlib.suppress(InvalidBlobId):
                blob_id = check_blob_id(path.name)
                if path == self._path(blob_id) and path.is_file():
                    found.append(blob_id)
        return sorted(found)

    def _remove_stale_temporary_files(self, older_than_seconds: float) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.root.glob(f"*/*/.*{_TEMPORARY_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


class BlobFile:
    """A stored blob opened for positional reads (``os.preadv``), which need no shared file position.

    ``size`` is the size when the file was opened. Blobs are never rewritten in place, so a read that
    returns less means the file was damaged or replaced while open.
    """

    def __init__(self, path: Path) -> None:
        """Open ``path`` read-only.

        Raises:
            BlobNotFound: the file does not exist.
        """
        try:
            self.descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(f"No blob is stored under id {path.name}.") from None
        self.size = os.fstat(self.descriptor).st_size

    def read_into(self, buffer: bytearray | memoryview, offset: int) -> int:
        """Fill ``buffer`` from ``offset`` and return the byte count, which is smaller only at the end."""
        view = memoryview(buffer)
        filled = 0
        while filled < len(view):
            count = os.preadv(self.descriptor, [view[filled:]], offset + filled)
            if count == 0:
                break
            filled += count
        return filled

    def close(self) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.close()


class _TemporaryFile:
    """A 0600 temporary file beside a blob's final path, committed by rename or discarded."""

    def __init__(self, final_path: Path, path: Path, file: BinaryIO, new_folders: list[Path]) -> None:
        self.final_path = final_path
        self.path = path
        self.file = file
        self.new_folders = new_folders
        self.size = 0

    @classmethod
    def open(cls, final_path: Path) -> _TemporaryFile:
        new_folders = [
            folder for folder in (final_path.parent.parent, final_path.parent) if not folder.exists()
        ]
        final_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if final_path.exists():
            raise BlobExists(
                f"A blob is already stored under id {final_path.name}; blobs are never overwritten."
            )

        path = final_path.with_name(f".{final_path.name}.{secrets.token_hex(8)}{_TEMPORARY_SUFFIX}")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return cls(final_path, path, os.fdopen(descriptor, "wb"), new_folders)

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.size += len(chunk)

    def write_all(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

        # Blob ids are 128 random bits, so only a caller bug writes one id twice. This check catches that
        # bug unless both writes commit at the same instant.
        if self.final_path.exists():
            raise BlobExists(
                f"A blob is already stored under id {self.final_path.name}; blobs are never overwritten."
            )
        os.rename(self.path, self.final_path)
        _fsync_directory(self.final_path.parent)

        # A fan-out folder created by this write is durable only once its own parent is fsynced.
        for folder in self.new_folders:
            _fsync_directory(folder.parent)

    def discard(self) -> None:
        # Closing a buffered file waits for a write still running in a worker thread.
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _unlink_durably(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
