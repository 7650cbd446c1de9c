"""The DPO workspace: who may open it, event detail, disclosures, breach scope; the patient's view."""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import re
import uuid
from urllib.parse import quote

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.dpo import controllers
from portal.security import codes
from tests.conftest import csrf_from
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

# Plain pages: no filter, or only a share id, which names no one by itself.
DPO_PAGES = [
    "/dpo/events",
    f"/dpo/events?share_id={uuid.UUID(int=7)}",
    "/dpo/events/1",
    "/dpo/disclosures",
    "/dpo/breach",
    "/dpo/verify",
]
# Filter submissions: the filters travel in the POST body.
DPO_FORMS = [
    ("/dpo/events", {"patient_ref": "PAT-0042"}),
    ("/dpo/events", {"patient_ref": "PAT-0042", "before": "5"}),
    ("/dpo/disclosures", {"patient_ref": "PAT-0042"}),
    ("/dpo/breach", {"ip_prefix": "127.0.0.1", "since": "2020-01-01"}),
    ("/dpo/export", {"patient_ref": "PAT-0042", "format": "csv"}),
    ("/dpo/bundle", {"patient_ref": "PAT-0042"}),
    ("/dpo/verify", {}),
]
HTMX = {"HX-Request": "true"}
PARTIAL_FORMS = [(path, fields) for path, fields in DPO_FORMS if path not in ("/dpo/export", "/dpo/bundle")]


def hidden_fields(html: str, action: str) -> dict[str, str]:
    """Return the hidden fields of the POST form with ``action``, as a browser would send them."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', html, re.DOTALL)
    assert form, f"no POST form for {action}"
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))


async def test_dpo_pages_roles(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await add_staff(app, DPO, "dpo")

    token = csrf_from((await client.get("/staff/login")).text)
    for path in DPO_PAGES:
        anonymous = await client.get(path, follow_redirects=False)
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"] == "/staff/login"
    for path, fields in DPO_FORMS:
        anonymous = await client.post(path, data={"_csrf_token": token, **fields}, follow_redirects=False)
        assert anonymous.status_code == 303, path
        assert anonymous.headers["location"] == "/staff/login"

    await sign_in(client, CLINICIAN)
    token = csrf_from((await client.get("/staff")).text)
    for path in DPO_PAGES:
        assert (await client.get(path)).status_code == 403, path
        assert (await client.get(path, headers=HTMX)).status_code == 403, path
    for path, fields in DPO_FORMS:
        assert (await client.post(path, data={"_csrf_token": token, **fields})).status_code == 403, path

    client.cookies.clear()
    await sign_in(client, DPO)
    page = await client.get("/dpo/events")
    token = csrf_from(page.text)
    for path in DPO_PAGES:
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
    for path, fields in DPO_FORMS:
        answer = await client.post(path, data={"_csrf_token": token, **fields})
        assert answer.status_code == 200, (path, answer.text[:300])
    for path, fields in PARTIAL_FORMS:
        partial = await client.post(path, data={"_csrf_token": token, **fields}, headers=HTMX)
        assert partial.status_code == 200, path
        assert "<html" not in partial.text
        assert partial.headers["vary"] == "HX-Request"

    for path, fields in DPO_FORMS:
        unsigned = await client.post(path, data=fields)
        assert unsigned.status_code == 403, path
        assert "Reload the page" in unsigned.text
        cross_site = await client.post(
            path, data={"_csrf_token": token, **fields}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status_code == 403, path


async def test_filters_in_address_refused(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)

    for path in ("/dpo/events", "/dpo/disclosures", "/dpo/breach"):
        refused = await client.get(f"{path}?patient_ref=PAT-0042")
        assert refused.status_code == 400, path
        assert "Filters in the address are not used (patient_ref)" in refused.text
        assert 'href="#filters"' in refused.text
        assert 'id="filters"' in refused.text
    older = await client.get("/dpo/events?before=10", headers={"HX-Request": "true"})
    assert older.status_code == 400
    assert "(before)" in older.text
    breach = await client.get("/dpo/breach?share_id=00000000-0000-0000-0000-000000000007")
    assert breach.status_code == 400

    for path in ("/dpo/export?format=csv&patient_ref=PAT-0042", "/dpo/bundle?patient_ref=PAT-0042"):
        assert (await client.get(path)).status_code == 405, path


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
    token = csrf_from((await client.get("/dpo/disclosures")).text)
    page = await client.post("/dpo/disclosures", data={"_csrf_token": token, "patient_ref": "PAT-7001"})
    assert page.status_code == 200
    assert "2 shares of this patient" in page.text
    assert "Dr. Ada Nwosu" in page.text
    assert "Referring GP" in page.text
    assert "Referral" in page.text
    assert "Maren Solberg" in page.text
    assert "not opened" in page.text
    assert dt.datetime.now(dt.UTC).strftime("%Y-%m-%d") in page.text
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 2
    spent, waiting = sorted(rows, key=lambda row: "Dr. Ada Nwosu" not in row)
    assert 'data-status="opened"' in spent
    assert "until " not in spent, "a used-up code is not offered as valid until its expiry"
    assert 'data-status="issued"' in waiting
    assert "until " in waiting

    nothing = await client.post(
        "/dpo/disclosures",
        data={"_csrf_token": token, "patient_ref": "PAT-7002"},
        headers={"HX-Request": "true"},
    )
    assert "was shared" in nothing.text
    assert "<html" not in nothing.text

    empty = await client.post("/dpo/disclosures", data={"_csrf_token": token, "patient_ref": " "})
    assert empty.status_code == 400
    assert "Enter a patient reference." in empty.text
    assert "<html" in empty.text


async def test_breach_scope(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, wanted = await issue_share(app, client, recipient_name="Northside Insurance Claims")
    await redeem(client, wanted["access_code"])
    await issue_share(app, client, recipient_name="Dr. Other Person")
    client.cookies.clear()
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)

    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    token = csrf_from((await client.get("/dpo/breach")).text)
    fields = {"_csrf_token": token, "recipient": "northside", "since": today, "until": today}
    page = await client.post("/dpo/breach", data=fields)
    assert page.status_code == 200
    assert "code.redeemed" in page.text
    assert "Northside Insurance Claims" in page.text
    assert "Dr. Other Person" not in page.text
    assert re.search(r"Patients affected</dt><dd>1<", page.text)

    missing = await client.post(
        "/dpo/breach", data={"_csrf_token": token, "since": today}, headers={"HX-Request": "true"}
    )
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


SECRET_REF = "PAT-LEAK-9031"


async def test_patient_ref_stays_out_of_addresses_and_logs(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    sent: list[str] = []

    async def remember(request: httpx.Request) -> None:
        sent.append(str(request.url))

    client.event_hooks["request"].append(remember)
    # Two events a page, so the patient's events span several pages.
    monkeypatch.setattr(controllers, "PAGE_SIZE", 2)

    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref=SECRET_REF)
    document_id = uploaded.json()["id"]
    first = await create_share(
        client, headers, [document_id], profile="referrer", recipient_name="Dr. Ada Nwosu"
    )
    await create_share(client, headers, [document_id], recipient_name="Maren Solberg")
    await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-OTHER-1")
    assert (await redeem(client, first.json()["access_code"])).status_code == 200
    client.cookies.clear()

    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)
    token = csrf_from((await client.get("/dpo/events")).text)

    # The search without JavaScript returns the whole page, then htmx pages through the older events.
    page = await client.post("/dpo/events", data={"_csrf_token": token, "patient_ref": SECRET_REF})
    assert page.status_code == 200
    assert "<html" in page.text
    assert f'value="{SECRET_REF}"' in page.text, "the search form keeps the reference it searched for"
    seen = [int(seq) for seq in re.findall(r'href="/dpo/events/(\d+)"', page.text)]
    assert len(seen) == 2
    html = page.text
    for _page in range(10):
        if "Older events" not in html:
            break
        older = await client.post("/dpo/events", data=hidden_fields(html, "/dpo/events"), headers=HTMX)
        assert older.status_code == 200
        assert "<html" not in older.text
        html = older.text
        seen += [int(seq) for seq in re.findall(r'href="/dpo/events/(\d+)"', html)]
    assert "Older events" not in html, "the pages end"
    assert seen == sorted(seen, reverse=True), "newest first, no event twice"
    assert len(seen) == 4, f"an upload, two shares and a redemption, not {seen}"

    # Both exports and the bundle are sent from the export form's hidden fields.
    fields = hidden_fields(page.text, "/dpo/export")
    assert fields["patient_ref"] == SECRET_REF
    csv_export = await client.post("/dpo/export", data={**fields, "format": "csv"})
    assert csv_export.headers["content-disposition"] == 'attachment; filename="access-log.csv"'
    jsonl_export = await client.post("/dpo/export", data={**fields, "format": "jsonl"})
    assert jsonl_export.headers["content-disposition"] == 'attachment; filename="access-log.jsonl"'
    exported = [json.loads(line)["seq"] for line in jsonl_export.text.splitlines()]
    assert sorted(exported, reverse=True) == seen, "the export holds exactly the events the pages showed"
    assert len(csv_export.text.splitlines()) == len(seen) + 1
    bundle = await client.post("/dpo/bundle", data=fields)
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "application/zip"

    recorded = await client.post(
        "/dpo/events", data={"_csrf_token": token, "event_type": "export.created"}, headers=HTMX
    )
    assert recorded.text.count("export.created") >= 2
    assert SECRET_REF not in recorded.text, "the export record says only that a reference was given"

    leaked = [url for url in sent if SECRET_REF in url or quote(SECRET_REF) in url]
    assert not leaked, f"patient reference in request addresses: {leaked}"
    assert any(url.endswith("/dpo/export") for url in sent)
    application_log = caplog.text + json.dumps([record.__dict__ for record in caplog.records], default=str)
    assert SECRET_REF not in application_log


async def test_search_by_share_reference(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, searched = await issue_share(app, client, recipient_name="Dr. Ines Carvalho")
    await issue_share(app, client, recipient_name="Dr. Other Person")
    client.cookies.clear()
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)
    token = csrf_from((await client.get("/dpo/events")).text)

    # The reference as a clinician or patient reads it off the slip, typed in lower case.
    found = await client.post(
        "/dpo/events", data={"_csrf_token": token, "share_id": searched["reference"].lower()}
    )
    assert found.status_code == 200
    assert "share.created" in found.text
    assert searched["id"] in found.text
    assert found.text.count('href="/dpo/events/') == 1, "only the events of that share"
    # The table names the share by its reference and the API token by its owner, each id in a title.
    assert f'title="{searched["id"]}">{searched["reference"]}<' in found.text
    assert f"API token of {CLINICIAN}" in found.text

    # Without the "S-", and with a space in the middle, the same share is found.
    bare = searched["reference"].removeprefix("S-")
    for typed in (bare, f"{bare[:4]} {bare[4:]}".lower()):
        again = await client.post("/dpo/events", data={"_csrf_token": token, "share_id": typed})
        assert again.status_code == 200, typed
        assert again.text.count('href="/dpo/events/') == 1, typed

    unknown = await client.post("/dpo/events", data={"_csrf_token": token, "share_id": "S-ZZZZZZZZ"})
    assert unknown.status_code == 400
    assert "No share has the reference S-ZZZZZZZZ." in unknown.text

    malformed = await client.post("/dpo/events", data={"_csrf_token": token, "share_id": "slip 12"})
    assert malformed.status_code == 400
    assert "is neither a share reference nor a share id" in malformed.text


async def test_event_table_names_system_and_details(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await issue_share(app, client)
    assert (await redeem(client, codes.display(codes.generate_code()))).status_code == 400
    client.cookies.clear()
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)
    token = csrf_from((await client.get("/dpo/events")).text)

    page = await client.post("/dpo/events", data={"_csrf_token": token})
    assert page.status_code == 200
    # The portal's own events name it, and details read as names and values, the JSON kept in the title.
    assert '<span title="system">System (the portal itself)</span>' in page.text
    assert '<span title="recipient:unknown">Someone with an unknown code</span>' in page.text
    assert (
        'title="{&#34;reason&#34;:&#34;unknown&#34;}"><span class="detail">reason: unknown code</span>'
        in page.text
    )

    await client.get("/dpo/events?lang=de")
    german = await client.post("/dpo/events", data={"_csrf_token": token})
    assert "Grund: unbekannter Code" in german.text


@pytest.mark.parametrize("language", ["en", "de", "fr"])
async def test_event_types_sorted_by_label(
    app: Litestar, client: AsyncTestClient[Litestar], language: str
) -> None:
    await add_staff(app, DPO, "dpo")
    await sign_in(client, DPO)

    page = await client.get("/dpo/events", headers={"Accept-Language": language})

    assert page.status_code == 200
    select = re.search(r'<select id="event_type" name="event_type">(.*?)</select>', page.text, re.DOTALL)
    assert select is not None
    labels = [
        html.unescape(label)
        for label in re.findall(r'<option value="[a-z_.]+"[^>]*>([^<]+)</option>', select.group(1))
    ]
    assert len(labels) > 20
    assert labels == sorted(labels, key=str.casefold)
