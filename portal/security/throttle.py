"""Fixed-window request counters in the database, shared by every server process.

A counter is one row per (bucket, window start); ``hit`` increments it with a single upsert and returns
the new count, so the limit holds across processes and machines. These counters are flood control: the
real budget for guessing a code is the per-share failure count, which locks the share.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from portal.models import Throttle, utcnow


def window_start(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    seconds = int(window.total_seconds())
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.UTC)


async def hit(db: AsyncSession, bucket: str, window: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Count one request in ``bucket`` for the current window and return the window's count so far."""
    start = window_start(now or utcnow(), window)
    keys = [Throttle.bucket, Throttle.window_start]
    increment = {"count": Throttle.count + 1}
    statement: ReturningInsert[Any]
    if db.get_bind().dialect.name == "postgresql":
        pg_insert = postgresql_insert(Throttle).values(bucket=bucket[:120], window_start=start, count=1)
        statement = pg_insert.on_conflict_do_update(index_elements=keys, set_=increment).returning(
            Throttle.count
        )
    else:
        lite_insert = sqlite_insert(Throttle).values(bucket=bucket[:120], window_start=start, count=1)
        statement = lite_insert.on_conflict_do_update(index_elements=keys, set_=increment).returning(
            Throttle.count
        )
    return int((await db.execute(statement)).scalar_one())


async def forget_old_windows(db: AsyncSession, older_than: dt.timedelta) -> int:
    """Delete counters of windows that ended long ago; returns how many rows went."""
    cutoff = utcnow() - older_than
    result = await db.execute(delete(Throttle).where(Throttle.window_start < cutoff))
    return result.rowcount or 0  # type: ignore[attr-defined]


async def forget(db: AsyncSession, bucket: str) -> None:
    """Delete every window of one bucket, e.g. to release a one-time form id after a failed action."""
    await db.execute(delete(Throttle).where(Throttle.bucket == bucket[:120]))
