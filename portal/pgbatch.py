"""SQLAlchemy Core statements sent to PostgreSQL several at a time, for request paths made of round trips.

Through an ``AsyncSession`` each statement costs about 0.18 ms of event-loop CPU, and BEGIN and COMMIT are
round trips of their own. Here a batch of statements, BEGIN and COMMIT included, goes to the server as one
query string and its results return in one reply, so a code redemption needs three round trips instead of
thirteen. psycopg's client-side binding (``AsyncClientCursor``) quotes the parameters into the string. Its
pipeline mode would keep server-side binding, but it wakes the event loop once per statement, which cost
about twice the CPU in a measurement on a 2-core server.

Statements stay SQLAlchemy Core constructs, compiled once with positional parameters, so column names and
types have one source. Parameters and results pass through the column types' own bind and result
processors, so a ``UTCDateTime`` is stored naive and read back aware exactly as through the ORM.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio
import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import ColumnElement
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable
from sqlalchemy.util import greenlet_spawn


def positional_dialect(dialect: Dialect) -> Dialect:
    """Return a copy of ``dialect`` that renders parameters as ``%s`` in order, so statements can be joined."""
    dialect_class: Any = type(dialect)
    positional: Dialect = dialect_class(paramstyle="format")
    positional.server_version_info = dialect.server_version_info
    return positional


class Compiled:
    """One Core statement compiled for a positional dialect, with its parameter and result conversions."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = str(compiled)
        self._compiled = compiled
        self._order: tuple[str, ...] = tuple(compiled.positiontup or ())
        self._binds: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.bind_processor(dialect)
            if processor is not None:
                self._binds[name] = processor
        # A SELECT's columns, or an INSERT, UPDATE or DELETE's RETURNING columns (none without RETURNING).
        columns: Sequence[ColumnElement[Any]] = list(getattr(statement, "exported_columns", ()))
        self.keys: tuple[str, ...] = tuple(
            column.key or f"column_{index}" for index, column in enumerate(columns)
        )
        self._results: tuple[Callable[[Any], Any] | None, ...] = tuple(
            column.type.result_processor(dialect, None) for column in columns
        )

    def params(self, values: Mapping[str, Any] | None = None) -> list[Any]:
        """Return the positional parameters: the statement's own literals plus ``values``, each converted."""
        named = self._compiled.construct_params(dict(values or {}))
        return [
            self._binds[name](named[name]) if name in self._binds else named[name] for name in self._order
        ]

    def row(self, values: Sequence[Any] | None) -> dict[str, Any] | None:
        """Convert one result row to a mapping of column keys to Python values."""
        if values is None:
            return None
        return {
            key: processor(value) if processor is not None else value
            for key, processor, value in zip(self.keys, self._results, values, strict=True)
        }


Step = tuple[Compiled, Mapping[str, Any] | None]


class BatchConnection:
    """A pooled connection in autocommit mode; ``run`` sends a batch of statements in one round trip."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    async def run(self, steps: Sequence[Step], *, begin: bool = False, commit: bool = False) -> list[Any]:
        """Run ``steps`` in order and return the first row of each (None for a statement without rows).

        Without ``begin`` and ``commit`` the batch is one implicit transaction of its own. ``begin`` opens
        a transaction that a later batch ends with ``commit``; leaving ``batch_connection`` without that commit
        rolls it back.
        """
        sql = ";\n".join(statement.sql for statement, _values in steps)
        params = [param for statement, values in steps for param in statement.params(values)]
        if begin:
            sql = "BEGIN;\n" + sql
        if commit:
            sql += ";\nCOMMIT"
        cursor = psycopg.AsyncClientCursor(self._connection)
        await cursor.execute(sql, params)
        rows: list[Any] = []
        if begin:
            cursor.nextset()
        for index, (statement, _values) in enumerate(steps):
            if index:
                cursor.nextset()
            # The compiled statement's columns tell whether it returns rows. The cursor's ``description``
            # would build a column list for every result.
            rows.append(await cursor.fetchone() if statement.keys else None)
        return rows


@contextlib.asynccontextmanager
async def batch_connection(engine: AsyncEngine) -> AsyncIterator[BatchConnection]:
    """Check a connection out of the engine's pool and switch it to autocommit while it is used here.

    A transaction left open, by an exception too, is rolled back before the connection returns to the pool.
    A connection that cannot be switched back to transactions is discarded instead.
    """
    # The pool's own checkout, without a SQLAlchemy Connection around it, costs about half the CPU
    # (36 against 85 microseconds per checkout on a 2-core EPYC server). Checkout events, such as the
    # idle ping in ``portal.db``, run all the same.
    pooled = await engine.raw_connection()
    driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        await driver.set_autocommit(True)
        yield BatchConnection(driver)
    finally:
        # Shielded: a connection must never go back to the pool in autocommit mode, and a cancelled
        # request would otherwise skip this step.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(psycopg.Error):
                if driver.info.transaction_status in (
                    TransactionStatus.INTRANS,
                    TransactionStatus.INERROR,
                ):
                    await driver.execute("ROLLBACK")
                await driver.set_autocommit(False)
            if driver.autocommit:
                await greenlet_spawn(pooled.invalidate)
            # Returning the connection runs the pool's reset, which awaits the driver inside a greenlet.
            await greenlet_spawn(pooled.close)
