"""One fixture that yields each blob store under test: filesystem, SQLite and, when configured, PostgreSQL.

PostgreSQL runs when PORTAL_TEST_DATABASE_URL is set (for example postgresql://postgres@127.0.0.1:5432/test).
Each test gets its own schema there, dropped afterwards, because other test suites share that database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import MetaData, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from portal.storage.base import BlobStore
from portal.storage.database import DatabaseBlobStore, define_tables
from portal.storage.filesystem import FileBlobStore

POSTGRES_URL = os.environ.get("PORTAL_TEST_DATABASE_URL", "")


@dataclass
class StoreUnderTest:
    store: BlobStore
    # Counts whatever the store keeps on disk or in its table, finished or not.
    count_leftovers: Callable[[], Awaitable[int]]


def postgres_async_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


async def database_store(engine: AsyncEngine, schema: str | None) -> StoreUnderTest:
    metadata = MetaData(schema=schema)
    table = define_tables(metadata)
    async with engine.begin() as connection:
        if schema:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await connection.run_sync(metadata.create_all)

    async def count_rows() -> int:
        async with engine.connect() as connection:
            return (await connection.execute(select(func.count()).select_from(table))).scalar_one()

    return StoreUnderTest(DatabaseBlobStore(engine, table), count_rows)


@pytest.fixture(
    params=[
        "filesystem",
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not POSTGRES_URL, reason="PORTAL_TEST_DATABASE_URL is not set"),
        ),
    ]
)
async def store_under_test(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    if request.param == "filesystem":
        root = tmp_path / "blobs"
        store = FileBlobStore(root)

        async def count_files() -> int:
            return sum(1 for path in root.rglob("*") if path.is_file())

        yield StoreUnderTest(store, count_files)
        return

    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'blobs.sqlite3'}")
        try:
            yield await database_store(engine, schema=None)
        finally:
            await engine.dispose()
        return

    engine = create_async_engine(postgres_async_url(POSTGRES_URL))
    schema = f"test_blob_store_{secrets.token_hex(6)}"
    try:
        yield await database_store(engine, schema=schema)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()
