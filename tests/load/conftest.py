"""Fixtures for load and fault tests: portal processes on loopback sharing a fresh PostgreSQL database.

Every test here needs PORTAL_TEST_DATABASE_URL (for example ``postgresql://postgres@127.0.0.1:5432/test``)
and is skipped without it. Each test gets its own database, created before and dropped after the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.load.servers import Deployment, temporary_database

ADMIN_DATABASE_URL = os.environ.get("PORTAL_TEST_DATABASE_URL")
# Generous for a 2-core machine preparing 25 MB copies while other requests run.
HTTP_TIMEOUT_SECONDS = 60.0

requires_postgres = pytest.mark.skipif(
    not ADMIN_DATABASE_URL,
    reason="PORTAL_TEST_DATABASE_URL is unset: load tests need PostgreSQL shared by several server processes",
)


@pytest.fixture
def load_database() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    assert ADMIN_DATABASE_URL is not None
    with temporary_database(ADMIN_DATABASE_URL) as url:
        yield url


@pytest.fixture
def deployment(tmp_path: Path, load_database: str) -> Iterator[Deployment]:
    """A deployment on the fresh database; every server it started is stopped after the test."""
    cluster = Deployment(root=tmp_path, database_url=load_database)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, limits=limits) as client:
        yield client
