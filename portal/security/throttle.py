"""Fixed-window request counters in the database, shared by every server process.

A counter is one row per (bucket, window start); ``hit`` increments it with a single upsert and returns
the new count, so the limit holds across processes and machines. These counters are flood control: the
real budget for guessing a code is the per-share failure count, which locks the share.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from portal.models import Throttle, utcnow


def keyed_bucket(kind: str, value: str, secret: bytes) -> str:
    """Return the bucket name for ``value``: an HMAC, so counters name no address or e-mail address."""
    digest = hmac.new(secret, f"{kind}|{value}".encode(), hashlib.sha256).hexdigest()[:40]
    return f"{kind}:{digest}"


def window_start(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    seconds = int(window.total_seconds())
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


def _upsert(insert: Any) -> ReturningInsert[Any]:
    # Built once per dialect: constructing the statement costs more CPU than the database spends on it.
    table = Throttle.__table__
    statement = insert(table).values(
        bucket=bindparam("bucket"), window_start=bindparam("window_start"), count=1
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.bucket, table.c.window_start], set_={"count": table.c.count + 1}
    ).returning(table.c.count)


_UPSERT = {"postgresql": _upsert(postgresql_insert), "sqlite": _upsert(sqlite_insert)}


def upsert_statement(dialect_name: str) -> ReturningInsert[Any]:
    """Return the counting upsert for ``dialect_name``; its parameters are ``bucket`` and ``window_start``."""
    return _UPSERT[dialect_name]


async def hit(db: AsyncSession, bucket: str, window: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Count one request in ``bucket`` for the current window and return the window's count so far."""
    start = window_start(now or utcnow(), window)
    statement = upsert_statement(db.get_bind().dialect.name)
    result = await db.execute(statement, {"bucket": bucket[:120], "window_start": start})
    return int(result.scalar_one())


async def total(db: AsyncSession, bucket: str) -> int:
    """Return the count of ``bucket`` summed over every window still stored."""
    summed = await db.scalar(select(func.sum(Throttle.count)).where(Throttle.bucket == bucket[:120]))
    return int(summed or 0)


async def forget_windows_before(db: AsyncSession, cutoff: dt.datetime, *, dry_run: bool = False) -> int:
    """Delete the counters of windows that started before ``cutoff``; return how many there were."""
    if dry_run:
        return int(await db.scalar(select(func.count()).where(Throttle.window_start < cutoff)) or 0)
    result = await db.execute(delete(Throttle).where(Throttle.window_start < cutoff))
    return result.rowcount or 0  # type: ignore[attr-defined]


async def forget(db: AsyncSession, bucket: str) -> None:
    """Delete every window of one bucket, e.g. to release a one-time form id after a failed action."""
    await db.execute(delete(Throttle).where(Throttle.bucket == bucket[:120]))
