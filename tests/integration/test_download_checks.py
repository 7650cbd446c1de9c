"""The checks before a download: session, share state and limit, with the rows and events they leave.

On PostgreSQL these run as batches (``portal.access.batched``), on SQLite through ``AsyncSession``.
"""

from __future__ import annotations

import datetime as dt

import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from portal.models import AccessEvent, AuthSession, Share, utcnow
from portal.security.sessions import RECIPIENT_COOKIE, STAFF_COOKIE
from tests.helpers import CLINICIAN, add_staff, issue_share, portal_of, redeem, sign_in

SESSION_ENDED = "Your session has ended"
REPORT_GONE = "This report is no longer available."


def later(minutes: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


async def _redeemed(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, shared = await issue_share(app, client)
    assert (await redeem(client, shared["access_code"])).status_code == 200


async def _download_events(app: Litestar) -> list[str]:
    async with portal_of(app).transaction() as db:
        types = (await db.scalars(select(AccessEvent.event_type))).all()
    return [event_type for event_type in types if event_type.startswith("access.download.")]


async def _downloads_started(app: Litestar) -> int:
    async with portal_of(app).transaction() as db:
        return int(await db.scalar(select(Share.downloads_started)) or 0)


async def test_download_records_rows_and_events(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)

    answer = await client.get("/access/download")

    assert answer.status_code == 200
    assert answer.content.startswith(b"%PDF-")
    async with portal_of(app).transaction() as db:
        share = (await db.scalars(select(Share))).one()
        events = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type.like("access.download.%")))
        ).all()
    assert (share.downloads_started, share.downloads_completed) == (1, 1)
    assert [event.event_type for event in events] == ["access.download.started", "access.download.completed"]
    assert {event.actor for event in events} == {f"recipient:{share.id}"}
    assert {event.share_id for event in events} == {str(share.id)}
    assert {event.purpose for event in events} == {share.purpose}
    assert events[1].details == '{"bytes":' + str(len(answer.content)) + "}"


async def test_revoked_share_refuses_download(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)
    async with portal_of(app).transaction() as db:
        # Revocation also ends the sessions, so this is the moment in between.
        await db.execute(update(Share).values(revoked_at=utcnow()))

    answer = await client.get("/access/download")

    assert answer.status_code == 410
    assert REPORT_GONE in answer.text
    assert await _download_events(app) == []
    assert await _downloads_started(app) == 0


async def test_expired_share_refuses_download(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)
    async with portal_of(app).transaction() as db:
        await db.execute(update(Share).values(expires_at=utcnow() - dt.timedelta(seconds=1)))

    answer = await client.get("/access/download")

    assert answer.status_code == 410
    assert REPORT_GONE in answer.text
    assert await _download_events(app) == []


async def test_idle_session_refuses_download(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)

    with time_machine.travel(later(16), tick=True):
        answer = await client.get("/access/download")

    assert answer.status_code == 410
    assert SESSION_ENDED in answer.text
    assert await _download_events(app) == []
    assert await _downloads_started(app) == 0


async def test_download_keeps_session_alive(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)

    # The recipient idle limit is 15 minutes, so the second download works only if the first one
    # wrote the session's last activity.
    with time_machine.travel(later(10), tick=True):
        assert (await client.get("/access/download")).status_code == 200
    with time_machine.travel(later(10 + 14), tick=True):
        assert (await client.get("/access/download")).status_code == 200

    async with portal_of(app).transaction() as db:
        session = (await db.scalars(select(AuthSession).where(AuthSession.kind == "recipient"))).one()
    assert session.last_seen_at > session.created_at + dt.timedelta(minutes=20)


async def test_staff_session_is_not_recipient(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    staff_session = client.cookies.get(STAFF_COOKIE)
    assert staff_session
    client.cookies.set(RECIPIENT_COOKIE, staff_session)

    answer = await client.get("/access/download")

    assert answer.status_code == 410
    assert SESSION_ENDED in answer.text
    assert await _download_events(app) == []


async def test_unknown_session_refuses_download(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await _redeemed(app, client)
    client.cookies.set(RECIPIENT_COOKIE, "x" * 43)

    answer = await client.get("/access/download")

    assert answer.status_code == 410
    assert SESSION_ENDED in answer.text
    assert await _downloads_started(app) == 0
