"""Password reset links: an administrator issues one for an account, the person sets a new password once."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.audit.recorder import SYSTEM
from portal.models import AccessEvent, Invitation, RecoveryCode, StaffUser
from portal.security import totp
from portal.security.hashing import CODE_HASHER, hash_secret
from portal.security.sessions import STAFF_COOKIE
from portal.staff.signin import start_full_session
from tests.conftest import BASE_URL, PASSWORD, csrf_from
from tests.helpers import ADMIN, CLINICIAN, DPO, SECOND_CLINICIAN, add_staff, portal_of, sign_in
from tests.integration.test_totp import strict_settings

NEW_PASSWORD = "lantern orchard violin meadow"
HOST = BASE_URL.split("//")[1]
CONFIRMATION = re.compile(r'<div class="notice" role="status"[^>]*data-testid="confirmation"><p>([^<]+)</p>')


async def _user(app: Litestar, email: str) -> StaffUser:
    async with portal_of(app).transaction() as db:
        user = await db.scalar(select(StaffUser).where(StaffUser.email == email))
    assert user is not None
    return user


async def _events(app: Litestar, event_type: str) -> list[dict[str, Any]]:
    async with portal_of(app).transaction() as db:
        rows = (await db.scalars(select(AccessEvent).where(AccessEvent.event_type == event_type))).all()
    return [{"outcome": row.outcome, "actor": row.actor, **json.loads(row.details)} for row in rows]


async def _issue(
    client: AsyncTestClient[Litestar], staff_id: uuid.UUID, *, reset_totp: bool = False, form_id: str = ""
) -> Any:
    """Send the reset form of the staff page as the signed-in admin, as the page fills it in."""
    page = await client.get("/admin/staff")
    sent_id = re.search(
        rf'action="/admin/staff/{staff_id}/reset">.*?name="form_id" value="([^"]+)"', page.text, re.S
    )
    fields = {
        "_csrf_token": csrf_from(page.text),
        "form_id": form_id or (sent_id.group(1) if sent_id else ""),
    }
    if reset_totp:
        fields["reset_totp"] = "yes"
    return await client.post(f"/admin/staff/{staff_id}/reset", data=fields, follow_redirects=False)


def _link_path(answer: Any) -> str:
    assert answer.status_code == 201, answer.text
    link = re.search(r'data-testid="reset-link">([^<]+)<', answer.text)
    assert link
    return link.group(1).removeprefix(BASE_URL)


async def _reset_link(app: Litestar, client: AsyncTestClient[Litestar], email: str, **options: bool) -> str:
    """Sign the admin in, issue a reset link for ``email`` on the staff page and return the link's path."""
    client.cookies.clear()
    await sign_in(client, ADMIN)
    return _link_path(await _issue(client, (await _user(app, email)).id, **options))


async def _set_password(
    client: AsyncTestClient[Litestar], path: str, password: str, repeated: str | None = None
) -> Any:
    page = await client.get(path)
    token_page = page if page.status_code == 200 else await client.get("/staff/login")
    return await client.post(
        path,
        data={
            "_csrf_token": csrf_from(token_page.text),
            "password": password,
            "password_repeat": repeated if repeated is not None else password,
        },
        follow_redirects=False,
    )


async def _staff_session(client: AsyncTestClient[Litestar], email: str) -> str:
    """Sign ``email`` in on a fresh cookie jar, so the sign-in ends no earlier session, and return the id."""
    client.cookies.clear()
    answer = await sign_in(client, email)
    assert answer.status_code == 303
    return str(answer.cookies.get(STAFF_COOKIE))


async def _works(client: AsyncTestClient[Litestar], session: str, path: str = "/staff") -> bool:
    client.cookies.delete(STAFF_COOKIE)
    client.cookies.set(STAFF_COOKIE, session, domain=HOST)
    return (await client.get(path, follow_redirects=False)).status_code == 200


async def _give_totp(app: Litestar, email: str) -> None:
    """Store a TOTP secret and two recovery codes for ``email``, as an enrolment would."""
    portal = portal_of(app)
    async with portal.transaction() as db:
        user = await db.scalar(select(StaffUser).where(StaffUser.email == email))
        assert user is not None
        key = totp.sealing_key(portal.keyring.secret("session"))
        user.totp_secret_sealed = totp.seal(key, user.id, totp.new_secret())
        user.totp_last_step = 1
        for code in totp.new_recovery_codes()[:2]:
            db.add(RecoveryCode(user_id=user.id, code_hash=await hash_secret(CODE_HASHER, code)))


async def _recovery_codes(app: Litestar, user_id: uuid.UUID) -> int:
    async with portal_of(app).transaction() as db:
        return int(await db.scalar(select(func.count()).where(RecoveryCode.user_id == user_id)) or 0)


async def test_reset_sets_new_password(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    await _give_totp(app, CLINICIAN)
    clinician = await _user(app, CLINICIAN)
    # A session that is still at the second step counts as a session of the account too.
    pending_session = await _staff_session(client, CLINICIAN)

    path = await _reset_link(app, client, CLINICIAN)
    assert path.startswith("/staff/password-reset/")
    admin_session = str(client.cookies.get(STAFF_COOKIE))
    assert await _works(client, pending_session, "/staff/login/verify")

    client.cookies.delete(STAFF_COOKIE)
    page = await client.get(path)
    assert page.status_code == 200
    assert CLINICIAN in page.text
    assert page.headers["cache-control"] == "no-store"
    answer = await _set_password(client, path, NEW_PASSWORD)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/login?reset=1"
    login = await client.get(answer.headers["location"])
    assert "Your new password is set. Sign in with it." in login.text

    assert (await sign_in(client, CLINICIAN)).status_code == 400
    assert (await sign_in(client, CLINICIAN, NEW_PASSWORD)).status_code == 303
    assert not await _works(client, pending_session, "/staff/login/verify")
    assert await _works(client, admin_session, "/admin/staff")
    # Without the option the second factor stays: the new password leads to the code step.
    after = await _user(app, CLINICIAN)
    assert after.totp_secret_sealed is not None
    assert await _recovery_codes(app, clinician.id) == 2

    issued = await _events(app, "staff.password_reset_issued")
    assert len(issued) == 1
    assert issued[0]["staff_id"] == str(clinician.id)
    assert issued[0]["totp_reset"] is False
    assert issued[0]["actor"] == f"staff:{(await _user(app, ADMIN)).id}"
    changed = await _events(app, "staff.password_changed")
    assert len(changed) == 1
    assert changed[0]["via"] == "reset_link"
    assert changed[0]["totp_reset"] is False
    assert changed[0]["actor"] == f"staff:{clinician.id}"
    token = path.rsplit("/", 1)[1]
    async with portal_of(app).transaction() as db:
        details = " ".join((await db.scalars(select(AccessEvent.details))).all())
    assert token not in details
    assert NEW_PASSWORD not in details


async def test_reset_ends_sessions(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    first = await _staff_session(client, CLINICIAN)
    second = await _staff_session(client, CLINICIAN)
    path = await _reset_link(app, client, CLINICIAN)

    # Issuing the link changes nothing yet: the sessions and the old password still work.
    assert await _works(client, first)
    assert await _works(client, second)
    client.cookies.clear()
    assert (await sign_in(client, CLINICIAN)).status_code == 303

    client.cookies.clear()
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303
    assert not await _works(client, first)
    assert not await _works(client, second)


async def test_reset_clears_totp_when_asked(tmp_path: Path, database_url: str) -> None:
    # A portal whose policy requires two-step sign-in: after the reset the person sets it up again.
    app = create_app(strict_settings(tmp_path, database_url), pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        await add_staff(app, ADMIN, "admin")
        await add_staff(app, CLINICIAN, "clinician")
        await _give_totp(app, CLINICIAN)
        clinician = await _user(app, CLINICIAN)
        # The admin's own two-step sign-in is not under test, so the admin gets a signed-in session directly.
        portal = portal_of(app)
        async with portal.transaction() as db:
            admin_session = await start_full_session(
                db, SYSTEM, await _user(app, ADMIN), portal.policies.security, previous_session_id=None
            )
        client.cookies.set(STAFF_COOKIE, admin_session, domain=HOST)

        staff_page = await client.get("/admin/staff")
        assert f'id="reset-totp-{clinician.id}"' in staff_page.text
        path = _link_path(await _issue(client, clinician.id, reset_totp=True))

        client.cookies.clear()
        reset_page = await client.get(path)
        assert "your authenticator app and your recovery codes will no longer work" in reset_page.text
        assert "asks you to set up two-step sign-in again" in reset_page.text
        answer = await _set_password(client, path, NEW_PASSWORD)
        assert answer.headers["location"] == "/staff/login?reset=totp"
        assert "two-step sign-in is reset" in (await client.get(answer.headers["location"])).text

        after = await _user(app, CLINICIAN)
        assert after.totp_secret_sealed is None
        assert after.totp_last_step is None
        assert await _recovery_codes(app, clinician.id) == 0
        signed_in = await sign_in(client, CLINICIAN, NEW_PASSWORD)
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/staff/totp"

        assert [event["totp_reset"] for event in await _events(app, "staff.password_reset_issued")] == [True]
        assert [event["totp_reset"] for event in await _events(app, "staff.password_changed")] == [True]


async def test_reset_link_single_use(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    client.cookies.clear()
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303

    again = await _set_password(client, path, "another fine passphrase")
    assert again.status_code == 410
    assert "password reset link is invalid, expired or already used" in again.text
    assert (await client.get(path)).status_code == 410
    assert (await sign_in(client, CLINICIAN, "another fine passphrase")).status_code == 400
    assert len(await _events(app, "staff.password_changed")) == 1


async def test_reset_link_expires(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    client.cookies.clear()

    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=23, minutes=50), tick=False):
        assert (await client.get(path)).status_code == 200
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=24, minutes=1), tick=False):
        assert (await client.get(path)).status_code == 410
        assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 410
    assert (await sign_in(client, CLINICIAN)).status_code == 303


async def test_newer_reset_replaces_older(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    older = await _reset_link(app, client, CLINICIAN)
    newer = _link_path(await _issue(client, (await _user(app, CLINICIAN)).id))

    page = html.unescape((await client.get("/admin/staff")).text)
    listed = re.search(r'data-testid="open-invitations">.*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert listed is not None
    assert listed.group(1).count("<tr>") == 1
    assert "password reset" in listed.group(1)
    assert [event["replaced"] for event in await _events(app, "staff.password_reset_issued")] == [0, 1]

    client.cookies.clear()
    assert (await client.get(older)).status_code == 410
    assert (await _set_password(client, newer, NEW_PASSWORD)).status_code == 303


async def test_reset_link_withdrawn(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    page = await client.get("/admin/staff")
    assert "Withdraw the password reset link for " + CLINICIAN in page.text
    listed = re.search(r'data-testid="withdraw-([0-9a-f-]+)"', page.text)
    assert listed is not None

    withdrawn = await client.post(
        f"/admin/invitations/{listed.group(1)}/withdraw",
        data={"_csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    assert withdrawn.status_code == 303
    message = CONFIRMATION.search((await client.get(withdrawn.headers["location"])).text)
    assert message is not None
    assert message.group(1) == f"The password reset link for {CLINICIAN} is withdrawn. It no longer works."

    events = await _events(app, "staff.password_reset_withdrawn")
    assert len(events) == 1
    assert events[0]["staff_id"] == str((await _user(app, CLINICIAN)).id)
    assert await _events(app, "staff.invitation_withdrawn") == []

    client.cookies.clear()
    assert (await client.get(path)).status_code == 410
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 410
    assert (await sign_in(client, CLINICIAN)).status_code == 303


async def test_reload_shows_no_second_link(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, ADMIN)
    target = (await _user(app, CLINICIAN)).id
    first = await _issue(client, target, form_id="reset-form-once")
    path = _link_path(first)

    # A reload sends the same form, with the same form id.
    reloaded = await _issue(client, target, form_id="reset-form-once")
    assert reloaded.status_code == 400
    text = html.unescape(reloaded.text)
    assert "This form was sent already, so the reset link was created and shown once." in text
    assert '<a href="#list-heading">' in reloaded.text
    assert 'data-testid="reset-link"' not in reloaded.text
    assert len(await _events(app, "staff.password_reset_issued")) == 1

    # The link shown first still works.
    client.cookies.clear()
    assert (await client.get(path)).status_code == 200


async def test_reset_refusals(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    await add_staff(app, DPO, "dpo")
    await add_staff(app, SECOND_CLINICIAN, "clinician")
    target = (await _user(app, SECOND_CLINICIAN)).id

    # Other roles get 403 and no link.
    for email in (CLINICIAN, DPO):
        client.cookies.clear()
        await sign_in(client, email)
        token = csrf_from((await client.get("/staff/login")).text)
        answer = await client.post(
            f"/admin/staff/{target}/reset", data={"_csrf_token": token}, follow_redirects=False
        )
        assert answer.status_code == 403, email

    client.cookies.clear()
    await sign_in(client, ADMIN)
    admin_id = (await _user(app, ADMIN)).id
    page = await client.get("/admin/staff")
    assert f'data-testid="reset-{target}"' in page.text
    assert f'data-testid="reset-{admin_id}"' not in page.text
    own = await _issue(client, admin_id, form_id="own")
    assert own.status_code == 400
    assert "You cannot reset your own password here." in own.text

    disabled = await client.post(
        f"/admin/staff/{target}/disable", data={"_csrf_token": csrf_from(page.text)}, follow_redirects=False
    )
    assert disabled.status_code == 303
    assert f'data-testid="reset-{target}"' not in (await client.get("/admin/staff")).text
    refused = await _issue(client, target, form_id="disabled")
    assert refused.status_code == 400
    assert f"The account of {SECOND_CLINICIAN} is disabled. Enable it first" in refused.text
    # The form id of a refused form is released, so the same form works once the account is enabled.
    page = await client.get("/admin/staff")
    await client.post(f"/admin/staff/{target}/enable", data={"_csrf_token": csrf_from(page.text)})
    assert (await _issue(client, target, form_id="disabled")).status_code == 201

    unknown = await _issue(client, uuid.UUID(int=0), form_id="unknown")
    assert unknown.status_code == 404
    assert [event["staff_id"] for event in await _events(app, "staff.password_reset_issued")] == [str(target)]


async def test_disable_ends_reset_link(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    target = (await _user(app, CLINICIAN)).id
    page = await client.get("/admin/staff")
    await client.post(f"/admin/staff/{target}/disable", data={"_csrf_token": csrf_from(page.text)})
    page = await client.get("/admin/staff")
    await client.post(f"/admin/staff/{target}/enable", data={"_csrf_token": csrf_from(page.text)})

    client.cookies.clear()
    assert (await client.get(path)).status_code == 410
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 410
    assert (await sign_in(client, CLINICIAN, PASSWORD)).status_code == 303


async def test_reset_link_follows_role(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    target = (await _user(app, CLINICIAN)).id
    page = await client.get("/admin/staff")
    changed = await client.post(
        f"/admin/staff/{target}/role", data={"_csrf_token": csrf_from(page.text), "role": "dpo"}
    )
    assert changed.status_code in (200, 303)

    async with portal_of(app).transaction() as db:
        link = await db.scalar(select(Invitation).where(Invitation.staff_id == target))
    assert link is not None
    assert link.role == "dpo"
    client.cookies.clear()
    assert (await client.get(path)).status_code == 200


async def test_reset_password_rules(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    client.cookies.clear()
    cases = {
        "qwerty123456": "commonly used passwords",
        "short one": "too short",
        "x" * 257: "too long",
        "clinician-on-the-ward": "contains the part of your e-mail address before the @",
    }
    for password, rule in cases.items():
        answer = await _set_password(client, path, password)
        assert answer.status_code == 400, password
        assert rule in answer.text, password
        assert CLINICIAN in answer.text, password

    differ = await _set_password(client, path, NEW_PASSWORD, "something else entirely")
    assert differ.status_code == 400
    assert "The two passwords differ." in differ.text
    assert 'aria-describedby="password_repeat-error"' in differ.text
    assert (await sign_in(client, CLINICIAN)).status_code == 303
    assert await _events(app, "staff.password_changed") == []

    # A rejected password leaves the link usable.
    client.cookies.clear()
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303


async def test_invitation_link_cannot_reset(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    token = path.rsplit("/", 1)[1]
    client.cookies.clear()

    # Each kind of link opens only its own page.
    assert (await client.get(f"/staff/invitations/{token}")).status_code == 410
    async with portal_of(app).transaction() as db:
        row = await db.scalar(select(Invitation))
        assert row is not None and row.used_at is None
    assert (await client.get(path)).status_code == 200


async def test_secrets_absent_from_logs(
    app: Litestar, client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    client.cookies.clear()
    assert (await _set_password(client, path, "short one")).status_code == 400
    assert (await _set_password(client, path, NEW_PASSWORD)).status_code == 303
    assert (await client.get(path)).status_code == 410

    await sign_in(client, CLINICIAN, NEW_PASSWORD)
    page = await client.get("/staff/password")
    for current in ("a wrong current password", NEW_PASSWORD):
        await client.post(
            "/staff/password",
            data={
                "_csrf_token": csrf_from(page.text),
                "current_password": current,
                "password": "yet another fine passphrase",
                "password_repeat": "yet another fine passphrase",
            },
        )
    assert (await sign_in(client, CLINICIAN, "yet another fine passphrase")).status_code == 303

    async with portal_of(app).transaction() as db:
        access_log = " ".join((await db.scalars(select(AccessEvent.details))).all())
    records = json.dumps([record.__dict__ for record in caplog.records], default=str, ensure_ascii=False)
    application_log = caplog.text + records
    forbidden = {
        "reset token": path.rsplit("/", 1)[1],
        "reset link": path,
        "password set through the link": NEW_PASSWORD,
        "rejected password": "short one",
        "wrong current password": "a wrong current password",
        "changed password": "yet another fine passphrase",
    }
    assert "/staff/password-reset/…" in application_log, "the request log names the page without its token"
    for label, value in forbidden.items():
        assert value not in application_log, f"{label} found in the application log"
        assert value not in access_log, f"{label} found in the access log"


async def test_concurrent_resets_one_winner(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, ADMIN, "admin")
    await add_staff(app, CLINICIAN, "clinician")
    path = await _reset_link(app, client, CLINICIAN)
    client.cookies.clear()
    token = csrf_from((await client.get(path)).text)

    async def attempt(number: int) -> int:
        password = f"{NEW_PASSWORD} {number}"
        fields = {"_csrf_token": token, "password": password, "password_repeat": password}
        return (await client.post(path, data=fields, follow_redirects=False)).status_code

    statuses = await asyncio.gather(*(attempt(number) for number in range(5)))
    assert statuses.count(303) == 1, statuses
    assert statuses.count(410) == 4, statuses
    assert len(await _events(app, "staff.password_changed")) == 1
    winner = statuses.index(303)
    assert (await sign_in(client, CLINICIAN, f"{NEW_PASSWORD} {winner}")).status_code == 303
