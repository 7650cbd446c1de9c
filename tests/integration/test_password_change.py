"""A signed-in staff member changes their own password: the current one first, the new one twice."""

from __future__ import annotations

import json
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.models import AccessEvent
from portal.security.sessions import STAFF_COOKIE
from tests.conftest import BASE_URL, PASSWORD, csrf_from
from tests.helpers import CLINICIAN, DPO, add_staff, portal_of, sign_in

NEW_PASSWORD = "lantern orchard violin meadow"
HOST = BASE_URL.split("//")[1]


async def _events(app: Litestar, event_type: str) -> list[dict[str, Any]]:
    async with portal_of(app).transaction() as db:
        rows = (await db.scalars(select(AccessEvent).where(AccessEvent.event_type == event_type))).all()
    return [{"outcome": row.outcome, "actor": row.actor, **json.loads(row.details)} for row in rows]


async def _signed_in(client: AsyncTestClient[Litestar], email: str) -> str:
    """Sign ``email`` in on a fresh cookie jar and return the session id."""
    client.cookies.clear()
    answer = await sign_in(client, email)
    assert answer.status_code == 303
    return str(answer.cookies.get(STAFF_COOKIE))


def _use(client: AsyncTestClient[Litestar], session: str) -> None:
    client.cookies.delete(STAFF_COOKIE)
    client.cookies.set(STAFF_COOKIE, session, domain=HOST)


async def _change(
    client: AsyncTestClient[Litestar], current: str, password: str, repeated: str | None = None
) -> Any:
    page = await client.get("/staff/password")
    assert page.status_code == 200
    fields = {
        "_csrf_token": csrf_from(page.text),
        "current_password": current,
        "password": password,
        "password_repeat": repeated if repeated is not None else password,
    }
    return await client.post("/staff/password", data=fields, follow_redirects=False)


async def test_change_own_password(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, DPO, "dpo")
    other_browser = await _signed_in(client, DPO)
    this_browser = await _signed_in(client, DPO)
    assert 'href="/staff/password"' in (await client.get("/dpo/events")).text

    changed = await _change(client, PASSWORD, NEW_PASSWORD)
    assert changed.status_code == 303
    assert changed.headers["location"] == "/staff/password?done=changed"
    fresh = changed.cookies.get(STAFF_COOKIE)
    assert fresh and fresh not in (this_browser, other_browser)
    page = await client.get(changed.headers["location"])
    assert 'data-testid="confirmation"' in page.text
    assert "Your password is changed." in page.text

    # This browser carries on with the fresh session id; the old ids are dead.
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 200
    _use(client, this_browser)
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 303
    _use(client, other_browser)
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 303

    client.cookies.clear()
    assert (await sign_in(client, DPO)).status_code == 400
    assert (await sign_in(client, DPO, NEW_PASSWORD)).status_code == 303

    events = await _events(app, "staff.password_changed")
    assert len(events) == 1
    assert events[0]["via"] == "self_service"
    assert events[0]["outcome"] == "success"
    async with portal_of(app).transaction() as db:
        details = " ".join((await db.scalars(select(AccessEvent.details))).all())
    assert NEW_PASSWORD not in details
    assert PASSWORD not in details


async def test_wrong_current_password_counted(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    session = await _signed_in(client, CLINICIAN)

    wrong = await _change(client, "not the password at all", NEW_PASSWORD)
    assert wrong.status_code == 400
    assert "The current password is not right." in wrong.text
    assert '<a href="#current_password">' in wrong.text
    assert 'aria-describedby="current_password-error"' in wrong.text
    events = await _events(app, "staff.password_changed")
    assert [(event["outcome"], event["reason"]) for event in events] == [
        ("failure", "wrong_current_password")
    ]

    # Nine more failures, counting sign-ins and password changes together, reach the account's limit.
    for _attempt in range(4):
        assert (await _change(client, "still not the password", NEW_PASSWORD)).status_code == 400
    client.cookies.clear()
    for _attempt in range(5):
        assert (await sign_in(client, CLINICIAN, "not the password at all")).status_code == 400
    assert (await sign_in(client, CLINICIAN)).status_code == 429

    _use(client, session)
    throttled = await _change(client, PASSWORD, NEW_PASSWORD)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "900"
    assert "Too many wrong passwords" in throttled.text
    client.cookies.clear()
    assert (await sign_in(client, CLINICIAN, NEW_PASSWORD)).status_code == 429


async def test_change_password_rules(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await _signed_in(client, CLINICIAN)
    cases = {
        "qwerty123456": "commonly used passwords",
        "Password123!": "commonly used passwords with digits or symbols added",
        "aaaaaaaaaaaa": "repeats one character or a pattern",
        "123456789012": "run of neighbouring keys or consecutive letters or digits",
        "short one": "too short",
        "clinician-on-the-ward": "contains the part of your e-mail address before the @",
        PASSWORD: "The new password is the same as the current one.",
    }
    for password, rule in cases.items():
        answer = await _change(client, PASSWORD, password)
        assert answer.status_code == 400, password
        assert rule in answer.text, password

    differ = await _change(client, PASSWORD, NEW_PASSWORD, "something else entirely")
    assert differ.status_code == 400
    assert "The two passwords differ." in differ.text
    # None of these counts as a wrong current password, and the password stays as it was.
    assert await _events(app, "staff.password_changed") == []
    client.cookies.clear()
    assert (await sign_in(client, CLINICIAN)).status_code == 303


async def test_change_needs_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    answer = await client.get("/staff/password", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/login"

    german = await _signed_in(client, CLINICIAN)
    _use(client, german)
    page = await client.get("/staff/password", headers={"Accept-Language": "de"})
    assert "Passwort ändern" in page.text
