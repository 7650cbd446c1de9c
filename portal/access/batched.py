"""The database steps of a code redemption and a download on PostgreSQL, in a few round trips each.

They write the same rows and events as the ``AsyncSession`` steps in ``portal.access.service``, which
SQLite uses, with the same statements. Finding the share counts the attempt against the client's address
and reads the share in one round trip. Spending takes two: one for BEGIN, the conditional UPDATE and the
access log's lock and last number, then one for the session, the event and COMMIT. A download reads its
session, share and data key in one round trip and counts itself in two more, shaped like spending. Its
end takes two. Everything else (the argon2 checks, which requests are refused and why, the events) lives
in the service module.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Dialect

from portal.access.statements import (
    COUNT_DOWNLOAD,
    DOWNLOAD_CHECK,
    DOWNLOAD_COMPLETED,
    DOWNLOAD_GIVEN_BACK,
    SHARE_BY_LOCATOR,
    SPEND_ONE,
    ShareToRedeem,
    share_to_redeem,
)
from portal.audit.recorder import (
    INSERT_EVENT,
    LAST_SEQ,
    LOCK_LOG,
    LOCK_LOG_PARAMS,
    Actor,
    new_event_values,
)
from portal.pgbatch import BatchPool, Compiled, Step, positional_dialect
from portal.security.hashing import sha256_hex
from portal.security.sessions import DELETE_SESSION, INSERT_SESSION, TOUCH_SESSION, new_session
from portal.security.throttle import upsert_statement


@dataclass(frozen=True)
class _Statements:
    relaxed_commit: Compiled
    count_attempt: Compiled
    share_by_locator: Compiled
    spend_one: Compiled
    delete_session: Compiled
    insert_session: Compiled
    lock_log: Compiled
    last_seq: Compiled
    insert_event: Compiled
    download_check: Compiled
    count_download: Compiled
    touch_session: Compiled
    download_completed: Compiled
    download_given_back: Compiled


@functools.lru_cache(maxsize=16)
def _statements(engine_dialect: Dialect) -> _Statements:
    dialect = positional_dialect(engine_dialect)
    return _Statements(
        relaxed_commit=Compiled(RELAXED_COMMIT, dialect, prepare=False),
        count_attempt=Compiled(upsert_statement("postgresql"), dialect),
        share_by_locator=Compiled(SHARE_BY_LOCATOR, dialect),
        spend_one=Compiled(SPEND_ONE, dialect),
        delete_session=Compiled(DELETE_SESSION, dialect),
        insert_session=Compiled(INSERT_SESSION, dialect),
        lock_log=Compiled(LOCK_LOG, dialect),
        last_seq=Compiled(LAST_SEQ, dialect),
        insert_event=Compiled(INSERT_EVENT, dialect),
        download_check=Compiled(DOWNLOAD_CHECK, dialect),
        count_download=Compiled(COUNT_DOWNLOAD, dialect),
        touch_session=Compiled(TOUCH_SESSION, dialect),
        download_completed=Compiled(DOWNLOAD_COMPLETED, dialect),
        download_given_back=Compiled(DOWNLOAD_GIVEN_BACK, dialect),
    )


# The flood counter's transaction commits without waiting for its WAL flush. A crash of the database
# server can lose the counts of its last moments: at most three times wal_writer_delay (200 ms by
# default), as PostgreSQL's documentation on asynchronous commit states. That lets a client try a few
# more codes in that minute. Spending a code commits with the server's own durability setting.
RELAXED_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def uses_batches(dialect: Dialect) -> bool:
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def open_pool(database_url: str, dialect: Dialect, *, max_size: int) -> BatchPool:
    """Return a pool with the statements of a redemption and a download prepared. Open it before use."""
    statements = _statements(dialect)
    return BatchPool(database_url, dialect, vars(statements).values(), max_size=max_size)


async def find_share(
    pool: BatchPool,
    locator: str,
    bucket: str | None,
    window_start: dt.datetime,
) -> tuple[int, ShareToRedeem | None]:
    """Count the attempt in ``bucket`` (unless None) and read the share; both commit in one round trip."""
    statements = _statements(pool.dialect)
    find = (statements.share_by_locator, {"locator": locator})
    if bucket is None:
        async with pool.connection() as database:
            (share_row,) = await database.run([find])
        return 0, share_to_redeem(statements.share_by_locator.row(share_row))

    count = (statements.count_attempt, {"bucket": bucket, "window_start": window_start})
    async with pool.connection() as database:
        _relaxed, share_row, count_row = await database.run(
            [(statements.relaxed_commit, None), find, count], begin=True, commit=True
        )
    return int(count_row[0]), share_to_redeem(statements.share_by_locator.row(share_row))


@dataclass(frozen=True)
class SessionRequest:
    """The recipient session to start when the code is spent."""

    previous_id: str | None
    options: dict[str, Any]


@dataclass(frozen=True)
class SpendEvents:
    """The keyword arguments of ``record`` for the two outcomes of spending a code (event type included)."""

    redeemed: dict[str, Any]
    failed: dict[str, Any]


async def spend(
    pool: BatchPool,
    recipient: Actor,
    share: ShareToRedeem,
    now: dt.datetime,
    session_request: SessionRequest,
    events: SpendEvents,
) -> tuple[int | None, str | None]:
    """Spend one redemption; return the new redemption count and session id, or (None, None) if rejected.

    A rejection records ``events.failed``. A redemption ends the previous session, starts the new one and
    records ``events.redeemed``, all in one transaction.
    """
    statements = _statements(pool.dialect)
    async with pool.connection() as database:
        spent_row, _locked, last_row = await database.run(
            [
                (statements.spend_one, {"share_id": share.id, "expected_hash": share.code_hash, "now": now}),
                (statements.lock_log, LOCK_LOG_PARAMS),
                (statements.last_seq, None),
            ],
            begin=True,
        )
        seq = _next_seq(last_row)

        raw_id = None
        steps: list[Step] = []
        if spent_row is None:
            event = new_event_values(seq, recipient, **events.failed)
        else:
            if session_request.previous_id:
                steps.append(
                    (statements.delete_session, {"id_hash": sha256_hex(session_request.previous_id)})
                )
            raw_id, values = new_session(**session_request.options)
            steps.append((statements.insert_session, values))
            event = new_event_values(seq, recipient, **events.redeemed)
        steps.append((statements.insert_event, event))
        await database.run(steps, commit=True)
    return (int(spent_row[0]), raw_id) if spent_row is not None else (None, None)


async def read_download(pool: BatchPool, id_hash: str) -> dict[str, Any] | None:
    """Return the session under ``id_hash`` with its share and wrapped data key (``DOWNLOAD_CHECK``)."""
    statements = _statements(pool.dialect)
    async with pool.connection() as database:
        (row,) = await database.run([(statements.download_check, {"id_hash": id_hash})])
    return statements.download_check.row(row)


async def count_download(
    pool: BatchPool, recipient: Actor, share_id: Any, touch: dict[str, Any] | None, event: dict[str, Any]
) -> bool:
    """Count a download against the share's limit and record ``event``, or return False at the limit.

    ``touch`` contains the ``TOUCH_SESSION`` parameters when the session's ``last_seen_at`` is due.
    """
    statements = _statements(pool.dialect)
    async with pool.connection() as database:
        counted_row, _locked, last_row = await database.run(
            [
                (statements.count_download, {"share_id": share_id}),
                (statements.lock_log, LOCK_LOG_PARAMS),
                (statements.last_seq, None),
            ],
            begin=True,
        )
        if counted_row is None:
            # Leaving the connection without COMMIT rolls the transaction back.
            return False
        seq = _next_seq(last_row)
        steps: list[Step] = []
        if touch is not None:
            steps.append((statements.touch_session, touch))
        steps.append((statements.insert_event, new_event_values(seq, recipient, **event)))
        await database.run(steps, commit=True)
    return True


async def finish_download(
    pool: BatchPool, recipient: Actor, share_id: Any, change: str | None, event: dict[str, Any]
) -> None:
    """Record how a download ended, after ``change``: "completed", "given_back" or None for no count."""
    statements = _statements(pool.dialect)
    steps: list[Step] = []
    if change == "completed":
        steps.append((statements.download_completed, {"share_id": share_id}))
    elif change == "given_back":
        steps.append((statements.download_given_back, {"share_id": share_id}))
    steps += [(statements.lock_log, LOCK_LOG_PARAMS), (statements.last_seq, None)]
    async with pool.connection() as database:
        rows = await database.run(steps, begin=True)
        last_row = rows[-1]
        seq = _next_seq(last_row)
        await database.run(
            [(statements.insert_event, new_event_values(seq, recipient, **event))], commit=True
        )


def _next_seq(last_row: Any) -> int:
    """Return the number of the next event from the ``LAST_SEQ`` row (no row or NULL: an empty log)."""
    return (last_row[0] if last_row and last_row[0] is not None else 0) + 1
