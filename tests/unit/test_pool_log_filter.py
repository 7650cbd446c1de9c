"""The connection pool's warnings keep the database's address and name out of the application log."""

from __future__ import annotations

import logging

import psycopg

from portal.logs import ExceptionTypeOnly


def _message(*args: object) -> str:
    record = logging.LogRecord("psycopg.pool", logging.WARNING, __file__, 1, "pool: %s %s", args, None)
    assert ExceptionTypeOnly().filter(record)
    return record.getMessage()


def test_exception_logged_by_type() -> None:
    error = psycopg.OperationalError('connection to server at "10.0.0.5", port 5432 failed')
    assert _message(error, "pool-1") == "pool: OperationalError pool-1"


def test_connection_logged_by_type() -> None:
    # A connection object that never connected: the filter must not need its text.
    connection = psycopg.AsyncConnection.__new__(psycopg.AsyncConnection)
    assert _message(connection, "batches") == "pool: AsyncConnection batches"
