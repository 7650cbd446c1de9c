"""The DPO workspace: who may open it, event detail, disclosures, breach scope; the patient's view."""

from __future__ import annotations

import datetime as dt
import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.helpers import (
    CLINICIAN,
    DPO,
    add_staff,
    create_share,
    issue_share,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)

DPO_PAGES = [
    "/dpo/events",
    "/dpo/events?patient_ref=PAT-0042",
    "/dpo/events/1",
    "/dpo/disclosures",
    "/dpo/disclosures?patient_ref=PAT-0042",
    "/dpo/breach",
    "/dpo/breach?ip_prefix=127.0.0.1&since=2020-01-01",
    "/dpo/export?format=csv",
    "/dpo/bundle",
]
PARTIAL_PAGES = [
    path for path in DPO_PAGES if not path.startswith(("/dpo/export", "/dpo/bundle", "/dpo/events/"))
]


async def test_dpo_pages_roles(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await add_staff(app, DPO, "dpo")

    for path in DPO_PAGES:
        anonymous = await client.get(path, follow_redirects=False)
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"] == "/staff/login"

    await sign_in(client, CLINICIAN)
    for path in DPO_PAGES:
        assert (await client.get(path)).status_code == 403, path
        assert (await client.get(path, headers={"HX-Request": "true"})).status_code == 403, path

    client.cookies.clear()
    await sign_in(client, DPO)
    for path in DPO_PAGES:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.text[:300])
    for path in PARTIAL_PAGES:
        partial = await client.get(path, headers={"HX-Request": "true"})
        assert partial.status_code == 200, path
        assert "<html" not in partial.text
        assert partial.headers["vary"] == "HX-Request"


async def test_event_detail_page(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client, recipient_name="Dr. Ines Carvalho")
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)

    listing = await client.get(f"/dpo/events?share_id={share['id']}")
    seq = re.search(r'href="/dpo/events/(\d+)"', listing.text)
    assert seq
    page = await client.get(f"/dpo/events/{seq.group(1)}")
    assert page.status_code == 200
    assert page.text.count("<h1") == 1
    assert "share.created" in page.text
    assert "Dr. Ines Carvalho" in page.text
    assert "Wound healing progress" in page.text
    assert "Leaf hash" in page.text

    assert (await client.get("/dpo/events/999999")).status_code == 404


async def test_disclosure_report(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-7001")
    document_id = uploaded.json()["id"]
    opened = await create_share(
        client, headers, [document_id], profile="referrer", recipient_name="Dr. Ada Nwosu", purpose="Referral"
    )
    await create_share(
        client, headers, [document_id], profile="patient", recipient_name="Maren Solberg", purpose="Own copy"
    )
    await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-7002")
    assert (await redeem(client, opened.json()["access_code"])).status_code == 200
    client.cookies.clear()

    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)
    page = await client.get("/dpo/disclosures?patient_ref=PAT-7001")
    assert page.status_code == 200
    assert "2 shares of this patient" in page.text
    assert "Dr. Ada Nwosu" in page.text
    assert "Referring GP" in page.text
    assert "Referral" in page.text
    assert "Maren Solberg" in page.text
    assert "not opened" in page.text
    assert dt.datetime.now(dt.UTC).strftime("%Y-%m-%d") in page.text

    nothing = await client.get("/dpo/disclosures?patient_ref=PAT-7002", headers={"HX-Request": "true"})
    assert "was shared" in nothing.text


async def test_breach_scope(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, wanted = await issue_share(app, client, recipient_name="Northside Insurance Claims")
    await redeem(client, wanted["access_code"])
    await issue_share(app, client, recipient_name="Dr. Other Person")
    client.cookies.clear()
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)

    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    page = await client.get(f"/dpo/breach?recipient=northside&since={today}&until={today}")
    assert page.status_code == 200
    assert "code.redeemed" in page.text
    assert "Northside Insurance Claims" in page.text
    assert "Dr. Other Person" not in page.text
    assert re.search(r"Patients affected</dt><dd>1<", page.text)

    missing = await client.get(f"/dpo/breach?since={today}", headers={"HX-Request": "true"})
    assert missing.status_code == 400
    assert 'href="#recipient"' in missing.text


async def test_patient_page_lists_other_shares(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    document_id = uploaded.json()["id"]
    gp = await create_share(
        client, headers, [document_id], profile="referrer", recipient_name="Dr. Kwame Mensah"
    )
    patient = await create_share(
        client, headers, [document_id], profile="patient", recipient_name="Maren Solberg"
    )

    assert (await redeem(client, gp.json()["access_code"])).status_code == 200
    gp_page = await client.get("/access/share")
    assert "Who else received this report" not in gp_page.text
    client.cookies.clear()

    assert (await redeem(client, patient.json()["access_code"])).status_code == 200
    page = await client.get("/access/share")
    assert "Who else received this report" in page.text
    assert "Referring GP" in page.text
    assert "Dr. Kwame Mensah" not in page.text
    assert "not opened" not in page.text  # the GP opened it, so the time is shown
