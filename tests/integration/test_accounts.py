"""Account administration: admin pages, invitations, password rules, role changes, disabling and enabling
accounts, throttles, API tokens."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import uuid
from typing import Any

import pyotp
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from portal.admin.service import disable
from portal.audit.recorder import SYSTEM
from portal.errors import InvalidInput
from portal.models import AccessEvent, ApiToken, Invitation, StaffUser
from portal.security import totp
from portal.security.sessions import STAFF_COOKIE
from portal.security.throttle import hit
from portal.staff.invitations import create_invitation
from portal.staff.service import issue_token
from portal.staff.signin import ADDRESS_ATTEMPT_LIMIT, ADDRESS_WINDOW, LoginThrottle
from tests.conftest import BASE_URL, PASSWORD, csrf_from
from tests.helpers import ADMIN, CLINICIAN, DPO, SECOND_CLINICIAN, add_staff, portal_of, sign_in

ADMIN_PAGES = ("/admin", "/admin/staff", "/admin/tokens")
NEWCOMER = "newcomer@riverside.test"
NEW_PASSWORD = "lantern orchard violin meadow"
ZERO_ID = "00000000-0000-0000-0000-000000000000"
HOST = BASE_URL.split("//")[1]
FORM_ID = re.compile(r'name="form_id" value="([^"]+)"')
CONFIRMATION = re.compile(r'<div class="notice" role="status"[^>]*data-testid="confirmation"><p>([^<]+)</p>')


async def _events(app: Litestar, event_type: str) -> list[dict[str, Any]]:
    async with portal_of(app).transaction() as db:
        rows = (await db.scalars(select(AccessEvent).where(AccessEvent.event_type == event_type))).all()
    return [{"outcome": row.outcome, "actor": row.actor, **json.loads(row.details)} for row in rows]


async def _user(app: Litestar, email: str) -> StaffUser:
    async with portal_of(app).transaction() as db:
        user = await db.scalar(select(StaffUser).where(StaffUser.email == email))
    assert user is not None
    return user


async def _token(app: Litestar, email: str, scopes: tuple[str, ...]) -> dict[str, str]:
    owner = await _user(app, email)
    async with portal_of(app).transaction() as db:
        _row, token = await issue_token(db, SYSTEM, owner, label="tests", scopes=scopes, days=5)
    return {"Authorization": f"Bearer {token}"}


async def _invite(app: Litestar, email: str = NEWCOMER, role: str = "clinician") -> str:
    admin = await _user(app, ADMIN)
    async with portal_of(app).transaction() as db:
        created = await create_invitation(db, SYSTEM, email=email, role=role, created_by=admin)
    return f"/staff/invitations/{created.token}"


async def _signed_in(client: AsyncTestClient[Litestar], email: str) -> str:
    """Sign ``email`` in on ``client`` and return the session cookie's value."""
    answer = await sign_in(client, email)
    assert answer.status_code == 303
    session = answer.cookies.get(STAFF_COOKIE)
    assert session
    return str(session)


def _use_session(client: AsyncTestClient[Litestar], session: str) -> None:
    client.cookies.delete(STAFF_COOKIE)
    client.cookies.set(STAFF_COOKIE, session, domain=HOST)


async def _admin_managing(
    app: Litestar, client: AsyncTestClient[Litestar], email: str, role: str
) -> uuid.UUID:
    """Add the admin and the account ``email``, sign the admin in on ``client`` and return the account's id."""
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, email, role)
    await sign_in(client, ADMIN)
    return (await _user(app, email)).id


async def _admin_post(client: AsyncTestClient[Litestar], path: str, **fields: str) -> Any:
    """POST a form of the staff page as the signed-in admin, without following the redirect."""
    page = await client.get("/admin/staff")
    return await client.post(
        path, data={"_csrf_token": csrf_from(page.text), **fields}, follow_redirects=False
    )


async def _confirmation(client: AsyncTestClient[Litestar], location: str) -> str | None:
    """Open the page a redirect leads to and return the text of its confirmation message, if any."""
    page = await client.get(location)
    assert page.status_code == 200
    found = CONFIRMATION.search(page.text)
    return html.unescape(found.group(1)) if found else None


async def _disabled(app: Litestar, email: str) -> bool:
    return (await _user(app, email)).disabled_at is not None


async def _set_password(
    client: AsyncTestClient[Litestar], path: str, password: str, repeated: str | None = None
) -> Any:
    page = await client.get(path)
    token = (
        csrf_from(page.text)
        if page.status_code == 200
        else csrf_from((await client.get("/staff/login")).text)
    )
    return await client.post(
        path,
        data={"_csrf_token": token, "password": password, "password_repeat": repeated or password},
        follow_redirects=False,
    )


async def test_admin_pages_by_role(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")

    for path in ADMIN_PAGES:
        anonymous = await client.get(path, follow_redirects=False)
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"] == "/staff/login", path

    await sign_in(client, CLINICIAN)
    for path in ADMIN_PAGES:
        assert (await client.get(path, follow_redirects=False)).status_code == 403, path
    # The refusal is in the clinician's language.
    german = await client.get(ADMIN_PAGES[0], headers={"Accept-Language": "de"}, follow_redirects=False)
    assert "Ihre Rolle erlaubt diese Seite nicht." in german.text
    token = csrf_from((await client.get("/staff")).text)
    admin_id = (await _user(app, ADMIN)).id
    for path in (
        "/admin/invitations",
        f"/admin/staff/{admin_id}/disable",
        f"/admin/staff/{admin_id}/enable",
        f"/admin/staff/{admin_id}/role",
        "/admin/tokens",
    ):
        posted = await client.post(
            path, data={"_csrf_token": token, "role": "clinician"}, follow_redirects=False
        )
        assert posted.status_code == 403, path
    assert (await _user(app, ADMIN)).disabled_at is None

    client.cookies.clear()
    await sign_in(client, ADMIN)
    for path in ADMIN_PAGES:
        assert (await client.get(path)).status_code == 200, path
    staff_page = await client.get("/admin/staff")
    assert CLINICIAN in staff_page.text
    assert 'href="/admin/staff"' in staff_page.text


async def test_demoted_user_cut_off(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    headers = await _token(app, CLINICIAN, ("share",))
    clinician_session = await _signed_in(client, CLINICIAN)
    assert (await client.get("/staff")).status_code == 200
    assert (await client.get(f"/api/v1/shares/{ZERO_ID}", headers=headers)).status_code == 404

    await _signed_in(client, ADMIN)
    page = await client.get("/admin/staff")
    target = (await _user(app, CLINICIAN)).id
    changed = await client.post(
        f"/admin/staff/{target}/role",
        data={"_csrf_token": csrf_from(page.text), "role": "dpo"},
        follow_redirects=False,
    )
    assert changed.status_code == 303

    _use_session(client, clinician_session)
    after = await client.get("/staff", follow_redirects=False)
    assert after.status_code == 303
    assert after.headers["location"] == "/staff/login"
    assert (await client.get(f"/api/v1/shares/{ZERO_ID}", headers=headers)).status_code == 401

    events = await _events(app, "staff.role_changed")
    assert len(events) == 1
    assert events[0]["from"] == "clinician"
    assert events[0]["to"] == "dpo"
    assert events[0]["tokens_revoked"] == 1
    assert (await _user(app, CLINICIAN)).role == "dpo"


async def test_disabled_user_cut_off(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    headers = await _token(app, DPO, ("audit-read",))
    dpo_session = await _signed_in(client, DPO)
    assert (await client.get("/dpo/events")).status_code == 200
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 200

    await _signed_in(client, ADMIN)
    page = await client.get("/admin/staff")
    target = (await _user(app, DPO)).id
    # Disabling opens a confirmation first that names the account.
    assert f'<details class="confirm" data-testid="disable-{target}">' in page.text
    assert f"Disable {DPO}" in page.text
    disabled = await client.post(
        f"/admin/staff/{target}/disable", data={"_csrf_token": csrf_from(page.text)}, follow_redirects=False
    )
    assert disabled.status_code == 303

    _use_session(client, dpo_session)
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 303
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 401
    assert (await sign_in(client, DPO)).status_code == 400

    events = await _events(app, "staff.disabled")
    assert len(events) == 1
    assert events[0]["tokens_revoked"] == 1
    assert events[0]["actor"] == f"staff:{(await _user(app, ADMIN)).id}"


async def test_disable_twice_records_once(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    async with portal_of(app).transaction() as db:
        admin = await db.scalar(select(StaffUser).where(StaffUser.email == ADMIN))
        target = await db.scalar(select(StaffUser).where(StaffUser.email == DPO))
        assert admin is not None and target is not None
        # Another administrator's request disabled the account after this one loaded it as active.
        await db.execute(
            update(StaffUser)
            .where(StaffUser.id == target.id)
            .values(disabled_at=dt.datetime.now(dt.UTC))
            .execution_options(synchronize_session=False)
        )
        assert target.disabled_at is None

        with pytest.raises(InvalidInput, match=f"{DPO} is already disabled"):
            await disable(db, SYSTEM, admin, target)

    assert await _events(app, "staff.disabled") == []


async def test_role_change_confirmed(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    target = await _admin_managing(app, client, CLINICIAN, "clinician")

    changed = await _admin_post(client, f"/admin/staff/{target}/role", role="dpo")
    assert changed.status_code == 303
    assert changed.headers["location"] == f"/admin/staff?done=role&staff={target}"

    message = await _confirmation(client, changed.headers["location"])
    assert message is not None
    assert message.startswith(f"{CLINICIAN} now has the role “Data protection officer”.")
    assert "sessions have ended" in message
    assert "API tokens are revoked" in message

    german = await client.get(changed.headers["location"], headers={"Accept-Language": "de"})
    assert f"{CLINICIAN} hat jetzt die Rolle „Datenschutzbeauftragte/r“." in html.unescape(german.text)


async def test_disable_confirmed(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    target = await _admin_managing(app, client, DPO, "dpo")

    disabled = await _admin_post(client, f"/admin/staff/{target}/disable")
    assert disabled.status_code == 303
    assert disabled.headers["location"] == f"/admin/staff?done=disabled&staff={target}"

    message = await _confirmation(client, disabled.headers["location"])
    assert message == (
        f"The account of {DPO} is disabled. They can no longer sign in, their sessions have ended and their "
        "API tokens are revoked."
    )


async def test_confirmation_follows_account(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    target = await _admin_managing(app, client, DPO, "dpo")

    # The account is active, so a link that claims it was disabled confirms nothing.
    assert await _confirmation(client, f"/admin/staff?done=disabled&staff={target}") is None
    assert await _confirmation(client, f"/admin/staff?done=enabled&staff={target}") is not None
    # Unknown keys and ids show no message, and no text from the address reaches the page.
    assert await _confirmation(client, f"/admin/staff?done=Hacked&staff={target}") is None
    assert await _confirmation(client, f"/admin/staff?done=role&staff={ZERO_ID}") is None
    assert await _confirmation(client, "/admin/staff?done=role&staff=not-an-id") is None
    page = await client.get("/admin/staff?done=%3Cb%3EHacked%3C%2Fb%3E&staff=x")
    assert page.status_code == 200
    assert "Hacked" not in page.text


async def test_enable_restores_sign_in(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    headers = await _token(app, DPO, ("audit-read",))
    dpo_session = await _signed_in(client, DPO)
    await _signed_in(client, ADMIN)
    target = (await _user(app, DPO)).id
    assert (await _admin_post(client, f"/admin/staff/{target}/disable")).status_code == 303

    # A disabled account offers "Enable" behind a confirmation, and no longer offers "Disable".
    page = await client.get("/admin/staff")
    assert f'<details class="confirm" data-testid="enable-{target}">' in page.text
    assert f'action="/admin/staff/{target}/enable"' in page.text
    assert f'data-testid="disable-{target}"' not in page.text
    assert f"Enable {DPO}" in page.text

    enabled = await _admin_post(client, f"/admin/staff/{target}/enable")
    assert enabled.status_code == 303
    assert enabled.headers["location"] == f"/admin/staff?done=enabled&staff={target}"
    assert not await _disabled(app, DPO)
    message = await _confirmation(client, enabled.headers["location"])
    assert message == (
        f"The account of {DPO} is enabled again. They sign in with their existing password. API tokens "
        "revoked when the account was disabled stay revoked, so create a new one on the API tokens page if "
        "they need it."
    )
    page = await client.get("/admin/staff")
    assert f'data-testid="disable-{target}"' in page.text
    assert f'data-testid="enable-{target}"' not in page.text

    # The session and the token that the disable ended stay ended.
    _use_session(client, dpo_session)
    assert (await client.get("/dpo/events", follow_redirects=False)).status_code == 303
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 401
    # The password the account had before still signs in.
    client.cookies.clear()
    assert (await sign_in(client, DPO)).status_code == 303
    assert (await client.get("/dpo/events")).status_code == 200

    events = await _events(app, "staff.enabled")
    assert len(events) == 1
    assert events[0]["staff_id"] == str(target)
    assert events[0]["outcome"] == "success"
    assert events[0]["actor"] == f"staff:{(await _user(app, ADMIN)).id}"


async def test_enable_keeps_second_factor(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    portal = portal_of(app)
    dpo = await _user(app, DPO)
    secret = totp.new_secret()
    sealed = totp.seal(totp.sealing_key(portal.keyring.secret("session")), dpo.id, secret)
    async with portal.transaction() as db:
        await db.execute(update(StaffUser).where(StaffUser.id == dpo.id).values(totp_secret_sealed=sealed))

    await sign_in(client, ADMIN)
    assert (await _admin_post(client, f"/admin/staff/{dpo.id}/disable")).status_code == 303
    enabled = await _admin_post(client, f"/admin/staff/{dpo.id}/enable")
    message = await _confirmation(client, enabled.headers["location"])
    assert message is not None
    assert "They sign in with their existing password and a code from their authenticator app." in message

    # The password alone is not enough: the second factor kept through the disable is still asked for.
    client.cookies.clear()
    password_step = await sign_in(client, DPO)
    assert password_step.status_code == 303
    assert password_step.headers["location"] == "/staff/login/verify"
    page = await client.get("/staff/login/verify")
    code_step = await client.post(
        "/staff/login/verify",
        data={"_csrf_token": csrf_from(page.text), "code": pyotp.TOTP(secret).now()},
        follow_redirects=False,
    )
    assert code_step.status_code == 303
    assert (await client.get("/dpo/events")).status_code == 200


async def test_enable_needs_admin(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    await add_staff(app, DPO, "dpo")
    await add_staff(app, SECOND_CLINICIAN, "clinician")
    await sign_in(client, ADMIN)
    target = (await _user(app, SECOND_CLINICIAN)).id
    assert (await _admin_post(client, f"/admin/staff/{target}/disable")).status_code == 303

    for email in (CLINICIAN, DPO):
        client.cookies.clear()
        await sign_in(client, email)
        token = csrf_from((await client.get("/staff/login")).text)
        rejected = await client.post(
            f"/admin/staff/{target}/enable", data={"_csrf_token": token}, follow_redirects=False
        )
        assert rejected.status_code == 403, email
        assert "Your role does not allow this page." in rejected.text, email

    # Without a session there is no CSRF token either, so the CSRF check rejects the request first.
    client.cookies.clear()
    anonymous = await client.post(f"/admin/staff/{target}/enable", follow_redirects=False)
    assert anonymous.status_code == 403

    assert await _disabled(app, SECOND_CLINICIAN)
    assert await _events(app, "staff.enabled") == []


async def test_enable_active_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    target = await _admin_managing(app, client, DPO, "dpo")

    active = await _admin_post(client, f"/admin/staff/{target}/enable")
    assert active.status_code == 400
    assert f"{DPO} is not disabled, so there is nothing to enable." in active.text

    admin_id = (await _user(app, ADMIN)).id
    own = await _admin_post(client, f"/admin/staff/{admin_id}/enable")
    assert own.status_code == 400
    assert "your own account" in own.text

    unknown = await _admin_post(client, f"/admin/staff/{ZERO_ID}/enable")
    assert unknown.status_code == 404
    assert "No staff account with this id." in unknown.text

    assert await _events(app, "staff.enabled") == []


async def test_admin_cannot_demote_self(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    page = await client.get("/admin/staff")
    admin_id = (await _user(app, ADMIN)).id
    answer = await client.post(
        f"/admin/staff/{admin_id}/role", data={"_csrf_token": csrf_from(page.text), "role": "dpo"}
    )
    assert answer.status_code == 400
    assert "your own account" in answer.text
    assert (await _user(app, ADMIN)).role == "admin"


async def test_same_role_stays_on_page(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    target = await _admin_managing(app, client, DPO, "dpo")

    answer = await _admin_post(client, f"/admin/staff/{target}/role", role="dpo")

    assert answer.status_code == 400
    page = html.unescape(answer.text)
    # The staff page itself, with the problem in its error summary, linked to the account's role field.
    assert "<h1>Staff accounts</h1>" in page
    assert f'<a href="#role-{target}">{DPO} already has the role “Data protection officer”.' in page
    assert "Choose another role to change it." in page
    assert re.search(
        rf'<select id="role-{target}" name="role"\s+aria-describedby="role-{target}-error" aria-invalid="true">',
        page,
    )
    assert await _events(app, "staff.role_changed") == []

    german = await client.post(
        f"/admin/staff/{target}/role",
        data={"_csrf_token": csrf_from(answer.text), "role": "dpo"},
        headers={"Accept-Language": "de"},
    )
    assert german.status_code == 400
    assert "hat bereits die Rolle „Datenschutzbeauftragte/r“" in html.unescape(german.text)


def _assert_dead_invitation_page(answer: Any) -> None:
    """Check that a dead invitation link gets the staff's next steps, not a recipient's access code."""
    assert answer.status_code == 410
    page = html.unescape(answer.text)
    assert "This invitation link no longer works, or it is incomplete." in page
    assert "An invitation link works once and for 72 hours" in page
    assert "Ask the administrator of Riverside Dermatology for a new invitation link." in page
    assert "If you already set your password with this link, your account exists" in page
    assert '<a href="/staff/login">Staff sign in</a>' in page
    assert 'href="/access"' not in page
    assert "Enter an access code" not in page
    assert "Need help with a report?" not in page


async def test_invitation_link_single_use(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    page = await client.get("/admin/staff")
    created = await client.post(
        "/admin/invitations",
        data={"_csrf_token": csrf_from(page.text), "email": NEWCOMER, "role": "clinician"},
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    link = re.search(r'data-testid="invitation-link">([^<]+)<', created.text)
    assert link
    path = link.group(1).removeprefix(BASE_URL)
    assert path.startswith("/staff/invitations/")
    assert path not in (await client.get("/admin/staff")).text

    client.cookies.delete(STAFF_COOKIE)
    accepted = await _set_password(client, path, NEW_PASSWORD)
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/staff/login?welcome=1"

    second = await _set_password(client, path, "another fine passphrase")
    _assert_dead_invitation_page(second)
    _assert_dead_invitation_page(await client.get(path))

    assert (await sign_in(client, NEWCOMER, NEW_PASSWORD)).status_code == 303
    assert (await sign_in(client, NEWCOMER, "another fine passphrase")).status_code == 400
    assert (await _user(app, NEWCOMER)).role == "clinician"

    assert len(await _events(app, "staff.invited")) == 1
    stages = [event["stage"] for event in await _events(app, "staff.created") if "stage" in event]
    assert stages == ["activated"]


def _form_id(page: str) -> str:
    found = FORM_ID.search(page)
    assert found, "page has no form_id field"
    return found.group(1)


def _link_path(created: str) -> str:
    """Return the path of the invitation link on an "Invitation created" page."""
    link = re.search(r'data-testid="invitation-link">([^<]+)<', created)
    assert link
    return link.group(1).removeprefix(BASE_URL)


async def _invitation_form(
    client: AsyncTestClient[Litestar], email: str, role: str = "clinician"
) -> dict[str, str]:
    """Return the invitation form's fields as a fresh staff page fills them, with ``email`` and ``role``."""
    page = (await client.get("/admin/staff")).text
    return {"_csrf_token": csrf_from(page), "form_id": _form_id(page), "email": email, "role": role}


def _resent_page(answer: Any, form_id: str, *, field: str, secret: str) -> str:
    """Check the response to a form sent a second time and return its text, unescaped."""
    assert answer.status_code == 400
    assert f'<a href="#{field}">' in answer.text
    assert f'data-testid="{secret}"' not in answer.text
    # The form on the error page carries a new id, so it can create another one.
    assert _form_id(answer.text) != form_id
    return html.unescape(answer.text)


async def _row_count(app: Litestar, model: type[Invitation | ApiToken]) -> int:
    async with portal_of(app).transaction() as db:
        return len((await db.scalars(select(model))).all())


async def _invite_on_page(client: AsyncTestClient[Litestar], email: str, role: str) -> str:
    """Create an invitation on the staff page as the signed-in admin and return the link's path."""
    created = await client.post("/admin/invitations", data=await _invitation_form(client, email, role))
    assert created.status_code == 201, created.text
    return _link_path(created.text)


async def test_new_invitation_replaces_old(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    first = await _invite_on_page(client, NEWCOMER, "clinician")
    second = await _invite_on_page(client, NEWCOMER, "dpo")

    # The staff page lists the one open invitation, with the newer role.
    page = html.unescape((await client.get("/admin/staff")).text)
    listed = re.search(r'data-testid="open-invitations">.*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert listed is not None
    assert listed.group(1).count("<tr>") == 1
    assert NEWCOMER in listed.group(1)
    assert "Data protection officer" in listed.group(1)

    client.cookies.delete(STAFF_COOKIE)
    assert (await client.get(first)).status_code == 410
    assert (await _set_password(client, second, NEW_PASSWORD)).status_code == 303
    assert (await _user(app, NEWCOMER)).role == "dpo"

    replaced = [event["replaced"] for event in await _events(app, "staff.invited")]
    assert replaced == [0, 1]

    # Once used, the invitation is no longer listed.
    await sign_in(client, ADMIN)
    assert 'data-testid="open-invitations"' not in (await client.get("/admin/staff")).text


async def test_resent_invitation_creates_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    fields = await _invitation_form(client, NEWCOMER)
    first = await client.post("/admin/invitations", data=fields)
    assert first.status_code == 201
    path = _link_path(first.text)

    # What a browser sends when the admin reloads the "Invitation created" page.
    again = await client.post("/admin/invitations", data=fields)
    message = _resent_page(again, fields["form_id"], field="email", secret="invitation-link")
    assert (
        f"This form was sent already, so the invitation for {NEWCOMER} exists and its link was shown once."
        in message
    )
    assert (
        f"If the link is lost, invite {NEWCOMER} again: the new link replaces the one shown before."
        in message
    )
    assert await _row_count(app, Invitation) == 1
    assert len(await _events(app, "staff.invited")) == 1

    client.cookies.delete(STAFF_COOKIE)
    assert (await client.get(path)).status_code == 200
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303


async def test_rejected_invitation_frees_form_id(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    fields = await _invitation_form(client, ADMIN)

    rejected = await client.post("/admin/invitations", data=fields)
    assert rejected.status_code == 400
    assert "exists already" in rejected.text

    # The rejected send created nothing, so the corrected form may use the same id.
    corrected = await client.post("/admin/invitations", data={**fields, "email": NEWCOMER})
    assert corrected.status_code == 201


async def test_pasted_display_name_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    page = await client.get("/admin/staff")
    # The browser's own check of type="email" would show its message instead of the portal's.
    assert 'action="/admin/invitations" class="form" novalidate' in page.text
    fields = await _invitation_form(client, "Dr. A <a.b@clinic.example>")

    rejected = await client.post("/admin/invitations", data=fields)
    assert rejected.status_code == 400
    assert "has a name or angle brackets. Enter only the address" in rejected.text


async def test_invitation_page_names_replaced_link(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    first = await client.post("/admin/invitations", data=await _invitation_form(client, NEWCOMER))
    assert first.status_code == 201
    assert 'data-testid="replaced"' not in first.text

    second = await client.post("/admin/invitations", data=await _invitation_form(client, NEWCOMER))
    assert second.status_code == 201
    sentence = re.search(r'data-testid="replaced">([^<]+)<', second.text)
    assert sentence is not None
    assert html.unescape(sentence.group(1)) == (
        f"The earlier invitation link sent to {NEWCOMER} no longer works, because this one replaces it."
    )

    german = await client.post(
        "/admin/invitations",
        data=await _invitation_form(client, NEWCOMER),
        headers={"Accept-Language": "de"},
    )
    assert german.status_code == 201
    sentence = re.search(r'data-testid="replaced">([^<]+)<', german.text)
    assert sentence is not None
    assert NEWCOMER in sentence.group(1)
    assert "no longer works" not in sentence.group(1)


async def test_invitation_withdrawn(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await sign_in(client, ADMIN)
    path = await _invite_on_page(client, NEWCOMER, "clinician")
    listed = re.search(r'data-testid="withdraw-([0-9a-f-]+)"', (await client.get("/admin/staff")).text)
    assert listed is not None
    invitation_id = listed.group(1)

    withdrawn = await _admin_post(client, f"/admin/invitations/{invitation_id}/withdraw")
    assert withdrawn.status_code == 303
    assert withdrawn.headers["location"] == f"/admin/staff?done=withdrawn&invitation={invitation_id}"
    message = await _confirmation(client, withdrawn.headers["location"])
    assert message == f"The invitation for {NEWCOMER} is withdrawn. Its link no longer works."
    assert 'data-testid="open-invitations"' not in (await client.get("/admin/staff")).text

    # A second withdrawal, from a page opened before the first, stays on the staff page with the reason.
    again = await _admin_post(client, f"/admin/invitations/{invitation_id}/withdraw")
    assert again.status_code == 400
    assert f"The invitation for {NEWCOMER} is used, expired or withdrawn already." in html.unescape(
        again.text
    )
    # The summary links to the invitations heading, which the page keeps although no invitation is open.
    assert '<a href="#invitations-heading">' in again.text
    assert '<h2 id="invitations-heading" tabindex="-1">' in again.text
    assert "No invitation is open." in again.text
    unknown = await _admin_post(client, f"/admin/invitations/{ZERO_ID}/withdraw")
    assert unknown.status_code == 404

    events = await _events(app, "staff.invitation_withdrawn")
    assert len(events) == 1
    assert events[0]["invitation_id"] == invitation_id
    assert events[0]["actor"] == f"staff:{(await _user(app, ADMIN)).id}"

    client.cookies.delete(STAFF_COOKIE)
    _assert_dead_invitation_page(await client.get(path))
    _assert_dead_invitation_page(await _set_password(client, path, NEW_PASSWORD))


async def test_invitation_expired_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    path = await _invite(app)
    async with portal_of(app).transaction() as db:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        await db.execute(update(Invitation).values(expires_at=past))

    _assert_dead_invitation_page(await client.get(path))
    _assert_dead_invitation_page(await _set_password(client, path, NEW_PASSWORD))
    async with portal_of(app).transaction() as db:
        assert await db.scalar(select(StaffUser).where(StaffUser.email == NEWCOMER)) is None


async def test_password_rules_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    path = await _invite(app)
    cases = {
        "qwerty123456": "commonly used passwords",
        "QWERTY123456": "commonly used passwords",
        "short one": "too short",
        "x" * 257: "too long",
        "newcomer-at-the-clinic": "contains the part of your e-mail address before the @",
    }
    for password, rule in cases.items():
        answer = await _set_password(client, path, password)
        assert answer.status_code == 400, password
        assert rule in answer.text, password

    differ = await _set_password(client, path, NEW_PASSWORD, "something else entirely")
    assert differ.status_code == 400
    assert "differ" in differ.text
    # A rejected password leaves the invitation usable.
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303


async def test_login_throttle_account(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    statuses = []
    for _attempt in range(12):
        statuses.append((await sign_in(client, CLINICIAN, "not the password at all")).status_code)
        if statuses[-1] == 429:
            break
    assert statuses == [400] * 10 + [429]

    # The right password is not even checked while the account is throttled.
    throttled = await sign_in(client, CLINICIAN, PASSWORD)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "900"
    assert "Too many sign-in attempts" in throttled.text

    reasons = [event["reason"] for event in await _events(app, "staff.login.failed")]
    assert reasons.count("invalid_credentials") == 10
    assert reasons.count("throttled_account") == 2
    assert await _events(app, "staff.login") == []


async def test_login_throttle_address(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    portal = portal_of(app)
    # The test client connects from "testclient", which is no IP address, so the bucket is filled directly.
    throttle = LoginThrottle(portal.keyring.secret("session"), "127.0.0.1/32")
    address_bucket = throttle.address_bucket()
    assert address_bucket is not None
    async with portal.transaction() as db:
        for _attempt in range(ADDRESS_ATTEMPT_LIMIT):
            await hit(db, address_bucket, ADDRESS_WINDOW)

    from portal.staff import controllers

    original = controllers.login_throttle
    controllers.login_throttle = lambda request: throttle  # type: ignore[assignment]
    try:
        answer = await sign_in(client, CLINICIAN)
    finally:
        controllers.login_throttle = original
    assert answer.status_code == 429
    reasons = [event["reason"] for event in await _events(app, "staff.login.failed")]
    assert reasons == ["throttled_address"]


async def test_token_scopes_enforced(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    upload_only = await _token(app, ADMIN, ("upload",))
    denied = await client.get("/api/v1/audit/events", headers=upload_only)
    assert denied.status_code == 403
    assert "audit-read" in denied.json()["error"]["message"]

    audit = await _token(app, ADMIN, ("audit-read",))
    assert (await client.get("/api/v1/audit/events", headers=audit)).status_code == 200


async def test_token_scopes_follow_role(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await add_staff(app, DPO, "dpo")
    clinician = await _user(app, CLINICIAN)
    dpo = await _user(app, DPO)

    async with portal_of(app).transaction() as db:
        clinician_row, _token_text = await issue_token(db, SYSTEM, clinician, label="photo system")
        dpo_row, _token_text = await issue_token(db, SYSTEM, dpo, label="exports")
    assert clinician_row.scopes == "upload share"
    assert dpo_row.scopes == "audit-read"

    with pytest.raises(InvalidInput) as refused:
        async with portal_of(app).transaction() as db:
            await issue_token(db, SYSTEM, clinician, label="too wide", scopes=("upload", "audit-read"))
    assert refused.value.field == "scopes"
    assert "cannot use the scope 'audit-read'" in refused.value.message


async def test_admin_token_create_revoke(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    await sign_in(client, ADMIN)
    page = await client.get("/admin/tokens")
    dpo_id = (await _user(app, DPO)).id
    form = {"_csrf_token": csrf_from(page.text), "owner": str(dpo_id), "label": "Audit archive", "days": "30"}

    no_scope = await client.post("/admin/tokens", data=form)
    assert no_scope.status_code == 400
    assert "at least one scope" in no_scope.text

    # The DPO's role cannot share, so a token of theirs cannot get that scope.
    too_wide = await client.post("/admin/tokens", data={**form, "scopes": ["audit-read", "share"]})
    assert too_wide.status_code == 400
    assert "cannot use the scope &#39;share&#39;" in too_wide.text

    created = await client.post("/admin/tokens", data={**form, "scopes": ["audit-read"]})
    assert created.status_code == 201
    token = re.search(r'data-testid="api-token">(pt_[^<]+)<', created.text)
    assert token
    headers = {"Authorization": f"Bearer {token.group(1)}"}
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 200

    listing = await client.get("/admin/tokens")
    assert "Audit archive" in listing.text
    assert token.group(1) not in listing.text
    # Revoking opens a confirmation first, so the form sits inside a closed disclosure.
    assert re.search(r'<details class="confirm"[^>]*>\s*<summary>Revoke…</summary>', listing.text)
    token_id = re.search(r'action="/admin/tokens/([0-9a-f-]+)/revoke"', listing.text)
    assert token_id
    revoked = await client.post(
        f"/admin/tokens/{token_id.group(1)}/revoke",
        data={"_csrf_token": csrf_from(listing.text)},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 401

    created_events = await _events(app, "api_token.created")
    assert created_events[-1]["scopes"] == "audit-read"
    assert len(await _events(app, "api_token.revoked")) == 1


async def _token_form(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    """Sign in as the admin and return the token form's fields for an "Audit archive" token of the DPO."""
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    await sign_in(client, ADMIN)
    page = (await client.get("/admin/tokens")).text
    return {
        "_csrf_token": csrf_from(page),
        "form_id": _form_id(page),
        "owner": str((await _user(app, DPO)).id),
        "label": "Audit archive",
        "days": "30",
        "scopes": ["audit-read"],
    }


async def test_resent_token_form_creates_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    fields = await _token_form(app, client)
    first = await client.post("/admin/tokens", data=fields)
    assert first.status_code == 201
    token = re.search(r'data-testid="api-token">(pt_[^<]+)<', first.text)
    assert token

    # What a browser sends when the admin reloads the "Token created" page.
    again = await client.post("/admin/tokens", data=fields)
    message = _resent_page(again, fields["form_id"], field="label", secret="api-token")
    assert (
        f"This form was sent already, so the token “Audit archive” for {DPO} exists and was shown once. If it "
        "was not copied, revoke it in the list of tokens and create a new one." in message
    )
    assert await _row_count(app, ApiToken) == 1
    assert len(await _events(app, "api_token.created")) == 1

    headers = {"Authorization": f"Bearer {token.group(1)}"}
    assert (await client.get("/api/v1/audit/events", headers=headers)).status_code == 200


async def test_resent_token_form_without_owner(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    fields = await _token_form(app, client)
    assert (await client.post("/admin/tokens", data=fields)).status_code == 201

    # A second send that lacks the owner cannot name the token, so the message stays general.
    again = await client.post("/admin/tokens", data={**fields, "owner": ""})
    message = _resent_page(again, fields["form_id"], field="label", secret="api-token")
    assert "This form was sent already, so the token exists and was shown once." in message
    assert await _row_count(app, ApiToken) == 1


async def test_token_revoke_buttons_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, DPO, "dpo")
    await add_staff(app, CLINICIAN, "clinician")
    dpo, clinician = await _user(app, DPO), await _user(app, CLINICIAN)
    async with portal_of(app).transaction() as db:
        await issue_token(db, SYSTEM, dpo, label="Audit archive")
        await issue_token(db, SYSTEM, clinician, label="Photo system")
    await sign_in(client, ADMIN)

    page = await client.get("/admin/tokens")
    buttons = [
        html.unescape(text).strip()
        for text in re.findall(r'<button type="submit" class="button danger">(.*?)</button>', page.text)
    ]
    assert sorted(buttons) == [
        f"Revoke the token “Audit archive” for {DPO}",
        f"Revoke the token “Photo system” for {CLINICIAN}",
    ]

    german = html.unescape((await client.get("/admin/tokens?lang=de")).text)
    assert f"Token „Photo system“ für {CLINICIAN} widerrufen" in german


async def test_openapi_needs_auth(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/api/v1/openapi.json")).status_code == 401
    bad = await client.get("/api/v1/openapi.json", headers={"Authorization": "Bearer pt_not-a-token"})
    assert bad.status_code == 401

    await add_staff(app, CLINICIAN, "clinician")
    headers = await _token(app, CLINICIAN, ("upload",))
    schema = await client.get("/api/v1/openapi.json", headers=headers)
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/documents" in paths
    assert not any(path.startswith(("/staff", "/admin")) for path in paths)

    await sign_in(client, CLINICIAN)
    assert (await client.get("/api/v1/openapi.json")).json()["openapi"].startswith("3.")
