"""The database steps of a code redemption on PostgreSQL, in three round trips.

They write the same rows and events as the ``AsyncSession`` steps in ``portal.access.service``, which
SQLite uses, with the same statements. Finding the share counts the attempt against the client's address
and reads the share in one round trip. Spending takes two: one for BEGIN, the conditional UPDATE and the
access log's lock and last number, then one for the session, the event and COMMIT. Everything else about
a redemption (the argon2 checks, which codes are rejected and why, the events) lives in the service module.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Dialect

from portal.access.statements import SHARE_BY_LOCATOR, SPEND_ONE, ShareToRedeem, share_to_redeem
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
from portal.security.sessions import DELETE_SESSION, INSERT_SESSION, new_session
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
    )


# The flood counter's transaction commits without waiting for its WAL flush. A crash of the database
# server can lose the counts of its last moments: at most three times wal_writer_delay (200 ms by
# default), as PostgreSQL's documentation on asynchronous commit states. That lets a client try a few
# more codes in that minute. Spending a code commits with the server's own durability setting.
RELAXED_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def uses_batches(dialect: Dialect) -> bool:
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def open_pool(database_url: str, dialect: Dialect, *, max_size: int) -> BatchPool:
    """Return a pool whose connections have the statements of a redemption prepared; open it before use."""
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
        seq = (last_row[0] if last_row and last_row[0] is not None else 0) + 1

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
