"""While PostgreSQL rejects connections, pages return 503 with a clear message, and recover after."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from portal import db, pgbatch
from portal.app import create_app
from tests.conftest import BASE_URL, POSTGRES_URL, csrf_from, fresh_database, make_settings
from tests.helpers import issue_share, redeem

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="needs PORTAL_TEST_DATABASE_URL")


def _block_connections(database_url: str, blocked: bool) -> None:
    """Stop or allow new connections to the test database and end the open ones."""
    assert POSTGRES_URL is not None
    name = database_url.rsplit("/", 1)[1]
    admin_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if blocked else "true"}')
        if blocked:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )


async def test_outage_answers_503_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short, so the redemption that waits for a new connection gives up quickly.
    monkeypatch.setattr(pgbatch, "CONNECTION_TIMEOUT_SECONDS", 0.5)
    with fresh_database("postgresql", tmp_path) as url:
        app = create_app(make_settings(tmp_path / "data", url), pdf_workers=1)
        async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
            headers, shared = await issue_share(app, client)
            form = await client.get("/access")
            try:
                _block_connections(url, blocked=True)
                # Warnings too: the connection pool logs each failed attempt to connect.
                with caplog.at_level(logging.WARNING):
                    rejected = await client.post(
                        "/access", data={"code": shared["access_code"], "_csrf_token": csrf_from(form.text)}
                    )
                    # The failed connection is gone, so this attempt waits for a new one that never opens.
                    waited = await client.post(
                        "/access", data={"code": shared["access_code"], "_csrf_token": csrf_from(form.text)}
                    )
                    api = await client.get(f"/api/v1/shares/{shared['id']}", headers=headers)
            finally:
                _block_connections(url, blocked=False)

            assert rejected.status_code == 503
            assert waited.status_code == 503
            assert "cannot reach its database" in waited.text
            assert rejected.headers["retry-after"] == "30"
            assert "cannot reach its database" in rejected.text
            assert "Traceback" not in rejected.text
            assert api.status_code == 503
            assert api.json()["error"]["code"] == "database_unavailable"
            # The log names the failure without the database's address or the code.
            logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
            assert "database unavailable" in logged
            assert shared["access_code"] not in logged
            assert "127.0.0.1" not in logged

            # The code was not spent: it works once the database is back.
            assert (await redeem(client, shared["access_code"])).status_code == 200


async def test_idle_pool_reconnects_after_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A short idle window keeps the test fast. The pool pings every connection idle for longer.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.05)
    with fresh_database("postgresql", tmp_path) as url:
        app = create_app(make_settings(tmp_path / "data", url), pdf_workers=1)
        async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
            headers, shared = await issue_share(app, client)
            # Ending every server process of the database leaves the pool with dead connections, as a
            # database restart does.
            _block_connections(url, blocked=True)
            _block_connections(url, blocked=False)
            await asyncio.sleep(0.2)

            assert (await redeem(client, shared["access_code"])).status_code == 200
            assert (await client.get(f"/api/v1/shares/{shared['id']}", headers=headers)).status_code == 200


async def test_redemption_works_right_after_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbatch, "CONNECTION_TIMEOUT_SECONDS", 0.5)
    with fresh_database("postgresql", tmp_path) as url:
        app = create_app(make_settings(tmp_path / "data", url), pdf_workers=1)
        async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
            _headers, shared = await issue_share(app, client)
            try:
                _block_connections(url, blocked=True)
                assert (await redeem(client, shared["access_code"])).status_code == 503
                # This one waits for a new connection, so the pool starts opening one and retries.
                assert (await redeem(client, shared["access_code"])).status_code == 503
                # Past the pool's first two retry delays (about 1 s and 2 s) and before its third (about
                # 4 s later). A pool that kept retrying would make the next redemption wait for that one.
                await asyncio.sleep(4.5)
            finally:
                _block_connections(url, blocked=False)

            # The first redemption after the outage gets a connection within its 0.5 s wait.
            assert (await redeem(client, shared["access_code"])).status_code == 200
