"""Application logging: one JSON object per line, with the request id.

Application logs hold operational facts only. Who did what belongs in the access log; codes, passwords,
session ids, names and full IP addresses never reach either.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys

import psycopg

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# Libraries whose debug output carries SQL parameters or request bodies, which may hold names and codes.
_PARAMETER_LOGGERS = (
    "aiosqlite",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "psycopg",
    "multipart",
    "httpx",
    "httpcore",
)


class ExceptionTypeOnly(logging.Filter):
    """Log an exception or a database connection passed as a message argument by its type alone.

    psycopg's connection pool logs each failed attempt to connect with the driver's error text, and each
    connection it discards by the connection's text. Both name the database server's address, port and
    database. The portal logs "database unavailable" with the exception's type for each request that
    fails, and the pool's lines keep the same form.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                type(argument).__name__
                if isinstance(argument, BaseException | psycopg.BaseConnection)
                else argument
                for argument in record.args
            )
        return True


_POOL_LOGGER = "psycopg.pool"


def quiet_libraries() -> None:
    """Keep libraries that log query parameters at WARNING, whatever the root level."""
    for name in _PARAMETER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    pool_logger = logging.getLogger(_POOL_LOGGER)
    if not any(isinstance(existing, ExceptionTypeOnly) for existing in pool_logger.filters):
        pool_logger.addFilter(ExceptionTypeOnly())


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints full client addresses; the portal writes its own request line instead.
    logging.getLogger("uvicorn.access").disabled = True
    quiet_libraries()
