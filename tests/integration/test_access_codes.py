"""Redeeming access codes: single use under concurrency, identical refusals, locking, fresh sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from portal.models import AccessEvent, Share
from portal.security import codes
from portal.security.sessions import RECIPIENT_COOKIE
from tests.conftest import BASE_URL, csrf_from
from tests.helpers import (
    CLINICIAN,
    create_share,
    issue_share,
    portal_of,
    redeem,
    simple_pdf,
    token_for,
    upload_pdf,
)


def wrong_code_for(code: str) -> str:
    """A well-formed code with the same locator and a different secret."""
    canonical = codes.normalise(code)
    return codes.display(codes.with_locator(codes.locator_of(canonical)))


async def event_types(app: Litestar) -> list[str]:
    async with portal_of(app).transaction() as db:
        return list((await db.scalars(select(AccessEvent.event_type).order_by(AccessEvent.seq))).all())


async def test_redeem_once_then_refused(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    first = await redeem(client, share["access_code"])
    assert first.status_code == 200
    assert "Your report" in first.text

    second = await redeem(client, share["access_code"])
    assert second.status_code == 400
    assert "This code cannot be used" in second.text


async def test_get_never_spends_code(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    for _ in range(3):
        landing = await client.get("/access", params={"code": share["access_code"]})
        assert landing.status_code == 200
    async with portal_of(app).transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None
    assert row.redemptions == 0
    assert (await redeem(client, share["access_code"])).status_code == 200


async def test_refusals_look_identical(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, share = await issue_share(app, client)
    _h2, expired = await issue_share(app, client)
    _h3, revoked = await issue_share(app, client)
    _h4, spent = await issue_share(app, client)

    portal = portal_of(app)
    async with portal.transaction() as db:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        await db.execute(update(Share).where(Share.id == uuid.UUID(expired["id"])).values(expires_at=past))
    revoke = await client.post(f"/api/v1/shares/{revoked['id']}/revoke", headers=headers)
    assert revoke.status_code == 200
    assert (await redeem(client, spent["access_code"])).status_code == 200

    entered = {
        "wrong": wrong_code_for(share["access_code"]),
        "unknown": codes.display(codes.generate_code()),
        "expired": expired["access_code"],
        "revoked": revoked["access_code"],
        "spent": spent["access_code"],
    }
    bodies = {}
    for name, code in entered.items():
        answer = await redeem(client, code)
        assert answer.status_code == 400, name
        assert f'value="{code}"' in answer.text, name
        # The CSRF token and the typed code differ per form; everything else must be the same.
        bodies[name] = answer.text.replace(csrf_from(answer.text), "TOKEN").replace(code, "CODE")
    assert len(set(bodies.values())) == 1, sorted(bodies)


async def test_mistyped_code_spends_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    code = share["access_code"]
    position = 7
    replacement = "2" if code[position] != "2" else "3"
    mistyped = code[:position] + replacement + code[position + 1 :]

    answer = await redeem(client, mistyped)
    assert answer.status_code == 400
    assert "No attempt was used up" in answer.text
    assert f'value="{mistyped}"' in answer.text
    async with portal_of(app).transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None
    assert row.failed_attempts == 0


async def test_empty_code_asks_for_it(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    answer = await redeem(client, "   ")
    assert answer.status_code == 400
    assert "Enter the access code from the letter or slip" in answer.text
    assert "not quite right" not in answer.text


async def test_fifth_failure_locks_share(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    for _ in range(5):
        assert (await redeem(client, wrong_code_for(share["access_code"]))).status_code == 400

    locked = await redeem(client, share["access_code"])
    assert locked.status_code == 400
    assert "This code cannot be used" in locked.text

    for _ in range(2):
        assert (await redeem(client, wrong_code_for(share["access_code"]))).status_code == 400

    types = await event_types(app)
    assert types.count("code.locked") == 1
    status = await client.get(f"/api/v1/shares/{share['id']}", headers=_headers)
    assert status.json()["status"] == "locked"
    assert status.json()["failed_attempts"] == 5


async def test_concurrent_redemptions_one_winner(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    page = await client.get("/access")
    token = csrf_from(page.text)

    async def attempt() -> int:
        answer = await client.post(
            "/access", data={"code": share["access_code"], "_csrf_token": token}, follow_redirects=False
        )
        return answer.status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(100)))
    assert statuses.count(303) == 1, statuses
    assert statuses.count(400) == 99

    types = await event_types(app)
    assert types.count("code.redeemed") == 1


async def test_redemption_replaces_planted_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    planted = "planted-session-id-chosen-by-an-attacker-000000000"
    client.cookies.set(RECIPIENT_COOKIE, planted, domain=BASE_URL.split("//")[1])

    page = await client.get("/access")
    answer = await client.post(
        "/access",
        data={"code": share["access_code"], "_csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    issued = answer.cookies.get(RECIPIENT_COOKIE)
    assert issued
    assert issued != planted
    assert len(issued) >= 43  # 32 random bytes, URL-safe base64

    host = BASE_URL.split("//")[1]
    client.cookies.clear()
    client.cookies.set(RECIPIENT_COOKIE, issued, domain=host)
    assert (await client.get("/access/share")).status_code == 200

    client.cookies.clear()
    client.cookies.set(RECIPIENT_COOKIE, planted, domain=host)
    assert (await client.get("/access/share")).status_code == 410


async def test_code_only_opens_own_share(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, first = await issue_share(app, client, recipient_name="First Recipient")
    _headers, second = await issue_share(app, client, recipient_name="Second Recipient")

    # The first code's secret under the second share's locator is a wrong code for the second share.
    first_code = codes.normalise(first["access_code"])
    second_locator = codes.locator_of(codes.normalise(second["access_code"]))
    body = second_locator + first_code[codes.LOCATOR_LENGTH : -1]
    mixed = body + codes.check_character(body)
    assert (await redeem(client, mixed)).status_code == 400

    page = await redeem(client, first["access_code"])
    assert page.status_code == 200
    assert "First Recipient" in page.text
    assert "Second Recipient" not in page.text


async def test_unknown_and_wrong_take_similar_time(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    import statistics
    import time

    _headers, share = await issue_share(app, client)
    token = csrf_from((await client.get("/access")).text)

    async def timed(code: str) -> float:
        started = time.perf_counter()
        answer = await client.post("/access", data={"code": code, "_csrf_token": token})
        elapsed = time.perf_counter() - started
        assert answer.status_code == 400
        return elapsed

    # Four wrong guesses would lock the share at five, so each wrong guess gets a fresh share of its own.
    wrong_times, unknown_times = [], []
    for _ in range(4):
        wrong_times.append(await timed(wrong_code_for(share["access_code"])))
        unknown_times.append(await timed(codes.display(codes.generate_code())))
    for index in range(12):
        _h, spare = await issue_share(app, client)
        # Alternate which kind goes first after making a share, so its after-effects fall on both alike.
        if index % 2:
            unknown_times.append(await timed(codes.display(codes.generate_code())))
            wrong_times.append(await timed(wrong_code_for(spare["access_code"])))
        else:
            wrong_times.append(await timed(wrong_code_for(spare["access_code"])))
            unknown_times.append(await timed(codes.display(codes.generate_code())))

    difference_ms = abs(statistics.median(wrong_times) - statistics.median(unknown_times)) * 1000
    assert difference_ms < 5, (
        f"median wrong {statistics.median(wrong_times):.4f}s, unknown {statistics.median(unknown_times):.4f}s"
    )


HOSTILE_PURPOSE = "O'Brien \\ %s %(x)s $$ -- ;DROP TABLE share; 'Zoë' \"quoted\""


async def test_redemption_stores_text_exactly(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    # On PostgreSQL a redemption's statements are quoted client-side; quotes, backslashes and parameter
    # markers in a value must arrive as written, on every database.
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    shared = await create_share(client, headers, [uploaded.json()["id"]], purpose=HOSTILE_PURPOSE)
    assert shared.status_code == 201, shared.text
    assert (await redeem(client, shared.json()["access_code"])).status_code == 200

    async with portal_of(app).transaction() as db:
        purposes = (
            await db.scalars(select(AccessEvent.purpose).where(AccessEvent.event_type == "code.redeemed"))
        ).all()
        share = await db.get(Share, uuid.UUID(shared.json()["id"]))
    assert purposes == [HOSTILE_PURPOSE]
    assert share is not None and share.redemptions == 1
