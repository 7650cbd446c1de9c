"""Staff sign-in: fresh session ids, failures recorded, sign-out ends the session server-side."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.models import AccessEvent
from portal.security.sessions import STAFF_COOKIE
from tests.conftest import BASE_URL, csrf_from
from tests.helpers import CLINICIAN, add_staff, portal_of, sign_in

HOST = BASE_URL.split("//")[1]


async def test_login_replaces_planted_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    planted = "attacker-chosen-session-id-0000000000000000000000"
    client.cookies.set(STAFF_COOKIE, planted, domain=HOST)

    answer = await sign_in(client, CLINICIAN)
    assert answer.status_code == 303
    issued = answer.cookies.get(STAFF_COOKIE)
    assert issued
    assert issued != planted

    set_cookie = answer.headers["set-cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag in set_cookie
    assert "Domain" not in set_cookie

    client.cookies.clear()
    client.cookies.set(STAFF_COOKIE, planted, domain=HOST)
    assert (await client.get("/staff", follow_redirects=False)).status_code == 303

    client.cookies.clear()
    client.cookies.set(STAFF_COOKIE, issued, domain=HOST)
    assert (await client.get("/staff")).status_code == 200


async def test_wrong_password_is_logged(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    answer = await sign_in(client, CLINICIAN, "not the password at all")
    assert answer.status_code == 400
    assert "not right" in answer.text
    unknown = await sign_in(client, "nobody@riverside.test", "not the password at all")
    assert unknown.status_code == 400
    assert unknown.text.replace(csrf_from(unknown.text), "").count("not right") == answer.text.count(
        "not right"
    )

    async with portal_of(app).transaction() as db:
        types = list((await db.scalars(select(AccessEvent.event_type))).all())
    assert types.count("staff.login.failed") == 2
    assert "staff.login" not in types


async def test_logout_kills_session(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    answer = await sign_in(client, CLINICIAN)
    session_id = answer.cookies.get(STAFF_COOKIE)
    dashboard = await client.get("/staff")
    assert dashboard.status_code == 200

    logout = await client.post("/staff/logout", data={"_csrf_token": csrf_from(dashboard.text)})
    assert logout.status_code == 200  # followed the redirect to the sign-in page
    assert '"cookies"' in logout.history[0].headers["clear-site-data"]

    client.cookies.clear()
    client.cookies.set(STAFF_COOKIE, session_id, domain=HOST)
    replay = await client.get("/staff", follow_redirects=False)
    assert replay.status_code == 303
    assert replay.headers["location"] == "/staff/login"


async def test_staff_pages_need_sign_in(client: AsyncTestClient[Litestar]) -> None:
    for path in ("/staff", "/dpo/events", "/dpo/disclosures"):
        answer = await client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/staff/login"


async def test_api_needs_token(client: AsyncTestClient[Litestar]) -> None:
    answer = await client.get("/api/v1/audit/events")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"
    bad = await client.get("/api/v1/audit/events", headers={"Authorization": "Bearer pt_not-a-token"})
    assert bad.status_code == 401
    french = await client.get(
        "/api/v1/audit/events", headers={"Authorization": "Bearer pt_not-a-token", "Accept-Language": "fr"}
    )
    assert french.json()["error"]["message"].startswith("Le jeton d\u2019API est invalide")


async def test_staff_home_sends_each_role_home(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    anonymous = await client.get("/staff/home", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/staff/login"

    for email, role, landing in (
        (CLINICIAN, "clinician", "/staff"),
        ("dpo@riverside.test", "dpo", "/dpo/events"),
        ("admin@riverside.test", "admin", "/staff"),
    ):
        client.cookies.clear()
        await add_staff(app, email, role)
        await sign_in(client, email)
        answer = await client.get("/staff/home", follow_redirects=False)
        assert answer.status_code == 303, role
        assert answer.headers["location"] == landing, role
