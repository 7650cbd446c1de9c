"""SIGKILL of a portal process in the middle of share creation and of a download, then a restart.

After each crash the shared database must hold no half-made share, no blob row without its bytes or key, a
gap-free access log that still contains every event committed before the crash, and share counters that
match the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from tests.load.conftest import requires_postgres
from tests.load.database import (
    blobs_without_bytes,
    counter_mismatches,
    event_counts,
    event_hashes,
    fetch,
    half_made_shares,
    orphan_chunk_blobs,
    sequence_gaps,
)
from tests.load.documents import photo_report
from tests.load.recipient import ACCESS_COOKIE, download, redeem
from tests.load.servers import Deployment, PortalServer, client_address

pytestmark = [pytest.mark.load, requires_postgres]

# About 24 MB of photos and 300 pages of notes: preparing the copy takes about 1.5 s on a 2-core machine,
# and the copy is larger than the loopback socket buffers, so a paused reader stalls the server mid-stream.
REPORT_BYTES = 24_000_000
NOTE_PAGES = 300
KILL_AFTER_SECONDS = 0.4
ORPHAN_POLL_SECONDS = 0.002
ORPHAN_WAIT_SECONDS = 30.0
SHARE_BODY = {
    "profile": "patient",
    "recipient_name": "Zoë Łukasiewicz",
    "purpose": "Follow-up after treatment",
}


async def _upload(
    http: httpx.AsyncClient, server: PortalServer, headers: dict[str, str], **report: int
) -> str:
    answer = await http.post(
        server.url + "/api/v1/documents",
        headers=headers,
        files={"file": ("report.pdf", photo_report(REPORT_BYTES, **report), "application/pdf")},
        data={"title": "Wound healing progress", "patient_ref": "PAT-0042"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def _share(
    http: httpx.AsyncClient, server: PortalServer, headers: dict[str, str], document_id: str
) -> str:
    answer = await http.post(
        server.url + "/api/v1/shares", headers=headers, json={"document_ids": [document_id], **SHARE_BODY}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["access_code"])


def _assert_consistent(url: str, events_before: dict[int, bytes]) -> None:
    assert half_made_shares(url) == []
    assert blobs_without_bytes(url) == []
    assert sequence_gaps(url) == []
    assert counter_mismatches(url) == []
    events_after = event_hashes(url)
    assert {seq: events_after.get(seq) for seq in events_before} == events_before


async def _kill_when_copy_is_stored(
    server: PortalServer, url: str, request: asyncio.Task[httpx.Response]
) -> set[str]:
    """Kill ``server`` as soon as the copy's bytes are in ``blob_chunk`` but its ``blob`` row is not.

    Returns the orphan blob ids seen at the kill; empty when the share committed before the poll saw it.
    """
    known = orphan_chunk_blobs(url)
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while time.monotonic() < deadline and not request.done():
        fresh = orphan_chunk_blobs(url) - known
        if fresh:
            server.kill()
            return fresh
        await asyncio.sleep(ORPHAN_POLL_SECONDS)
    server.kill()
    return set()


async def test_kill_during_share_creation(deployment: Deployment, http: httpx.AsyncClient) -> None:
    killed, survivor = deployment.server("a"), deployment.server("b")
    killed.start()
    survivor.start()
    headers = deployment.clinician_token("clinician@riverside.test")
    document_id = await _upload(http, survivor, headers, text_pages=NOTE_PAGES)
    url = deployment.database_url
    shares_before = fetch(url, "SELECT count(*) FROM share")[0][0]

    # First crash: while the PDF worker prepares the copy.
    events_before = event_hashes(url)
    request = asyncio.create_task(
        http.post(
            killed.url + "/api/v1/shares", headers=headers, json={"document_ids": [document_id], **SHARE_BODY}
        )
    )
    await asyncio.sleep(KILL_AFTER_SECONDS)
    assert not request.done(), "the share was created before the kill; make the report larger"
    killed.kill()
    with pytest.raises(httpx.TransportError):
        await request
    _assert_consistent(url, events_before)
    assert fetch(url, "SELECT count(*) FROM share")[0][0] == shares_before

    # Second crash: after the encrypted copy is written to blob_chunk, before the share row commits.
    killed.start()
    events_before = event_hashes(url)
    request = asyncio.create_task(
        http.post(
            killed.url + "/api/v1/shares", headers=headers, json={"document_ids": [document_id], **SHARE_BODY}
        )
    )
    orphans_at_kill = await _kill_when_copy_is_stored(killed, url, request)
    with contextlib.suppress(httpx.TransportError):
        await request
    _assert_consistent(url, events_before)

    # NOTE: an orphan left here stays in blob_chunk: the purge counts database-store orphans but cannot
    # delete them, because blob_chunk keeps no write time to tell them from a share about to commit.
    orphans = orphan_chunk_blobs(url)
    assert orphans <= orphans_at_kill
    keys = fetch(url, "SELECT count(*) FROM data_key WHERE blob_id = ANY(%s)", (list(orphans),))
    assert keys == [(0,)]

    # The other process kept serving, and the restarted one works on the same database.
    code = await _share(http, survivor, headers, document_id)
    killed.start()
    session = await redeem(http, killed.url, code, forwarded_for=client_address(1))
    assert session.status == 303
    assert session.session_cookie is not None
    status, body = await download(http, killed.url, session.session_cookie)
    assert status == 200
    assert body.startswith(b"%PDF-")
    _assert_consistent(url, events_before)


async def test_kill_during_download(deployment: Deployment, http: httpx.AsyncClient) -> None:
    killed, survivor = deployment.server("a"), deployment.server("b")
    killed.start()
    survivor.start()
    headers = deployment.clinician_token("clinician@riverside.test")
    document_id = await _upload(http, survivor, headers)
    code = await _share(http, survivor, headers, document_id)
    session = await redeem(http, killed.url, code, forwarded_for=client_address(1))
    assert session.status == 303
    assert session.session_cookie is not None
    url = deployment.database_url

    # A slow reader: take the first chunk, then stop reading while the server still has most of the copy.
    cookie = {"Cookie": f"{ACCESS_COOKIE}={session.session_cookie}"}
    async with http.stream("GET", killed.url + "/access/download", headers=cookie) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        first = await anext(chunks)
        assert first.startswith(b"%PDF-")
        await asyncio.sleep(0.5)
        events_before = event_hashes(url)
        assert event_counts(url)["access.download.started"] == 1

        killed.kill()
        with pytest.raises(httpx.TransportError):
            async for _chunk in chunks:
                pass

    _assert_consistent(url, events_before)
    counts = event_counts(url)
    assert counts["access.download.started"] == 1
    assert counts["access.download.completed"] == 0
    # The killed process could not record the abort: a started download without an end is the crash's trace.
    assert counts["access.download.aborted"] == 0
    assert fetch(url, "SELECT downloads_started, downloads_completed FROM share") == [(1, 0)]

    # The session lives in the database, so the recipient continues on the other process and after restart.
    status, body = await download(http, survivor.url, session.session_cookie)
    assert status == 200
    killed.start()
    status_again, body_again = await download(http, killed.url, session.session_cookie)
    assert status_again == 200
    assert body_again == body
    assert len(body) > REPORT_BYTES

    _assert_consistent(url, events_before)
    assert fetch(url, "SELECT downloads_started, downloads_completed FROM share") == [(3, 2)]
    assert event_counts(url)["access.download.completed"] == 2
