"""Database engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(url: str, *, foreign_keys: bool = True, **kwargs: Any) -> AsyncEngine:
    """Create an engine with the per-connection settings each backend needs.

    On SQLite every transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
    writes can fail with "database is locked" when another connection wrote in between, and busy_timeout
    does not retry that case. Taking the write lock up front makes concurrent writers wait their turn.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine, foreign_keys)
        return engine

    engine = create_async_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


# A pooled connection that went back to the pool less than this long ago is handed out without a ping.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Ping a pooled PostgreSQL connection before reuse only when it has been idle for a while.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout: a code redemption checks out
    twice, and the two pings took about 0.5 ms of event-loop CPU and 0.2 ms of PostgreSQL's per
    redemption. A connection returned moments ago was working then. Connections go stale while idle
    (a database restart, a firewall that drops quiet connections), and those are the ones pinged here.
    A failed ping invalidates every connection the pool holds, as after a restart, and the pool opens a
    new one. A connection that dies within the idle window fails its request, and the client gets a 503 response.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The message names no address, because the pool logs it when it replaces the connection.
            raise exc.InvalidatePoolError("a pooled database connection did not answer a ping") from error


def _configure_sqlite(engine: AsyncEngine, foreign_keys: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level, so the "begin" hook below decides how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        # Migrations turn enforcement off: SQLite rebuilds a table to alter it, and dropping the old table
        # would otherwise cascade deletes into the rows that reference it.
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
