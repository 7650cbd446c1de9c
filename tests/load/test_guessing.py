"""A bounded guessing loop against two portal processes: shares lock, nothing is redeemed, floods get 429."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter

import httpx
import pytest

from portal.security import codes
from tests.helpers import simple_pdf
from tests.load.conftest import requires_postgres
from tests.load.database import event_counts, fetch, sequence_gaps
from tests.load.recipient import redeem
from tests.load.servers import Deployment, PortalServer, client_address

pytestmark = [pytest.mark.load, requires_postgres]

SHARES = 50
GUESSES = 1_000
# Below the default throttle of 10 attempts per address per minute, so the per-share lock is what stops them.
GUESSES_PER_ADDRESS = 5
MAX_FAILED_ATTEMPTS = 5  # policies/security.toml [access_code] max_failed_attempts
ATTEMPTS_PER_ADDRESS_PER_MINUTE = 10  # policies/security.toml [access_code] attempts_per_ip_per_minute
FLOOD_REQUESTS = 30
CONCURRENCY = 16
SHARE_CONCURRENCY = 4
LOOP_TIMEOUT_SECONDS = 120


async def _create_shares(
    http: httpx.AsyncClient, servers: list[PortalServer], headers: dict[str, str], count: int
) -> list[str]:
    uploaded = await http.post(
        servers[0].url + "/api/v1/documents",
        headers=headers,
        files={"file": ("report.pdf", simple_pdf(2), "application/pdf")},
        data={"title": "Wound healing progress", "patient_ref": "PAT-0042"},
    )
    assert uploaded.status_code == 201, uploaded.text
    body = {
        "document_ids": [uploaded.json()["id"]],
        "profile": "patient",
        "recipient_name": "Zoë Łukasiewicz",
        "purpose": "Follow-up after treatment",
    }

    # A few at a time: this test is about guessing, and test_share_burst_one_process covers a burst.
    limit = asyncio.Semaphore(SHARE_CONCURRENCY)

    async def one(index: int) -> str:
        async with limit:
            answer = await http.post(servers[index % 2].url + "/api/v1/shares", headers=headers, json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["access_code"])

    return await asyncio.gather(*(one(index) for index in range(count)))


def _wrong_code(right_code: str) -> str:
    """Return a well-formed code for the same share (same locator, valid check character) that is wrong."""
    locator = codes.locator_of(codes.normalise(right_code))
    while True:
        guess = codes.with_locator(locator)
        if guess != codes.normalise(right_code):
            return guess


async def test_guesses_lock_every_share(deployment: Deployment, http: httpx.AsyncClient) -> None:
    servers = [deployment.server("a"), deployment.server("b")]
    for server in servers:
        server.start()
    headers = deployment.clinician_token("clinician@riverside.test")
    right_codes = await _create_shares(http, servers, headers, SHARES)
    baseline = event_counts(deployment.database_url)

    limit = asyncio.Semaphore(CONCURRENCY)

    async def guess(index: int) -> int:
        code = _wrong_code(right_codes[index % SHARES])
        async with limit:
            result = await redeem(
                http, servers[index % 2].url, code, forwarded_for=client_address(index // GUESSES_PER_ADDRESS)
            )
        return result.status

    started = time.monotonic()
    async with asyncio.timeout(LOOP_TIMEOUT_SECONDS):
        statuses = await asyncio.gather(*(guess(index) for index in range(GUESSES)))
    elapsed = time.monotonic() - started

    assert Counter(statuses) == {400: GUESSES}, f"{GUESSES} guesses in {elapsed:.1f} s"
    url = deployment.database_url
    added = event_counts(url) - baseline
    assert added["code.redeemed"] == 0
    assert added["code.failed"] == GUESSES
    assert added["code.locked"] == SHARES

    shares = fetch(url, "SELECT reference, failed_attempts, locked_at, redemptions FROM share")
    assert len(shares) == SHARES
    assert [row for row in shares if row[2] is None] == []
    assert [row for row in shares if row[3] != 0] == []
    # Counting stops at the lock: later guesses at a locked share are refused without raising the count.
    assert [row for row in shares if row[1] != MAX_FAILED_ATTEMPTS] == []

    # The right code no longer opens a locked share.
    right = await redeem(http, servers[0].url, right_codes[0], forwarded_for=client_address(GUESSES))
    assert right.status == 400
    assert sequence_gaps(url) == []


async def _wait_for_fresh_window(margin_seconds: float = 15.0) -> None:
    # The throttle counts in fixed one-minute windows, so the burst starts early in a window to stay in it.
    seconds = dt.datetime.now(dt.UTC).second
    if seconds > 60 - margin_seconds:
        await asyncio.sleep(60 - seconds + 0.5)


async def test_throttle_across_processes(deployment: Deployment, http: httpx.AsyncClient) -> None:
    servers = [deployment.server("a"), deployment.server("b")]
    for server in servers:
        server.start()
    unknown = codes.generate_code()
    flooder = client_address(0)

    await _wait_for_fresh_window()
    answers: list[tuple[str, int]] = []
    async with asyncio.timeout(LOOP_TIMEOUT_SECONDS):
        for index in range(FLOOD_REQUESTS):
            server = servers[index % 2]
            result = await redeem(http, server.url, unknown, forwarded_for=flooder)
            answers.append((server.name, result.status))

    assert [status for _name, status in answers[:ATTEMPTS_PER_ADDRESS_PER_MINUTE]] == [400] * 10
    assert [status for _name, status in answers[ATTEMPTS_PER_ADDRESS_PER_MINUTE:]] == [429] * 20
    assert {name for name, status in answers if status == 429} == {"a", "b"}

    # Another address is not affected by the flood.
    other = await redeem(http, servers[1].url, unknown, forwarded_for=client_address(1))
    assert other.status == 400
