"""Batched statements on PostgreSQL: prepared per connection, and no transaction outlives its block."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Integer, func, literal_column, select, text

from portal.db import create_engine
from portal.models import Throttle
from portal.pgbatch import BatchPool, Compiled, conninfo_of, positional_dialect
from portal.schema import migrate
from portal.security.throttle import upsert_statement
from tests.conftest import POSTGRES_URL, fresh_database

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs PORTAL_TEST_DATABASE_URL")

WINDOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def _backend_states(url: str) -> list[str]:
    """Return the state of every other session on the database of ``url``, as PostgreSQL reports it."""
    with psycopg.connect(conninfo_of(url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [row[0] for row in rows]


def _throttle_rows(url: str) -> int:
    with psycopg.connect(conninfo_of(url), autocommit=True) as connection:
        row = connection.execute(str(select(func.count()).select_from(Throttle))).fetchone()
    assert row is not None
    return int(row[0])


async def test_failed_and_unfinished_batches_leave_no_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        await migrate(url)
        engine = create_engine(url)
        dialect = positional_dialect(engine.dialect)
        count = Compiled(upsert_statement("postgresql"), dialect)
        # A statement that cannot be prepared either: it names a table that does not exist.
        broken = Compiled(text("SELECT * FROM no_such_table"), dialect, prepare=False)
        # One connection, so every check below inspects the session the batches used.
        pool = BatchPool(url, engine.dialect, [count], max_size=1)
        await pool.open()
        caplog.set_level(logging.WARNING, logger="psycopg.pool")
        try:
            with pytest.raises(psycopg.errors.UndefinedTable):
                async with pool.connection() as database:
                    await database.run([(count, {"bucket": "a", "window_start": WINDOW})], begin=True)
                    await database.run([(broken, None)], commit=True)
            assert _backend_states(url) == ["idle"]
            assert _throttle_rows(url) == 0

            # A transaction begun and never committed is rolled back when the block ends.
            async with pool.connection() as database:
                await database.run([(count, {"bucket": "b", "window_start": WINDOW})], begin=True)
            assert _backend_states(url) == ["idle"]
            assert _throttle_rows(url) == 0

            # Without begin, a batch commits on its own; results come back in statement order.
            async with pool.connection() as database:
                first, second = await database.run(
                    [
                        (count, {"bucket": "c", "window_start": WINDOW}),
                        (count, {"bucket": "c", "window_start": WINDOW}),
                    ]
                )
            assert (first[0], second[0]) == (1, 2)
            assert _backend_states(url) == ["idle"]
            assert _throttle_rows(url) == 1
            # The pool never had to roll back a returned connection itself, which it would log as a warning.
            assert not [record for record in caplog.records if record.name.startswith("psycopg.pool")]
        finally:
            await pool.close()
            await engine.dispose()


async def test_statements_run_prepared(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        engine = create_engine(url)
        dialect = positional_dialect(engine.dialect)
        # A literal percent sign next to parameters: the prepared form must keep it as one sign.
        like = Compiled(select(literal_column("'50%'").like(text(":pattern")), text(":count + 1")), dialect)
        prepared = Compiled(
            text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'batch%%'").columns(
                count=Integer
            ),
            dialect,
        )
        pool = BatchPool(url, engine.dialect, [like, prepared], max_size=2)
        await pool.open()
        try:
            assert like.prepare_sql is not None
            assert like.execute_sql.startswith("EXECUTE batch_")
            async with pool.connection() as database:
                matched, names = await database.run(
                    [(like, {"pattern": "5_\\%", "count": 41}), (prepared, None)]
                )
            assert tuple(matched) == (True, 42)
            # Both statements, this one included, were prepared when the connection opened.
            assert tuple(names) == (2,)
        finally:
            await pool.close()
            await engine.dispose()
