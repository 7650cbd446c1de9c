"""The clinician's and DPO's pages without JavaScript: forms, CSRF, error messages, the one-time code page."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.errors import InvalidInput
from portal.form_ids import sent_once
from portal.models import Share
from tests.conftest import csrf_from
from tests.helpers import (
    CLINICIAN,
    DPO,
    add_staff,
    portal_of,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)
from tests.unit.pdf.helpers import obfuscated_javascript


async def test_upload_share_revoke_through_forms(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    dashboard = await client.get("/staff")
    token = csrf_from(dashboard.text)

    uploaded = await client.post(
        "/staff/documents",
        data={
            "_csrf_token": token,
            "title": "Scar review",
            "patient_ref": "PAT-77",
            "report_date": "2026-12-01",
        },
        files={"file": ("scar.pdf", simple_pdf(2), "application/pdf")},
        headers={"x-csrftoken": token},
    )
    assert uploaded.status_code == 200
    assert "Scar review" in uploaded.text
    assert "PAT-77" in uploaded.text
    document_path = str(uploaded.url.path)
    assert document_path.startswith("/staff/documents/")

    created = await client.post(
        f"{document_path}/shares",
        data={
            "_csrf_token": csrf_from(uploaded.text),
            "profile": "referrer",
            "recipient_name": "Dr. Αλέξανδρος Παππάς",
            "purpose": "Referral",
        },
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    code = re.search(r'data-testid="access-code">([0-9A-Z-]+)<', created.text)
    assert code
    share_link = re.search(r'href="(/staff/shares/[0-9a-f-]+)"', created.text)
    assert share_link

    share_page = await client.get(share_link.group(1))
    assert "issued" in share_page.text
    assert code.group(1) not in share_page.text  # the code is shown once only

    revoked = await client.post(
        f"{share_link.group(1)}/revoke", data={"_csrf_token": csrf_from(share_page.text)}
    )
    assert revoked.status_code == 200
    assert "revoked" in revoked.text
    assert (await redeem(client, code.group(1))).status_code == 400


async def test_upload_errors_name_the_problem(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    token = csrf_from((await client.get("/staff")).text)

    html = b"<html><body>not a report</body></html>"
    rejected = await client.post(
        "/staff/documents",
        data={"_csrf_token": token, "title": "Bad", "patient_ref": "PAT-1"},
        files={"file": ("report.pdf", html, "application/pdf")},
        headers={"x-csrftoken": token},
    )
    assert rejected.status_code == 422
    assert "There is a problem" in rejected.text

    named = await client.post(
        "/staff/documents",
        data={"_csrf_token": token, "title": "Bad", "patient_ref": "Jane Doe"},
        files={"file": ("report.pdf", simple_pdf(), "application/pdf")},
        headers={"x-csrftoken": token},
    )
    assert named.status_code == 400
    assert "Patient reference &#39;Jane Doe&#39; is invalid" in named.text


async def test_post_without_csrf_rejected(client: AsyncTestClient[Litestar]) -> None:
    answer = await client.post("/access", data={"code": "K7M2-9QDX-4HTV-B8NR-W3EA"})
    assert answer.status_code == 403
    assert "Reload the page" in answer.text

    cross_site = await client.post("/access", data={"code": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403


async def test_dpo_filters_with_htmx(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, DPO, "dpo")
    signed_in = await sign_in(client, DPO)
    assert signed_in.headers["location"] == "/dpo/events"

    page = await client.get("/dpo/events")
    assert page.status_code == 200
    assert "staff.created" in page.text
    assert "<html" in page.text

    token = csrf_from(page.text)
    partial = await client.post(
        "/dpo/events",
        data={"_csrf_token": token, "event_type": "staff.login"},
        headers={"HX-Request": "true"},
    )
    assert partial.status_code == 200
    assert "<html" not in partial.text
    assert "staff.login" in partial.text
    assert "staff.created" not in partial.text
    assert partial.headers["vary"] == "HX-Request"

    invalid = await client.post(
        "/dpo/events", data={"_csrf_token": token, "event_type": "nope"}, headers={"HX-Request": "true"}
    )
    assert invalid.status_code == 400
    assert "&#39;nope&#39; is not an event type" in invalid.text

    export = await client.post("/dpo/export", data={"_csrf_token": token, "format": "csv"})
    assert export.status_code == 200
    assert export.text.startswith("seq,time,event_type")

    forbidden = await client.get("/staff")
    assert forbidden.status_code == 403


async def test_resent_share_form_creates_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    token = csrf_from((await client.get("/staff")).text)
    uploaded = await client.post(
        "/staff/documents",
        data={"_csrf_token": token, "title": "Reload test", "patient_ref": "PAT-5"},
        files={"file": ("r.pdf", simple_pdf(), "application/pdf")},
        headers={"x-csrftoken": token},
    )
    form_id = re.search(r'name="form_id" value="([^"]+)"', uploaded.text)
    assert form_id
    fields = {
        "_csrf_token": csrf_from(uploaded.text),
        "form_id": form_id.group(1),
        "profile": "patient",
        "recipient_name": "Jan Nowak",
        "purpose": "Results",
    }
    first = await client.post(f"{uploaded.url.path}/shares", data=fields)
    assert first.status_code == 201

    # What a browser sends when the clinician reloads the code page.
    again = await client.post(f"{uploaded.url.path}/shares", data=fields)
    assert again.status_code == 400
    assert "This form was sent already" in again.text
    assert 'data-testid="access-code"' not in again.text

    async with portal_of(app).transaction() as db:
        shares = (await db.scalars(select(Share.id))).all()
    assert len(shares) == 1


async def test_form_id_spent_past_midnight(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    created = []
    with time_machine.travel(dt.datetime(2030, 1, 1, 23, 59, 50, tzinfo=dt.UTC)):
        async with sent_once(portal, "reloaded", "test-form", "Sent already.", field="label"):
            created.append("first")

    # The counter's day window has changed, but the id stays spent.
    next_day = dt.datetime(2030, 1, 2, 0, 0, 10, tzinfo=dt.UTC)
    with time_machine.travel(next_day), pytest.raises(InvalidInput) as resent:
        async with sent_once(portal, "reloaded", "test-form", "Sent already.", field="label"):
            created.append("second")
    assert resent.value.message == "Sent already."
    assert resent.value.field == "label"
    assert created == ["first"]

    # Without an id the form is not guarded.
    for _send in range(2):
        async with sent_once(portal, None, "test-form", "Sent already.", field="label"):
            created.append("unguarded")
    assert created == ["first", "unguarded", "unguarded"]


async def test_removed_content_named_in_page_language(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, obfuscated_javascript())
    assert uploaded.status_code == 201, uploaded.text
    await sign_in(client, CLINICIAN)

    english = await client.get(f"/staff/documents/{uploaded.json()['id']}")
    assert "Removed from the file for safety:" in english.text
    assert "automatic actions" in english.text

    german = await client.get(f"/staff/documents/{uploaded.json()['id']}?lang=de")
    removed = german.text.split("Aus Sicherheitsgründen aus der Datei entfernt:", 1)[1].split("</p>", 1)[0]
    assert "automatische Aktionen" in removed
    assert "JavaScript" in removed
    assert "automatic actions" not in removed
