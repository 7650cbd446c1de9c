"""Time breach-scoping queries and the streamed export on a large access log, on SQLite and PostgreSQL.

Builds a fresh portal database, inserts synthetic shares and events directly (bulk INSERT with leaf
hashes computed from the canonical bytes, so the log still verifies; the insert-only triggers allow
INSERT), then times:

- breach scope by IP prefix in a 30-day window (`portal.dpo.service.breach_scope`);
- breach scope by recipient name in a 30-day window (name -> share ids -> events);
- the first page of the DPO search for each;
- the export stream: `iterate_events` plus `jsonl_lines` over the first `--export-events` events.

Every timed query runs three times; the table shows the fastest and the slowest run.

Usage:
    .venv/bin/python bench/audit_breach.py [--events 1000000] [--shares 20000] [--export-events 200000]
        [--postgresql postgresql://postgres@127.0.0.1:5432/postgres]

Without --postgresql only SQLite runs. The PostgreSQL run creates and drops its own database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from sqlalchemy import func, insert, select

from portal.audit.canonical import canonical_event_bytes, details_json, format_time, parse_time
from portal.audit.exporters import jsonl_lines
from portal.audit.merkle import leaf_hash
from portal.audit.query import EventFilter, iterate_events, search
from portal.config import Settings
from portal.core import Portal, start_portal
from portal.dpo.service import breach_scope
from portal.models import AccessEvent, Share, StaffUser, utcnow

BATCH = 10_000
PREFIX_COUNT = 4_000
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
SPAN_DAYS = 365
EVENT_TYPES = (
    "code.redeemed",
    "access.viewed",
    "access.download.started",
    "access.download.completed",
    "code.failed",
)


def _event(seq: int, shares: list[str]) -> dict[str, Any]:
    # Deterministic spread: times over one year, a few thousand /24 prefixes, all shares.
    share_id = shares[(seq * 7919) % len(shares)]
    moment = START + dt.timedelta(seconds=(seq * 31_557) % (SPAN_DAYS * 86_400), microseconds=seq % 1_000_000)
    prefix_number = (seq * 104_729) % PREFIX_COUNT
    event_type = EVENT_TYPES[seq % len(EVENT_TYPES)]
    return {
        "seq": seq,
        "time": format_time(moment),
        "event_type": event_type,
        "outcome": "failure" if event_type == "code.failed" else "success",
        "actor": f"recipient:{share_id}",
        "share_id": share_id,
        "document_id": None,
        "patient_pseudonym": None,
        "purpose": "Follow-up after treatment",
        "ip_prefix": f"10.{prefix_number // 256}.{prefix_number % 256}.0/24",
        "user_agent_family": "Firefox",
        "request_id": f"{seq:016x}",
        "details": {"page": seq % 12} if event_type == "access.viewed" else {},
    }


def _row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        **event,
        "time": parse_time(event["time"]),
        "details": details_json(event["details"]),
        "leaf_hash": leaf_hash(canonical_event_bytes(event)),
    }


async def _insert_shares(portal: Portal, count: int) -> list[str]:
    async with portal.transaction() as db:
        # The account never signs in, so its password hash is a placeholder.
        email = f"bench-{secrets.token_hex(4)}@clinic.test"
        staff = StaffUser(email=email, role="clinician", password_hash="")
        db.add(staff)
        await db.flush()
        staff_id = staff.id

    ids = [str(uuid.uuid4()) for _ in range(count)]
    now = utcnow()
    rows = [
        {
            "id": uuid.UUID(share_id),
            "reference": f"B{number:09d}",
            "profile": "referrer",
            "recipient_name": f"Recipient {number:06d} Clinic",
            "purpose": "Referral",
            "created_by": staff_id,
            "created_at": now,
            "expires_at": now + dt.timedelta(days=14),
            "max_redemptions": 1,
            "allow_view": True,
            "allow_download": True,
            "max_downloads": 1,
            "code_locator": f"{number:08d}",
            "code_hash": "x",
        }
        for number, share_id in enumerate(ids)
    ]
    for start in range(0, len(rows), BATCH):
        async with portal.transaction() as db:
            await db.execute(insert(Share), rows[start : start + BATCH])
    return ids


async def _insert_events(portal: Portal, count: int, shares: list[str]) -> float:
    async with portal.transaction() as db:
        first = (await db.scalar(select(func.max(AccessEvent.seq))) or 0) + 1

    started = time.perf_counter()
    for start in range(first, first + count, BATCH):
        stop = min(start + BATCH, first + count)
        rows = [_row(_event(seq, shares)) for seq in range(start, stop)]
        async with portal.transaction() as db:
            await db.execute(insert(AccessEvent), rows)
    return time.perf_counter() - started


async def _timed(label: str, action: Any) -> tuple[str, float, float, Any]:
    durations = []
    result = None
    for _ in range(3):
        started = time.perf_counter()
        result = await action()
        durations.append(time.perf_counter() - started)
    return label, min(durations), max(durations), result


async def _export_rate(portal: Portal, limit: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    batch: list[dict[str, Any]] = []
    async for event in iterate_events(portal, EventFilter()):
        batch.append(event)
        if len(batch) == 500:
            for _line in jsonl_lines(batch):
                pass
            count += len(batch)
            batch = []
            if count >= limit:
                break
    return count, time.perf_counter() - started


async def run(database_url: str, data_dir: Path, args: argparse.Namespace) -> None:
    settings = Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(data_dir),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_PUBLIC_URL": "https://bench.test",
        }
    )
    portal = await start_portal(settings, pdf_workers=1)
    try:
        shares = await _insert_shares(portal, args.shares)
        insert_seconds = await _insert_events(portal, args.events, shares)
        rate = args.events / insert_seconds
        print(f"  inserted {args.events:,} events in {insert_seconds:.1f} s ({rate:,.0f}/s)")

        window = {"since": START + dt.timedelta(days=100), "until": START + dt.timedelta(days=130)}
        by_prefix = EventFilter(ip_prefix="10.3.7.0/24", **window)
        by_wide_prefix = EventFilter(ip_prefix="10.3.0.0/16", **window)
        by_recipient = EventFilter(recipient="Recipient 001234", **window)

        results = [
            await _timed("breach scope, IP /24 + 30 days", lambda: breach_scope(portal, by_prefix)),
            await _timed("breach scope, IP /16 + 30 days", lambda: breach_scope(portal, by_wide_prefix)),
            await _timed("breach scope, recipient + 30 days", lambda: breach_scope(portal, by_recipient)),
            await _timed("search page, IP /24 + 30 days", lambda: search(portal, by_prefix, None)),
            await _timed("search page, recipient + 30 days", lambda: search(portal, by_recipient, None)),
        ]
        for label, fastest, slowest, result in results:
            matched = result.events if hasattr(result, "events") else len(result)
            print(f"  {label:<36} {fastest:7.3f} s .. {slowest:7.3f} s   ({matched:,} events)")

        exported, seconds = await _export_rate(portal, args.export_events)
        rate = exported / seconds
        label = "export stream (iterate_events + JSONL)"
        print(f"  {label} {exported:,} events in {seconds:.1f} s ({rate:,.0f}/s)")
    finally:
        await portal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events to insert")
    parser.add_argument("--shares", type=int, default=20_000, help="synthetic shares the events belong to")
    parser.add_argument(
        "--export-events", type=int, default=200_000, help="events to stream for the export rate"
    )
    parser.add_argument("--postgresql", help="server URL to create a temporary database on")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        print("SQLite")
        asyncio.run(run(f"sqlite+aiosqlite:///{folder}/bench.db", Path(folder) / "sqlite", args))

        if args.postgresql:
            name = "portal_bench_" + secrets.token_hex(4)
            with psycopg.connect(args.postgresql, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            try:
                print("PostgreSQL")
                url = (
                    "postgresql+psycopg://"
                    + args.postgresql.split("://", 1)[1].rsplit("/", 1)[0]
                    + f"/{name}"
                )
                asyncio.run(run(url, Path(folder) / "postgresql", args))
            finally:
                with psycopg.connect(args.postgresql, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
