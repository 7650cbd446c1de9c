"""Blob store in a database table, for several app instances that share no filesystem.

A blob is a run of rows ``(blob_id, seq, data)`` in ``blob_chunk``, ``seq`` counting from 0 and every row but
the last holding ``ROW_SIZE`` bytes. An empty blob is one empty row, so every stored blob has row 0.

A write first spools the incoming chunks to a local temporary file and then inserts all rows in one short
transaction. The transaction is therefore never held open while a slow client uploads, which matters on
SQLite, where a write transaction blocks every other writer. A read fetches a few rows per query on a short
connection, so a slow download keeps no connection or snapshot open. On PostgreSQL the rows are fetched in
binary format: psycopg sends ``bytea`` as hex text by default, which is about four times slower to transfer
and decode.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import BinaryIO

from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portal.storage.base import BLOB_ID_LENGTH, BlobExists, BlobNotFound, check_blob_id

TABLE_NAME = "blob_chunk"
# 256 KiB rows stay well below PostgreSQL's 1 GB field limit and keep TOAST chunking cheap.
ROW_SIZE = 256 * 1024
# Rows per insert statement and per read query: about 1 MiB in memory at a time.
ROWS_PER_BATCH = 4


def define_tables(metadata: MetaData) -> Table:
    """Define the ``blob_chunk`` table on ``metadata`` (in its schema, if it has one) and return it."""
    key = f"{metadata.schema}.{TABLE_NAME}" if metadata.schema else TABLE_NAME
    if key in metadata.tables:
        return metadata.tables[key]

    return Table(
        TABLE_NAME,
        metadata,
        Column("blob_id", String(BLOB_ID_LENGTH), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("data", LargeBinary, nullable=False),
    )


class DatabaseBlobStore:
    """Blob store in the ``blob_chunk`` table, used through an ``AsyncEngine``. Implements ``BlobStore``."""

    def __init__(self, engine: AsyncEngine, table: Table) -> None:
        """Use ``table`` (from ``define_tables``) through ``engine``. The caller creates the table."""
        self.engine = engine
        self.table = table

    def __repr__(self) -> str:
        return f"DatabaseBlobStore({self.engine.url.render_as_string(hide_password=True)!r})"

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> int:
        """Store a new blob in one transaction and return its size in bytes.

        Raises:
            BlobExists: a blob is already stored under ``blob_id``.
            InvalidBlobId: ``blob_id`` is not of the generated form.
        """
        check_blob_id(blob_id)

        with tempfile.TemporaryFile() as spool:
            size = await _spool(chunks, spool)
            await asyncio.to_thread(spool.seek, 0)

            try:
                async with self.engine.begin() as connection:
                    await self._insert_rows(connection, blob_id, spool)
            except IntegrityError:
                raise BlobExists(
                    f"A blob is already stored under id {blob_id}; blobs are never overwritten."
                ) from None

        return size

    def read(self, blob_id: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Stream a blob row by row, from byte ``offset``.

        Raises:
            InvalidBlobId: at the call, when ``blob_id`` is not of the generated form.
            BlobNotFound: at the first ``anext`` when no blob is stored under ``blob_id``, or later when the
                blob is deleted while being read.
        """
        return self._read(check_blob_id(blob_id), offset)

    async def size(self, blob_id: str) -> int:
        """Return the blob's size in bytes.

        Raises:
            InvalidBlobId: ``blob_id`` is not of the generated form.
            BlobNotFound: no blob is stored under ``blob_id``.
        """
        check_blob_id(blob_id)
        query = select(func.count(), func.coalesce(func.sum(func.length(self.table.c.data)), 0)).where(
            self.table.c.blob_id == blob_id
        )
        async with self.engine.connect() as connection:
            rows, size = (await connection.execute(query)).one()
        if rows == 0:
            raise BlobNotFound(f"No blob is stored under id {blob_id}.")
        return int(size)

    async def delete(self, blob_id: str) -> None:
        """Delete a blob's rows. Deleting a missing blob succeeds."""
        check_blob_id(blob_id)
        async with self.engine.begin() as connection:
            await connection.execute(delete(self.table).where(self.table.c.blob_id == blob_id))

    async def exists(self, blob_id: str) -> bool:
        """Return whether a blob is stored under ``blob_id``."""
        check_blob_id(blob_id)
        query = select(self.table.c.seq).where(self.table.c.blob_id == blob_id, self.table.c.seq == 0)
        async with self.engine.connect() as connection:
            return (await connection.execute(query)).first() is not None

    async def list_ids(self) -> list[str]:
        """Return the ids of all stored blobs, sorted."""
        query = select(self.table.c.blob_id).where(self.table.c.seq == 0).order_by(self.table.c.blob_id)
        async with self.engine.connect() as connection:
            return list((await connection.execute(query)).scalars())

    async def _insert_rows(self, connection: AsyncConnection, blob_id: str, spool: BinaryIO) -> None:
        batch: list[dict[str, object]] = []
        seq = 0
        while True:
            data = await asyncio.to_thread(spool.read, ROW_SIZE)

            # An empty blob still gets row 0; otherwise an empty read only marks the end.
            if data or seq == 0:
                batch.append({"blob_id": blob_id, "seq": seq, "data": data})
                seq += 1

            last = len(data) < ROW_SIZE
            if batch and (last or len(batch) == ROWS_PER_BATCH):
                await connection.execute(insert(self.table), batch)
                batch = []
            if last:
                return

    async def _read(self, blob_id: str, offset: int) -> AsyncIterator[bytes]:
        count_query = select(func.count()).select_from(self.table).where(self.table.c.blob_id == blob_id)
        async with self.engine.connect() as connection:
            row_count = (await connection.execute(count_query)).scalar_one()
        if row_count == 0:
            raise BlobNotFound(f"No blob is stored under id {blob_id}.")

        first_row, skip = divmod(offset, ROW_SIZE)
        for start in range(min(first_row, row_count), row_count, ROWS_PER_BATCH):
            end = min(start + ROWS_PER_BATCH, row_count)
            query = (
                select(self.table.c.data)
                .where(self.table.c.blob_id == blob_id, self.table.c.seq >= start, self.table.c.seq < end)
                .order_by(self.table.c.seq)
            )
            async with self.engine.connect() as connection:
                rows: Sequence[bytes]
                if connection.dialect.name == "postgresql":
                    rows = await self._fetch_binary(connection, blob_id, start, end)
                else:
                    rows = (await connection.execute(query)).scalars().all()

            if len(rows) != end - start:
                raise BlobNotFound(
                    f"Blob {blob_id} was deleted while being read (rows {start} to {end - 1} missing)."
                )
            for data in rows:
                if skip:
                    data, skip = data[skip:], 0
                yield bytes(data)

    async def _fetch_binary(
        self, connection: AsyncConnection, blob_id: str, start: int, end: int
    ) -> list[bytes]:
        """Fetch rows ``start`` to ``end - 1`` through psycopg's binary result format."""
        table = connection.dialect.identifier_preparer.format_table(self.table)
        raw = await connection.get_raw_connection()
        async with raw.driver_connection.cursor(binary=True) as cursor:  # type: ignore[union-attr]
            await cursor.execute(
                f"SELECT data FROM {table} WHERE blob_id = %s AND seq >= %s AND seq < %s ORDER BY seq",  # noqa: S608
                (blob_id, start, end),
            )
            return [row[0] for row in await cursor.fetchall()]


async def _spool(chunks: AsyncIterable[bytes] | Iterable[bytes], spool: BinaryIO) -> int:
    if isinstance(chunks, AsyncIterable):
        size = 0
        async for chunk in chunks:
            await asyncio.to_thread(spool.write, chunk)
            size += len(chunk)
        return size

    # A synchronous iterable is consumed in a worker thread, so encryption inside it runs off the event loop.
    return await asyncio.to_thread(_write_all, chunks, spool)


def _write_all(chunks: Iterable[bytes], spool: BinaryIO) -> int:
    size = 0
    for chunk in chunks:
        spool.write(chunk)
        size += len(chunk)
    return size
