"""Direct reads of the shared PostgreSQL database: event counts, counters and storage invariants."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg

from tests.load.servers import plain_postgres_url


def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(plain_postgres_url(url)) as connection:
        return connection.execute(sql, params).fetchall()  # type: ignore[arg-type]


def event_counts(url: str) -> Counter[str]:
    """Return the number of access-log events per event type."""
    return Counter(
        {
            event_type: count
            for event_type, count in fetch(
                url, "SELECT event_type, count(*) FROM access_event GROUP BY event_type"
            )
        }
    )


def event_hashes(url: str) -> dict[int, bytes]:
    """Return every event's sequence number with its leaf hash."""
    return {seq: bytes(leaf) for seq, leaf in fetch(url, "SELECT seq, leaf_hash FROM access_event")}


def sequence_gaps(url: str) -> list[int]:
    """Return the sequence numbers missing from 1..max(seq), an empty list when the log is gap-free."""
    present = {row[0] for row in fetch(url, "SELECT seq FROM access_event")}
    return sorted(set(range(1, max(present, default=0) + 1)) - present)


def counter_mismatches(url: str) -> list[tuple[Any, ...]]:
    """Return shares whose redemption and download counters differ from their access-log events."""
    return fetch(
        url,
        """
        SELECT s.reference, s.redemptions, s.downloads_started, s.downloads_completed,
               count(*) FILTER (WHERE e.event_type = 'code.redeemed'),
               count(*) FILTER (WHERE e.event_type = 'access.download.started'),
               count(*) FILTER (WHERE e.event_type = 'access.download.completed')
        FROM share s LEFT JOIN access_event e ON e.share_id = s.id::text
        GROUP BY s.id
        HAVING s.redemptions <> count(*) FILTER (WHERE e.event_type = 'code.redeemed')
            OR s.downloads_started <> count(*) FILTER (WHERE e.event_type = 'access.download.started')
            OR s.downloads_completed <> count(*) FILTER (WHERE e.event_type = 'access.download.completed')
        """,
    )


def half_made_shares(url: str) -> list[str]:
    """Return references of shares whose copy has no blob row, no data key or no stored bytes."""
    rows = fetch(
        url,
        """
        SELECT s.reference FROM share s
        WHERE s.copy_blob_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM blob b WHERE b.id = s.copy_blob_id)
           OR NOT EXISTS (SELECT 1 FROM data_key k WHERE k.blob_id = s.copy_blob_id)
           OR NOT EXISTS (SELECT 1 FROM blob_chunk c WHERE c.blob_id = s.copy_blob_id AND c.seq = 0)
        """,
    )
    return [row[0] for row in rows]


def blobs_without_bytes(url: str) -> list[str]:
    """Return ids of ``blob`` rows that have no data key or no stored chunks."""
    rows = fetch(
        url,
        """
        SELECT b.id FROM blob b
        WHERE NOT EXISTS (SELECT 1 FROM data_key k WHERE k.blob_id = b.id)
           OR NOT EXISTS (SELECT 1 FROM blob_chunk c WHERE c.blob_id = b.id AND c.seq = 0)
        """,
    )
    return [row[0] for row in rows]


def orphan_chunk_blobs(url: str) -> set[str]:
    """Return ids of blobs stored in ``blob_chunk`` that have no ``blob`` row."""
    rows = fetch(
        url,
        "SELECT DISTINCT c.blob_id FROM blob_chunk c"
        " WHERE NOT EXISTS (SELECT 1 FROM blob b WHERE b.id = c.blob_id)",
    )
    return {row[0] for row in rows}
