"""Every action in the access-log taxonomy writes exactly one event of its type.

One scenario walks through all the actions; each step checks that its event type gained exactly one row.
The last assertion fails if an event type exists that no step produced, so a new type needs a step here.
The same scenario then feeds the DPO's pages, which must show every detail it recorded by a readable name
and every fixed value by its label, in each language.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.admin.service import change_role, disable, enable, revoke_token
from portal.audit.recorder import EVENT_TYPES, SYSTEM, Actor
from portal.models import AccessEvent, ApiToken, Invitation, Share, StaffUser
from portal.retention.erasure import add_hold, release_hold
from portal.retention.keys import retire_kek, rotate_keys
from portal.retention.policy import load_retention_policy
from portal.retention.purge import purge
from portal.security import codes
from portal.security.hashing import sha256_hex
from portal.shares.service import approve_share
from portal.staff.invitations import create_invitation, withdraw_invitation
from portal.staff.password_reset import complete_reset, issue_reset
from tests.conftest import csrf_from
from tests.helpers import (
    ADMIN,
    CLINICIAN,
    DPO,
    SECOND_CLINICIAN,
    add_staff,
    create_share,
    portal_of,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)

NEW_PASSWORD = "lantern orchard violin meadow"


async def counts(app: Litestar) -> Counter[str]:
    async with portal_of(app).transaction() as db:
        return Counter((await db.scalars(select(AccessEvent.event_type))).all())


async def staff(app: Litestar, email: str) -> StaffUser:
    async with portal_of(app).transaction() as db:
        user = await db.scalar(select(StaffUser).where(StaffUser.email == email))
    assert user is not None
    return user


async def walk_every_action(app: Litestar, client: AsyncTestClient[Litestar]) -> set[str]:
    """Take every action once, check that each writes one event of its type, and return the types seen."""
    portal = portal_of(app)
    covered: set[str] = set()

    async def expect_one(event_type: str, action: Callable[[], Awaitable[Any]]) -> Any:
        before = await counts(app)
        result = await action()
        after = await counts(app)
        assert after[event_type] - before[event_type] == 1, (
            f"{event_type}: {after[event_type] - before[event_type]} events"
        )
        covered.add(event_type)
        return result

    covered.add("policy.loaded")  # written once at start-up
    assert (await counts(app))["policy.loaded"] == 1

    await expect_one("staff.created", lambda: add_staff(app, CLINICIAN, "clinician"))
    await add_staff(app, SECOND_CLINICIAN, "clinician")
    await add_staff(app, ADMIN, "admin")
    headers = await expect_one("api_token.created", lambda: token_for(app, CLINICIAN, "clinician"))
    dpo_headers = await token_for(app, DPO, "dpo")

    await expect_one("staff.login.failed", lambda: sign_in(client, CLINICIAN, "wrong password here"))
    await expect_one("staff.login", lambda: sign_in(client, CLINICIAN))
    token = csrf_from((await client.get("/staff")).text)
    await expect_one("staff.logout", lambda: client.post("/staff/logout", data={"_csrf_token": token}))

    uploaded = await expect_one("document.uploaded", lambda: upload_pdf(client, headers, simple_pdf(2)))
    document_id = uploaded.json()["id"]
    await expect_one("document.rejected", lambda: upload_pdf(client, headers, b"%PDF-1.7 broken"))

    shared = await expect_one("share.created", lambda: create_share(client, headers, [document_id]))
    share = shared.json()
    wrong = codes.display(codes.with_locator(codes.locator_of(codes.normalise(share["access_code"]))))
    await expect_one("code.failed", lambda: redeem(client, wrong))
    await expect_one("code.redeemed", lambda: redeem(client, share["access_code"]))
    await expect_one("access.viewed", lambda: client.get("/access/pages/1"))

    started = await counts(app)
    assert (await client.get("/access/download")).status_code == 200
    delta = await counts(app) - started
    assert delta["access.download.started"] == 1
    assert delta["access.download.completed"] == 1
    covered |= {"access.download.started", "access.download.completed"}

    # A damaged copy: the download is refused before any byte and recorded as aborted.
    async with portal.transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None and row.copy_blob_id
    blob_path = next(Path(portal.settings.blob_dir).rglob(row.copy_blob_id))
    damaged = bytearray(blob_path.read_bytes())
    damaged[200] ^= 0x01
    blob_path.write_bytes(bytes(damaged))
    await expect_one("access.download.aborted", lambda: client.get("/access/download"))

    await expect_one(
        "share.reissued", lambda: client.post(f"/api/v1/shares/{share['id']}/reissue", headers=headers)
    )

    locked = (await create_share(client, headers, [document_id])).json()
    for _ in range(4):
        await redeem(
            client,
            codes.display(codes.with_locator(codes.locator_of(codes.normalise(locked["access_code"])))),
        )
    last_wrong = codes.display(codes.with_locator(codes.locator_of(codes.normalise(locked["access_code"]))))
    await expect_one("code.locked", lambda: redeem(client, last_wrong))

    await expect_one(
        "share.revoked", lambda: client.post(f"/api/v1/shares/{locked['id']}/revoke", headers=headers)
    )

    insurer = (await create_share(client, headers, [document_id], profile="insurer")).json()
    second = await staff(app, SECOND_CLINICIAN)
    who = Actor(f"staff:{second.id}")
    await expect_one("share.approved", lambda: approve_share(portal, who, second, uuid.UUID(insurer["id"])))

    await expect_one("export.created", lambda: client.get("/api/v1/audit/events", headers=dpo_headers))

    admin = await staff(app, ADMIN)
    admin_actor = Actor(f"staff:{admin.id}")
    dpo_user = await staff(app, DPO)

    async def invite() -> Any:
        async with portal.transaction() as db:
            return await create_invitation(
                db, admin_actor, email="new@riverside.test", role="clinician", created_by=admin
            )

    await expect_one("staff.invited", invite)

    async def withdraw() -> Any:
        async with portal.transaction() as db:
            created = await create_invitation(
                db, admin_actor, email="withdrawn@riverside.test", role="dpo", created_by=admin
            )
        async with portal.transaction() as db:
            return await withdraw_invitation(db, admin_actor, str(created.invitation.id))

    await expect_one("staff.invitation_withdrawn", withdraw)

    async def issue_reset_link() -> str:
        async with portal.transaction() as db:
            target = await db.get(StaffUser, second.id)
            assert target is not None
            _row, token = await issue_reset(db, admin_actor, admin, target, reset_totp=False)
        return token

    reset_token = await expect_one("staff.password_reset_issued", issue_reset_link)

    async def use_reset_link() -> Any:
        async with portal.transaction() as db:
            return await complete_reset(db, admin_actor, reset_token, NEW_PASSWORD, NEW_PASSWORD)

    await expect_one("staff.password_changed", use_reset_link)

    async def withdraw_reset_link() -> Any:
        token = await issue_reset_link()
        async with portal.transaction() as db:
            row = await db.scalar(select(Invitation).where(Invitation.token_hash == sha256_hex(token)))
            assert row is not None
            return await withdraw_invitation(db, admin_actor, str(row.id))

    before_withdrawal = await counts(app)
    await withdraw_reset_link()
    delta = await counts(app) - before_withdrawal
    assert delta["staff.password_reset_withdrawn"] == 1
    assert delta["staff.password_reset_issued"] == 1
    covered.add("staff.password_reset_withdrawn")

    async def demote() -> Any:
        async with portal.transaction() as db:
            target = await db.get(StaffUser, second.id)
            assert target is not None
            return await change_role(db, admin_actor, admin, target, "dpo")

    await expect_one("staff.role_changed", demote)

    async def disable_dpo() -> Any:
        async with portal.transaction() as db:
            target = await db.get(StaffUser, dpo_user.id)
            assert target is not None
            return await disable(db, admin_actor, admin, target)

    clinician_token = await token_for(app, ADMIN, "admin")
    assert clinician_token

    async def revoke_admin_token() -> Any:
        async with portal.transaction() as db:
            row = await db.scalar(select(ApiToken).where(ApiToken.user_id == admin.id))
            assert row is not None
            return await revoke_token(db, admin_actor, str(row.id))

    await expect_one("api_token.revoked", revoke_admin_token)
    before_disable = await counts(app)
    await disable_dpo()
    assert (await counts(app))["staff.disabled"] - before_disable["staff.disabled"] == 1
    covered.add("staff.disabled")

    async def enable_dpo() -> Any:
        async with portal.transaction() as db:
            target = await db.get(StaffUser, dpo_user.id)
            assert target is not None
            return await enable(db, admin_actor, admin, target)

    await expect_one("staff.enabled", enable_dpo)

    hold = await expect_one(
        "legal_hold.added",
        lambda: add_hold(portal, document_id=document_id, patient_ref=None, reason="Complaint"),
    )
    await expect_one("legal_hold.released", lambda: release_hold(portal, str(hold.id)))

    old_kek = portal.keyring.primary_kek_id
    await expect_one("key.rotated", lambda: rotate_keys(portal))
    await expect_one("key.retired", lambda: retire_kek(portal, old_kek))

    await expect_one(
        "document.erased",
        lambda: client.post(
            f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
        ),
    )

    expiring = await upload_pdf(client, headers, simple_pdf())
    await create_share(client, headers, [expiring.json()["id"]])
    policy = load_retention_policy(portal.settings.policy_dir)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=20), tick=True):
        before = await counts(app)
        await purge(portal, policy, who=SYSTEM)
        delta = await counts(app) - before
    assert delta["retention.purged"] == 1
    assert delta["share.expired"] >= 1  # one per expired share
    covered |= {"retention.purged", "share.expired"}
    return covered


async def test_each_action_writes_one_event(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    covered = await walk_every_action(app, client)

    enrol_missing = EVENT_TYPES - covered - {"staff.totp_enrolled"}
    assert not enrol_missing, f"event types without a step here: {sorted(enrol_missing)}"


# Details whose values are ids, hashes, references the DPO typed, or API scope names: shown as logged.
FREE_DETAILS = {"sha256", "policy_sha256", "share_reference", "ip_prefix", "scopes"}
DETAIL_SPAN = re.compile(r'<span class="detail">(.*?)</span>', re.DOTALL)
EVENT_ROW = re.compile(r'<tr>\s*<td><a href="/dpo/events/(\d+)".*?</tr>', re.DOTALL)


def _shown_details(html_text: str) -> list[tuple[str, str]]:
    items = []
    for span in DETAIL_SPAN.findall(html_text):
        name, _separator, value = html.unescape(span).partition(": ")
        items.append((name, value))
    return items


def _free(key: str, value: object) -> bool:
    if not isinstance(value, str) or key in FREE_DETAILS or key.endswith("_id"):
        return True
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}T[\d:.]+(\+00:00|Z)", value) is not None


async def _listed_details(
    client: AsyncTestClient[Litestar], language: str
) -> dict[int, list[tuple[str, str]]]:
    """Return the details that the events table shows, by event number, paging through "Older events"."""
    page = (await client.get(f"/dpo/events?lang={language}")).text
    token = csrf_from(page)
    listed: dict[int, list[tuple[str, str]]] = {}
    form: dict[str, str] = {"_csrf_token": token}
    while True:
        results = (await client.post("/dpo/events", data=form, headers={"HX-Request": "true"})).text
        for row in EVENT_ROW.finditer(results):
            listed[int(row.group(1))] = _shown_details(row.group(0))
        older = re.search(r'name="before" value="(\d+)"', results)
        if older is None:
            return listed
        form = {"_csrf_token": token, "before": older.group(1)}


async def test_dpo_pages_name_every_detail(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await walk_every_action(app, client)
    await sign_in(client, ADMIN)
    async with portal_of(app).transaction() as db:
        events = (await db.scalars(select(AccessEvent).order_by(AccessEvent.seq))).all()
    assert {event.event_type for event in events} >= EVENT_TYPES - {"staff.totp_enrolled"}

    for language in ("en", "de", "fr"):
        listed = await _listed_details(client, language)
        assert set(listed) == {event.seq for event in events}
        for event in events:
            page = await client.get(f"/dpo/events/{event.seq}?lang={language}")
            shown = _shown_details(page.text)
            assert listed[event.seq] == shown, f"{event.event_type}: the table and the event page differ"

            recorded = list(json.loads(event.details).items())
            assert len(shown) == len(recorded), f"{event.event_type}: {shown}"
            for (key, value), (name, text) in zip(recorded, shown, strict=True):
                where = f"{language} {event.event_type} {key}={value!r}: shown as {name}: {text}"
                assert "_" not in name, where
                if _free(key, value):
                    continue
                assert "_" not in text, where
                if language != "en":
                    assert text != value, where


async def test_recipient_events_record_purpose(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await walk_every_action(app, client)
    async with portal_of(app).transaction() as db:
        purposes = {str(share.id): share.purpose for share in (await db.scalars(select(Share))).all()}
        events = (
            await db.scalars(
                select(AccessEvent).where(
                    AccessEvent.actor.startswith("recipient:"), AccessEvent.share_id.is_not(None)
                )
            )
        ).all()

    # A code that matched no share names no share, so it has no purpose to record.
    recorded = {event.event_type for event in events}
    assert recorded >= {
        "code.failed",
        "code.redeemed",
        "code.locked",
        "access.viewed",
        "access.download.started",
        "access.download.completed",
        "access.download.aborted",
    }
    for event in events:
        assert event.share_id is not None
        assert event.purpose == purposes[event.share_id], f"{event.seq} {event.event_type}"
