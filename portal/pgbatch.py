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

Batches run on connections of their own (``BatchPool``, a psycopg pool), not on SQLAlchemy's: they stay
in autocommit mode, and every connection prepares the batch statements once when it opens, so a batch
sends ``EXECUTE name(...)`` and PostgreSQL skips parsing and planning. Checking a connection out of
SQLAlchemy's pool and switching it to autocommit and back cost more event-loop CPU than the batch itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import ColumnElement
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql import Executable

from portal import db

# How long a batch waits for a connection before failing like a database outage (``PoolTimeout``).
CONNECTION_TIMEOUT_SECONDS = 5.0

# A format-style placeholder, or an escaped percent sign, in SQL compiled for a positional dialect.
_PLACEHOLDER = re.compile(r"%[s%]")


def positional_dialect(dialect: Dialect) -> Dialect:
    """Return a copy of ``dialect`` that renders parameters as ``%s`` in order, so statements can be joined."""
    dialect_class: Any = type(dialect)
    positional: Dialect = dialect_class(paramstyle="format")
    positional.server_version_info = dialect.server_version_info
    return positional


class Compiled:
    """One Core statement compiled for a positional dialect, with its parameter and result conversions.

    With ``prepare`` (the default) a ``BatchPool`` prepares the statement on each of its connections, and
    batches run it by name. Statements that PostgreSQL cannot prepare, such as ``SET``, pass False.
    """

    def __init__(self, statement: Executable, dialect: Dialect, *, prepare: bool = True) -> None:
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
        self.prepare_sql: str | None = None
        self.execute_sql = self.sql
        if prepare:
            # Named after the SQL text, so every process and connection gives one statement one name.
            name = "batch_" + hashlib.sha256(self.sql.encode()).hexdigest()[:16]
            numbers = iter(range(1, len(self._order) + 1))
            numbered = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else f"${next(numbers)}", self.sql)
            self.prepare_sql = f"PREPARE {name} AS {numbered}"
            arguments = ", ".join("%s" for _name in self._order)
            self.execute_sql = f"EXECUTE {name}({arguments})" if arguments else f"EXECUTE {name}"

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
    """A connection in autocommit mode; ``run`` sends a batch of statements in one round trip."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    async def run(self, steps: Sequence[Step], *, begin: bool = False, commit: bool = False) -> list[Any]:
        """Run ``steps`` in order and return the first row of each (None for a statement without rows).

        Without ``begin`` and ``commit`` the batch is one implicit transaction of its own. ``begin`` opens
        a transaction that a later batch ends with ``commit``. Leaving ``BatchPool.connection`` without that
        commit rolls it back.
        """
        sql = ";\n".join(statement.execute_sql for statement, _values in steps)
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


class BatchPool:
    """Autocommit connections to PostgreSQL for batches, each with ``statements`` prepared.

    As in the engine's pool, a connection that went back to the pool more than
    ``portal.db.PING_AFTER_IDLE_SECONDS`` ago is pinged before reuse, and one that fails the ping is
    replaced. Waiting longer than
    ``CONNECTION_TIMEOUT_SECONDS`` for a connection raises ``psycopg_pool.PoolTimeout``, an
    ``OperationalError``, which the app answers like any database outage.

    psycopg_pool (3.3) retries a failed attempt to connect after about 1 s, 2 s, 4 s and so on, by default
    for five minutes. Redemptions would then fail for up to as long again as the outage lasted, while the
    database already accepts connections (for 18 s after an outage of 45 s, in one run). So an attempt
    gives up after ``CONNECTION_TIMEOUT_SECONDS``, as long as one request may wait for it, and the next
    request that needs a connection starts a new attempt at once. Within those 5 s the retries are at
    most 2 s apart.
    """

    def __init__(
        self,
        database_url: str,
        dialect: Dialect,
        statements: Iterable[Compiled],
        *,
        max_size: int,
    ) -> None:
        # The engine's dialect, for callers that compile their statements once per dialect.
        self.dialect = dialect
        self._prepare = ";\n".join(
            statement.prepare_sql for statement in statements if statement.prepare_sql is not None
        )
        self._returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            conninfo_of(database_url),
            min_size=1,
            max_size=max_size,
            timeout=CONNECTION_TIMEOUT_SECONDS,
            reconnect_timeout=CONNECTION_TIMEOUT_SECONDS,
            open=False,
            name="batches",
            kwargs={"autocommit": True},
            configure=self._configure,
            check=self._check,
        )

    async def open(self) -> None:
        """Start the pool. Its first connection opens in the background."""
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def _configure(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if self._prepare:
            await psycopg.AsyncClientCursor(connection).execute(self._prepare)
        self._returned_at[connection] = time.monotonic()

    async def _check(self, connection: psycopg.AsyncConnection[Any]) -> None:
        returned_at = self._returned_at.get(connection, 0.0)
        if time.monotonic() - returned_at >= db.PING_AFTER_IDLE_SECONDS:
            await AsyncConnectionPool.check_connection(connection)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[BatchConnection]:
        """Lend a connection. A transaction left open, by an exception too, is rolled back on return."""
        connection = await self._pool.getconn()
        try:
            yield BatchConnection(connection)
        finally:
            # Shielded: a cancelled request would otherwise return a connection inside a transaction.
            with anyio.CancelScope(shield=True):
                if connection.info.transaction_status in (
                    TransactionStatus.INTRANS,
                    TransactionStatus.INERROR,
                ):
                    try:
                        await connection.execute("ROLLBACK")
                    except psycopg.Error:
                        # The pool discards a closed connection instead of lending it again.
                        await connection.close()
                self._returned_at[connection] = time.monotonic()
                await self._pool.putconn(connection)


def conninfo_of(database_url: str) -> str:
    """Return the libpq connection string of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://...``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
