"""Two portal processes sharing one PostgreSQL database under concurrent uploads, shares and downloads."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.load.conftest import requires_postgres
from tests.load.database import counter_mismatches, event_counts, fetch, sequence_gaps
from tests.load.documents import photo_report
from tests.load.recipient import Redemption, download, redeem
from tests.load.servers import Deployment, PortalServer, client_address

pytestmark = [pytest.mark.load, requires_postgres]

DOCUMENTS = 6
SHARES_PER_DOCUMENT = 2
REDEMPTIONS_PER_SHARE = 4  # concurrent tries of the right code; the patient profile allows one
DOWNLOADS_PER_SESSION = 4  # concurrent tries; the patient profile allows three per share
PATIENT_MAX_DOWNLOADS = 3
PHASE_TIMEOUT_SECONDS = 90
# More concurrent share creations on one process than its database connection pool holds (5 + 10 overflow).
BURST_SHARES = 24


async def _upload(http: httpx.AsyncClient, server: PortalServer, headers: dict[str, str], seed: int) -> str:
    answer = await http.post(
        server.url + "/api/v1/documents",
        headers=headers,
        files={"file": ("report.pdf", photo_report(1_000_000, seed=seed), "application/pdf")},
        data={"title": f"Progress report {seed}", "patient_ref": f"PAT-{seed:04d}"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def _share(
    http: httpx.AsyncClient, server: PortalServer, headers: dict[str, str], document_id: str
) -> str:
    answer = await http.post(
        server.url + "/api/v1/shares",
        headers=headers,
        json={
            "document_ids": [document_id],
            "profile": "patient",
            "recipient_name": "Zoë Łukasiewicz",
            "purpose": "Follow-up after treatment",
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["access_code"])


async def test_two_processes_exact_counts(deployment: Deployment, http: httpx.AsyncClient) -> None:
    servers = [deployment.server("a"), deployment.server("b")]
    for server in servers:
        server.start()
    headers = deployment.clinician_token("clinician@riverside.test")
    baseline = event_counts(deployment.database_url)

    def server_for(index: int) -> PortalServer:
        return servers[index % 2]

    async with asyncio.timeout(PHASE_TIMEOUT_SECONDS):
        document_ids = await asyncio.gather(
            *(_upload(http, server_for(index), headers, seed=index + 1) for index in range(DOCUMENTS))
        )
        targets = [document_id for document_id in document_ids for _copy in range(SHARES_PER_DOCUMENT)]
        codes = await asyncio.gather(
            *(
                _share(http, server_for(index), headers, document_id)
                for index, document_id in enumerate(targets)
            )
        )

        # Every code is tried several times at once, through both processes, each try from its own address.
        attempts = [(code, server_for(attempt)) for code in codes for attempt in range(REDEMPTIONS_PER_SHARE)]
        redemptions: list[Redemption] = await asyncio.gather(
            *(
                redeem(http, server.url, code, forwarded_for=client_address(index))
                for index, (code, server) in enumerate(attempts)
            )
        )

        sessions = [result.session_cookie for result in redemptions if result.status == 303]
        downloads = await asyncio.gather(
            *(
                download(http, server_for(attempt).url, session)
                for session in sessions
                if session is not None
                for attempt in range(DOWNLOADS_PER_SESSION)
            )
        )

    share_count = DOCUMENTS * SHARES_PER_DOCUMENT
    assert Counter(result.status for result in redemptions) == {
        303: share_count,
        400: share_count * (REDEMPTIONS_PER_SHARE - 1),
    }
    winners_per_code = Counter(
        code for (code, _server), result in zip(attempts, redemptions, strict=True) if result.status == 303
    )
    assert sorted(winners_per_code.values()) == [1] * share_count

    completed = [body for status, body in downloads if status == 200]
    refused = [status for status, _body in downloads if status != 200]
    assert len(completed) == share_count * PATIENT_MAX_DOWNLOADS
    assert refused == [410] * share_count * (DOWNLOADS_PER_SESSION - PATIENT_MAX_DOWNLOADS)
    assert all(body.startswith(b"%PDF-") for body in completed)

    url = deployment.database_url
    # The server records "completed" right after the body's last byte leaves it, while the client may
    # already be done reading (it knows the length); allow the last few records a bounded moment to commit.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        added = event_counts(url) - baseline
        finished = added["access.download.completed"] + added["access.download.aborted"]
        if finished >= added["access.download.started"]:
            break
        await asyncio.sleep(0.2)
    added = event_counts(url) - baseline
    assert added == {
        "document.uploaded": DOCUMENTS,
        "share.created": share_count,
        "code.redeemed": share_count,
        "code.failed": share_count * (REDEMPTIONS_PER_SHARE - 1),
        "access.download.started": share_count * PATIENT_MAX_DOWNLOADS,
        "access.download.completed": share_count * PATIENT_MAX_DOWNLOADS,
    }
    failure_reasons = fetch(url, "SELECT details FROM access_event WHERE event_type = 'code.failed'")
    assert all('"reason":"used"' in details for (details,) in failure_reasons)

    assert sequence_gaps(url) == []
    assert counter_mismatches(url) == []
    totals = fetch(
        url, "SELECT sum(redemptions), sum(downloads_started), sum(downloads_completed) FROM share"
    )
    assert totals == [(share_count, share_count * PATIENT_MAX_DOWNLOADS, share_count * PATIENT_MAX_DOWNLOADS)]

    # The log both processes wrote verifies against a checkpoint signed now.
    deployment.cli("audit", "checkpoint")
    report = deployment.cli("audit", "verify", "--database")
    assert "failed" not in report.lower(), report


async def test_share_burst_one_process(deployment: Deployment, http: httpx.AsyncClient) -> None:
    server = deployment.server("a")
    server.start()
    headers = deployment.clinician_token("clinician@riverside.test")
    document_id = await _upload(http, server, headers, seed=1)

    async with asyncio.timeout(PHASE_TIMEOUT_SECONDS):
        codes = await asyncio.gather(
            *(_share(http, server, headers, document_id) for _index in range(BURST_SHARES))
        )

    assert len(set(codes)) == BURST_SHARES
    assert event_counts(deployment.database_url)["share.created"] == BURST_SHARES
