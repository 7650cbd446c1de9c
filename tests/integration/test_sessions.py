"""Recipient and staff sessions: cookie flags, idle and absolute limits, revocation, demotion, logout."""

from __future__ import annotations

import datetime as dt
import uuid

import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from portal.models import StaffUser
from portal.security.sessions import RECIPIENT_COOKIE
from tests.conftest import csrf_from
from tests.helpers import CLINICIAN, add_staff, issue_share, portal_of, redeem, sign_in, token_for


def later(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


async def test_recipient_cookie_flags(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    page = await client.get("/access")
    answer = await client.post(
        "/access",
        data={"code": share["access_code"], "_csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    (cookie,) = [
        header
        for header in answer.headers.get_list("set-cookie")
        if header.startswith(f"{RECIPIENT_COOKIE}=")
    ]
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag in cookie
    assert "Domain=" not in cookie
    assert "Max-Age" not in cookie  # a browser-session cookie; the server enforces the limits
    assert len(answer.cookies[RECIPIENT_COOKIE]) >= 43


async def test_recipient_idle_timeout(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    assert (await redeem(client, share["access_code"])).status_code == 200

    with time_machine.travel(later(14), tick=True):
        assert (await client.get("/access/share")).status_code == 200
    with time_machine.travel(later(14 + 16), tick=True):
        assert (await client.get("/access/share")).status_code == 410


async def test_recipient_absolute_timeout(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    assert (await redeem(client, share["access_code"])).status_code == 200

    # Active every 10 minutes, so the idle limit never applies; the 60-minute absolute limit does.
    for minutes in (10, 20, 30, 40, 50):
        with time_machine.travel(later(minutes), tick=True):
            assert (await client.get("/access/share")).status_code == 200, minutes
    with time_machine.travel(later(61), tick=True):
        assert (await client.get("/access/share")).status_code == 410


async def test_staff_idle_and_absolute_timeouts(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    with time_machine.travel(later(29), tick=True):
        assert (await client.get("/staff")).status_code == 200
    with time_machine.travel(later(29 + 31), tick=True):
        assert (await client.get("/staff", follow_redirects=False)).status_code == 303

    await sign_in(client, CLINICIAN)
    for hours in range(1, 12):
        with time_machine.travel(later(hours * 60 - 35), tick=True):
            await client.get("/staff")
    with time_machine.travel(later(12 * 60 + 1), tick=True):
        assert (await client.get("/staff", follow_redirects=False)).status_code == 303


async def test_revocation_ends_open_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, share = await issue_share(app, client)
    assert (await redeem(client, share["access_code"])).status_code == 200
    assert (await client.get("/access/share")).status_code == 200

    revoked = await client.post(f"/api/v1/shares/{share['id']}/revoke", headers=headers)
    assert revoked.status_code == 200
    assert (await client.get("/access/share")).status_code == 410
    assert (await client.get("/access/download")).status_code == 410


async def test_recipient_finish_ends_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    page = await redeem(client, share["access_code"])
    session_id = client.cookies.get(RECIPIENT_COOKIE)
    ended = await client.post(
        "/access/end", data={"_csrf_token": csrf_from(page.text)}, follow_redirects=False
    )
    assert ended.status_code == 303
    assert '"storage"' in ended.headers["clear-site-data"]
    closed = await client.get(ended.headers["location"])
    assert "You have closed your report on this device." in closed.text

    client.cookies.clear()
    client.cookies.set(RECIPIENT_COOKIE, session_id or "", domain="portal.test")
    assert (await client.get("/access/share")).status_code == 410


async def test_demotion_ends_session_and_token(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    assert (await client.get("/staff")).status_code == 200
    share_probe = await client.get(f"/api/v1/shares/{uuid.uuid4()}", headers=headers)
    assert share_probe.status_code == 404

    async with portal_of(app).transaction() as db:
        await db.execute(update(StaffUser).where(StaffUser.email == CLINICIAN).values(role="dpo"))

    assert (await client.get("/staff")).status_code == 403
    demoted = await client.get(f"/api/v1/shares/{uuid.uuid4()}", headers=headers)
    assert demoted.status_code == 403

    async with portal_of(app).transaction() as db:
        await db.execute(
            update(StaffUser).where(StaffUser.email == CLINICIAN).values(disabled_at=dt.datetime.now(dt.UTC))
        )
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 303
    disabled = await client.get("/api/v1/audit/events", headers=headers)
    assert disabled.status_code == 401
