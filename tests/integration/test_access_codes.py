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
from tests.helpers import issue_share, portal_of, redeem


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

    unknown = codes.display(codes.generate_code())
    answers = {
        "wrong": await redeem(client, wrong_code_for(share["access_code"])),
        "unknown": await redeem(client, unknown),
        "expired": await redeem(client, expired["access_code"]),
        "revoked": await redeem(client, revoked["access_code"]),
        "spent": await redeem(client, spent["access_code"]),
    }

    bodies = {}
    for name, answer in answers.items():
        assert answer.status_code == 400, name
        # The CSRF token differs per form; everything else must be the same.
        bodies[name] = answer.text.replace(csrf_from(answer.text), "TOKEN")
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
    async with portal_of(app).transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None
    assert row.failed_attempts == 0


async def test_fifth_failure_locks_share(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    for _ in range(5):
        assert (await redeem(client, wrong_code_for(share["access_code"]))).status_code == 400

    locked = await redeem(client, share["access_code"])
    assert locked.status_code == 400
    assert "This code cannot be used" in locked.text

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
        answer = await client.post("/access", data={"code": share["access_code"], "_csrf_token": token}, follow_redirects=False)
        return answer.status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(50)))
    assert statuses.count(303) == 1, statuses
    assert statuses.count(400) == 49

    types = await event_types(app)
    assert types.count("code.redeemed") == 1


async def test_redemption_replaces_planted_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    planted = "planted-session-id-chosen-by-an-attacker-000000000"
    client.cookies.set(RECIPIENT_COOKIE, planted, domain=BASE_URL.split("//")[1])

    page = await client.get("/access")
    answer = await client.post(
        "/access", data={"code": share["access_code"], "_csrf_token": csrf_from(page.text)}, follow_redirects=False
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
