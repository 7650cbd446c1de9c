"""Batched statements on PostgreSQL: connections go back to the pool as SQLAlchemy left them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import func, select, text

from portal.db import create_engine
from portal.models import Throttle
from portal.pgbatch import Compiled, batch_connection, positional_dialect
from portal.schema import migrate
from portal.security.throttle import upsert_statement
from tests.conftest import POSTGRES_URL, fresh_database

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs PORTAL_TEST_DATABASE_URL")

WINDOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


async def _pooled_state(engine: object) -> tuple[bool, TransactionStatus]:
    async with engine.connect() as connection:  # type: ignore[attr-defined]
        driver = (await connection.get_raw_connection()).driver_connection
        return driver.autocommit, driver.info.transaction_status


async def _throttle_rows(engine: object) -> int:
    async with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(await connection.scalar(select(func.count()).select_from(Throttle)))


async def test_failed_and_unfinished_batches_leave_no_trace(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        await migrate(url)
        # One pooled connection, so every check below inspects the connection the batches used.
        engine = create_engine(url, pool_size=1, max_overflow=0)
        try:
            await _pooled_state(engine)
            dialect = positional_dialect(engine.dialect)
            count = Compiled(upsert_statement("postgresql"), dialect)
            broken = Compiled(text("SELECT * FROM no_such_table"), dialect)

            with pytest.raises(psycopg.errors.UndefinedTable):
                async with batch_connection(engine) as database:
                    await database.run([(count, {"bucket": "a", "window_start": WINDOW})], begin=True)
                    await database.run([(broken, None)], commit=True)
            assert await _pooled_state(engine) == (False, TransactionStatus.IDLE)
            assert await _throttle_rows(engine) == 0

            # A transaction begun and never committed is rolled back when the block ends.
            async with batch_connection(engine) as database:
                await database.run([(count, {"bucket": "b", "window_start": WINDOW})], begin=True)
            assert await _pooled_state(engine) == (False, TransactionStatus.IDLE)
            assert await _throttle_rows(engine) == 0

            # Without begin, a batch commits on its own; results come back in statement order.
            async with batch_connection(engine) as database:
                first, second = await database.run(
                    [
                        (count, {"bucket": "c", "window_start": WINDOW}),
                        (count, {"bucket": "c", "window_start": WINDOW}),
                    ]
                )
            assert (first[0], second[0]) == (1, 2)
            assert await _pooled_state(engine) == (False, TransactionStatus.IDLE)
            assert await _throttle_rows(engine) == 1
        finally:
            await engine.dispose()
