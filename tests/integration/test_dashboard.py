"""The clinician's dashboard, the create-share dialog, policy limits, start times and four-eyes approval."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.access.service import GENERIC_DENIAL
from portal.app import create_app
from portal.errors import InvalidInput
from portal.models import Share, utcnow
from portal.security import codes
from portal.shares.service import parse_share_form
from tests.conftest import BASE_URL, csrf_from, make_settings
from tests.helpers import (
    CLINICIAN,
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

CODE_PATTERN = re.compile(r'data-testid="access-code">([0-9A-Z-]+)<')


async def signed_in_upload(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    patient_ref: str = "PAT-0042",
    title: str = "Wound healing",
) -> str:
    """Sign the clinician in, upload a report through the API and return its document id."""
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref=patient_ref, title=title)
    assert uploaded.status_code == 201, uploaded.text
    await sign_in(client, CLINICIAN)
    return str(uploaded.json()["id"])


async def share_from_page(client: AsyncTestClient[Litestar], document_id: str, **fields: str) -> Any:
    page = await client.get(f"/staff/documents/{document_id}")
    data = {"profile": "patient", "recipient_name": "Jan Nowak", "purpose": "Results", **fields}
    return await client.post(
        f"/staff/documents/{document_id}/shares", data={"_csrf_token": csrf_from(page.text), **data}
    )


async def poll(client: AsyncTestClient[Litestar], **filters: str) -> Any:
    token = csrf_from((await client.get("/staff")).text)
    return await client.post(
        "/staff", data={"_csrf_token": token, **filters}, headers={"HX-Request": "true", "x-csrftoken": token}
    )


async def share_count(app: Litestar) -> int:
    async with portal_of(app).transaction() as db:
        return int(await db.scalar(select(func.count()).select_from(Share)) or 0)


async def only_share(app: Litestar) -> Share:
    async with portal_of(app).transaction() as db:
        return (await db.scalars(select(Share))).one()


async def test_partial_is_table_only(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    created = await share_from_page(client, document_id)
    assert created.status_code == 201
    reference = (await only_share(app)).reference

    partial = await poll(client, patient_ref="PAT-0042", state="")
    assert partial.status_code == 200
    assert "HX-Request" in partial.headers["vary"]
    assert partial.text.lstrip().startswith('<div id="shares"')
    assert "<html" not in partial.text
    assert "<h1" not in partial.text
    assert 'hx-trigger="every 10s"' in partial.text
    assert reference in partial.text
    assert 'data-status="issued"' in partial.text


async def test_page_carries_vary_and_poll(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await signed_in_upload(app, client)
    token = csrf_from((await client.get("/staff")).text)

    page = await client.post("/staff", data={"_csrf_token": token, "patient_ref": "PAT-0042"})
    assert page.status_code == 200
    assert "HX-Request" in page.headers["vary"]
    assert page.text.count("<h1") == 1
    assert 'id="shares"' in page.text
    assert "/static/vendor/htmx-2.0.11.min.js" in page.text
    assert "PAT-0042" not in str(page.url)


async def test_filters_by_patient_and_state(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    await share_from_page(client, document_id)
    reference = (await only_share(app)).reference

    assert reference not in (await poll(client, patient_ref="PAT-9999")).text
    assert reference not in (await poll(client, state="revoked")).text
    assert reference in (await poll(client, state="issued")).text

    share = await only_share(app)
    confirm = await client.get(f"/staff/shares/{share.id}/revoke")
    assert confirm.status_code == 200
    assert "Yes, revoke share" in confirm.text
    assert (await only_share(app)).revoked_at is None, "the confirmation page changes nothing"
    revoked = await client.post(
        f"/staff/shares/{share.id}/revoke", data={"_csrf_token": csrf_from(confirm.text)}
    )
    assert revoked.status_code == 200
    assert reference in (await poll(client, state="revoked")).text
    assert reference not in (await poll(client, state="issued")).text


async def test_unknown_state_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await signed_in_upload(app, client)
    answer = await poll(client, state="everything")
    assert answer.status_code == 400
    assert "State &#39;everything&#39; is unknown" in answer.text


async def test_expiring_soon_and_failed_flags(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    created = await share_from_page(client, document_id, expiry_days="3")
    code = CODE_PATTERN.search(created.text)
    assert code

    # Same locator, valid check character, wrong secret: one failed attempt on this share.
    wrong = codes.display(codes.with_locator(codes.locator_of(codes.normalise(code.group(1)))))
    assert (await redeem(client, wrong)).status_code == 400
    assert 'data-status="expiring_soon"' not in (await poll(client)).text
    with time_machine.travel(utcnow() + dt.timedelta(hours=25), tick=True):
        # The staff session has ended by then: the poll sends htmx to the sign-in page.
        ended = await poll(client)
        assert ended.status_code == 401
        assert ended.headers["hx-redirect"] == "/staff/login"
        await sign_in(client, CLINICIAN)
        partial = (await poll(client)).text
    assert 'data-status="failed_attempts"' in partial
    assert 'data-status="expiring_soon"' in partial
    assert reference_row(partial, (await only_share(app)).reference)


def reference_row(html: str, reference: str) -> bool:
    return f'data-share="{reference}"' in html


async def test_expiry_above_policy_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)

    too_long = await share_from_page(client, document_id, expiry_days="15")
    assert too_long.status_code == 400
    assert "above the profile&#39;s maximum of 14" in too_long.text
    too_many = await share_from_page(client, document_id, max_downloads="4")
    assert too_many.status_code == 400
    assert "above the profile&#39;s maximum of 3" in too_many.text
    zero = await share_from_page(client, document_id, expiry_days="0")
    assert zero.status_code == 400
    negative = await share_from_page(client, document_id, expiry_days="-3")
    assert negative.status_code == 400
    assert "Expiry (days) -3 is below 1" in negative.text
    assert await share_count(app) == 0

    shorter = await share_from_page(client, document_id, expiry_days="3", max_downloads="1")
    assert shorter.status_code == 201
    share = await only_share(app)
    assert share.max_downloads == 1
    lifetime = share.expires_at - share.created_at
    assert dt.timedelta(days=3) - dt.timedelta(seconds=5) < lifetime <= dt.timedelta(days=3)


async def test_form_parser_rejects_longer_expiry(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    # The API and the pages share this parser, so the limit holds for clinic systems too.
    document_id = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(InvalidInput) as rejected:
        parse_share_form(portal_of(app), [document_id], "insurer", "Claims desk", "Claim", expiry_days=99)
    assert rejected.value.field == "expiry_days"
    with pytest.raises(InvalidInput) as too_many:
        parse_share_form(portal_of(app), [document_id], "colleague", "Dr B", "Opinion", max_downloads=2)
    assert too_many.value.field == "max_downloads"


async def test_not_before_refuses_then_works(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    start = (utcnow() + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    created = await share_from_page(client, document_id, not_before=start, expiry_days="1")
    assert created.status_code == 201, created.text
    code = CODE_PATTERN.search(created.text)
    assert code
    share = await only_share(app)
    assert share.not_before is not None
    assert share.expires_at - share.not_before == dt.timedelta(days=1), "the lifetime counts from the start"

    early = await redeem(client, code.group(1))
    unknown = await redeem(client, codes.display(codes.generate_code()))
    assert early.status_code == unknown.status_code == 400
    assert GENERIC_DENIAL.split(".")[0] in early.text
    assert strip_tokens(early.text) == strip_tokens(unknown.text), (
        "a share not open yet looks like any refusal"
    )
    assert 'data-status="not_yet_open"' in (await poll(client)).text

    with time_machine.travel(share.not_before + dt.timedelta(minutes=1), tick=True):
        later = await redeem(client, code.group(1))
    assert later.status_code == 200
    assert str(later.url).endswith("/access/share")


async def test_past_start_time(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    long_ago = await share_from_page(client, document_id, not_before="2020-01-01T09:00")
    assert long_ago.status_code == 400
    assert "Start time 2020-01-01 09:00 UTC is in the past" in long_ago.text
    assert await share_count(app) == 0

    earlier_today = (utcnow() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    created = await share_from_page(client, document_id, not_before=earlier_today)
    assert created.status_code == 201, created.text
    assert (await only_share(app)).not_before is None


async def test_staff_times_in_clinic_time_zone(tmp_path: Path, database_url: str) -> None:
    app = create_app(
        make_settings(tmp_path / "data", database_url, PORTAL_TIMEZONE="Europe/Berlin"), pdf_workers=1
    )
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        document_id = await signed_in_upload(app, client)
        form = await client.get(f"/staff/documents/{document_id}")
        assert "Time in Europe/Berlin." in form.text

        # The start time is typed in Berlin time, as the form's hint states, and stored in UTC.
        local_start = (
            (utcnow() + dt.timedelta(days=2))
            .astimezone(berlin)
            .replace(hour=9, minute=30, second=0, microsecond=0, tzinfo=None)
        )
        created = await share_from_page(
            client, document_id, not_before=local_start.strftime("%Y-%m-%dT%H:%M")
        )
        assert created.status_code == 201, created.text
        share = await only_share(app)
        assert share.not_before == local_start.replace(tzinfo=berlin).astimezone(dt.UTC)
        # The slip is for the recipient, so it writes the date out in words, in the clinic's time zone.
        start_text = (
            f"{local_start.day} {local_start:%B %Y} at 09:30 {local_start.replace(tzinfo=berlin).tzname()}"
        )
        # The slip states when the code starts to work, on the page and in the PDF.
        assert f'<p data-testid="slip-start">The code works from {start_text}.</p>' in created.text
        code = CODE_PATTERN.search(created.text)
        assert code
        slip = await client.post(
            f"/staff/shares/{share.id}/slip",
            data={"_csrf_token": csrf_from(created.text), "code": code.group(1)},
        )
        assert slip.status_code == 200
        slip_text = pypdfium2.PdfDocument(slip.content)[0].get_textpage().get_text_range()
        assert f"The code works from {start_text}." in " ".join(slip_text.split())

        # Staff pages show times in Berlin time with the zone's abbreviation.
        expiry = share.expires_at.astimezone(berlin)
        expiry_text = f"{expiry:%Y-%m-%d %H:%M} {expiry.tzname()}"
        share_page = await client.get(f"/staff/shares/{share.id}")
        assert expiry_text in share_page.text
        assert (
            f"{local_start:%Y-%m-%d} 09:30 {local_start.replace(tzinfo=berlin).tzname()}" in share_page.text
        )
        assert " UTC" not in share_page.text
        assert expiry_text in (await poll(client)).text


def strip_tokens(html: str) -> str:
    return re.sub(r'value="[^"]*"', 'value=""', html)


async def test_start_too_far_ahead_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    start = (utcnow() + dt.timedelta(days=45)).strftime("%Y-%m-%dT%H:%M")
    answer = await share_from_page(client, document_id, not_before=start)
    assert answer.status_code == 400
    assert "more than 30 days ahead" in answer.text
    assert await share_count(app) == 0


async def test_api_share_states_awaiting_approval(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    document_ids = [uploaded.json()["id"]]

    insurer = await create_share(client, headers, document_ids, profile="insurer")
    patient = await create_share(client, headers, document_ids, profile="patient")

    assert insurer.status_code == 201, insurer.text
    assert insurer.json()["status"] == "awaiting_approval"
    assert patient.status_code == 201, patient.text
    assert patient.json()["status"] == "issued"


async def test_four_eyes_approval(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    await add_staff(app, SECOND_CLINICIAN, "clinician")

    created = await share_from_page(client, document_id, profile="insurer", recipient_name="Claims desk")
    assert created.status_code == 201
    assert 'data-testid="awaiting-approval"' in created.text
    assert "The code works once a second member of the clinic&#39;s staff has approved the share." in created.text
    code = CODE_PATTERN.search(created.text)
    assert code
    share = await only_share(app)
    assert share.approval_required

    refused = await redeem(client, code.group(1))
    assert refused.status_code == 400
    assert GENERIC_DENIAL.split(".")[0] in refused.text

    share_page = await client.get(f"/staff/shares/{share.id}")
    assert "Approve and release the code" not in share_page.text, "the creator sees no approve button"
    assert (
        '<span class="status status-awaiting_approval" data-status="awaiting_approval">awaiting approval</span>'
        in (share_page.text)
    )
    own = await client.post(
        f"/staff/shares/{share.id}/approve", data={"_csrf_token": csrf_from(share_page.text)}
    )
    assert own.status_code == 400
    assert "a second clinician must approve it" in own.text
    assert (await only_share(app)).approved_at is None

    client.cookies.clear()
    await sign_in(client, SECOND_CLINICIAN)
    colleague_page = await client.get(f"/staff/shares/{share.id}")
    assert "Approve and release the code" in colleague_page.text
    approved = await client.post(
        f"/staff/shares/{share.id}/approve", data={"_csrf_token": csrf_from(colleague_page.text)}
    )
    assert approved.status_code == 200
    stored = await only_share(app)
    assert stored.approved_at is not None
    assert stored.approved_by is not None and stored.approved_by != stored.created_by
    # Both halves of the four-eyes rule are named on the share's page.
    approved_page = await client.get(f"/staff/shares/{share.id}")
    assert f"<dt>Created by</dt><dd>{CLINICIAN}</dd>" in approved_page.text
    assert f"<dt>Approved by</dt><dd>{SECOND_CLINICIAN}</dd>" in approved_page.text

    opened = await redeem(client, code.group(1))
    assert opened.status_code == 200
    assert str(opened.url).endswith("/access/share")


async def test_reissue_keeps_approval_state(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    await add_staff(app, SECOND_CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    created = await create_share(client, headers, [uploaded.json()["id"]], profile="insurer")
    share_id = created.json()["id"]

    waiting = await client.post(f"/api/v1/shares/{share_id}/reissue", headers=headers)
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["status"] == "awaiting_approval", "a reissue does not release a waiting share"
    assert (await redeem(client, waiting.json()["access_code"])).status_code == 400

    await sign_in(client, SECOND_CLINICIAN)
    share_page = await client.get(f"/staff/shares/{share_id}")
    approved = await client.post(
        f"/staff/shares/{share_id}/approve", data={"_csrf_token": csrf_from(share_page.text)}
    )
    assert approved.status_code == 200, approved.text
    client.cookies.clear()
    reissued = await client.post(f"/api/v1/shares/{share_id}/reissue", headers=headers)
    assert reissued.status_code == 200, reissued.text
    # The approval covers the recipient and the reports, which a reissue keeps; only the code is new.
    assert reissued.json()["status"] == "issued"
    assert (await redeem(client, waiting.json()["access_code"])).status_code == 400, "the old code is dead"
    assert (await redeem(client, reissued.json()["access_code"])).status_code == 200


async def test_dialog_builds_referral_package(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    first = await signed_in_upload(app, client, title="Before treatment")
    headers = await token_for(app, CLINICIAN, "clinician")
    second = (
        await upload_pdf(client, headers, simple_pdf(2), patient_ref="PAT-0042", title="After treatment")
    ).json()["id"]
    other = (
        await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-7777", title="Other patient")
    ).json()["id"]

    dialog = await client.get(f"/staff/shares/new?document={first}")
    assert dialog.status_code == 200
    assert "After treatment" in dialog.text
    assert "Other patient" not in dialog.text, "the dialog offers only the same patient's reports"

    fields = {
        "_csrf_token": csrf_from(dialog.text),
        "anchor": first,
        "profile": "referrer",
        "recipient_name": "Dr Amir Haddad",
        "recipient_org": "Northside Practice",
        "purpose": "Referral",
    }
    mixed = await client.post("/staff/shares", data={**fields, "document_ids": [first, other]})
    assert mixed.status_code == 400
    assert "different patients" in mixed.text
    assert await share_count(app) == 0

    package = await client.post("/staff/shares", data={**fields, "document_ids": [first, second]})
    assert package.status_code == 201, package.text
    share = await only_share(app)
    assert share.recipient_org == "Northside Practice"
    assert sorted(str(link.document_id) for link in share.documents) == sorted([first, second])
    listed = (await poll(client)).text
    assert '<span class="muted">Referring GP · <bdi>Northside Practice</bdi></span>' in listed


async def test_reissue_needs_confirmation(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    created = await share_from_page(client, document_id)
    old_code = CODE_PATTERN.search(created.text)
    assert old_code
    share = await only_share(app)

    confirm = await client.get(f"/staff/shares/{share.id}/reissue")
    assert confirm.status_code == 200
    assert (await only_share(app)).reissue_count == 0
    reissued = await client.post(
        f"/staff/shares/{share.id}/reissue", data={"_csrf_token": csrf_from(confirm.text)}
    )
    assert reissued.status_code == 200
    new_code = CODE_PATTERN.search(reissued.text)
    assert new_code and new_code.group(1) != old_code.group(1)
    assert (await only_share(app)).reissue_count == 1


async def test_reissue_keeps_the_chosen_lifetime(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await signed_in_upload(app, client)
    await share_from_page(client, document_id, expiry_days="3")
    share = await only_share(app)
    assert share.lifetime_days == 3

    confirm = await client.get(f"/staff/shares/{share.id}/reissue")
    assert "The new code works for 3 days from now." in confirm.text
    before = utcnow()
    reissued = await client.post(
        f"/staff/shares/{share.id}/reissue", data={"_csrf_token": csrf_from(confirm.text)}
    )
    assert reissued.status_code == 200
    assert "New code issued" in reissued.text

    # The patient profile allows 14 days; the clinician chose 3, and the new code gets 3 again.
    expires_at = (await only_share(app)).expires_at
    assert before + dt.timedelta(days=3) <= expires_at <= utcnow() + dt.timedelta(days=3)
