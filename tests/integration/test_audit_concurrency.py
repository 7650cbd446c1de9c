"""Two OS processes with their own engines record 1,000 events at once on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from portal.audit.checkpoints import make_checkpoint
from portal.audit.verify import verify_database
from portal.config import Settings
from portal.core import start_portal
from portal.models import AccessEvent
from tests.conftest import BASE_URL, POSTGRES_URL

EVENTS_PER_PROCESS = 500

# Each writer opens its own engine and starts all its record() calls at once, after a shared start time.
WRITER = """
import asyncio, sys, time
from portal.audit.recorder import Actor, record
from portal.db import create_engine, create_sessionmaker

async def main(url, count, start_at):
    engine = create_engine(url, pool_size=10, max_overflow=10)
    sessions = create_sessionmaker(engine)
    who = Actor(actor="system", request_id=sys.argv[4])

    async def one(number):
        async with sessions() as db, db.begin():
            await record(db, who, "export.created", details={"number": number})

    await asyncio.sleep(max(0.0, start_at - time.time()))
    await asyncio.gather(*(one(number) for number in range(count)))
    await engine.dispose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


@pytest.mark.load
@pytest.mark.skipif(POSTGRES_URL is None, reason="needs PORTAL_TEST_DATABASE_URL (PostgreSQL)")
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_gap_free(database_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_PUBLIC_URL": BASE_URL,
        }
    )
    # Creates the schema, the key file and the first event.
    asyncio.run(_check_log(settings, expected=None))

    start_at = time.time() + 3
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                database_url,
                str(EVENTS_PER_PROCESS),
                str(start_at),
                f"writer-{number}",
            ],
            cwd=Path(__file__).resolve().parents[2],
        )
        for number in (1, 2)
    ]
    for writer in writers:
        assert writer.wait(timeout=180) == 0

    asyncio.run(_check_log(settings, expected=2 * EVENTS_PER_PROCESS))


async def _check_log(settings: Settings, expected: int | None) -> None:
    portal = await start_portal(settings, pdf_workers=1)
    try:
        async with portal.transaction() as db:
            count, first, last = (
                await db.execute(select(func.count(), func.min(AccessEvent.seq), func.max(AccessEvent.seq)))
            ).one()
            writers = await db.scalar(select(func.count()).where(AccessEvent.request_id.like("writer-%")))
        assert first == 1
        assert last == count  # seq 1..N with no gap and no repeat (seq is the primary key)
        if expected is not None:
            assert writers == expected

        await make_checkpoint(portal)
        report = await verify_database(portal)
        assert report.ok, report.first_failure
    finally:
        await portal.close()
