"""Second factor, reissue, slip and flood control around a share's access code."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
import shutil
import uuid
import zoneinfo
from pathlib import Path

import httpx
import pikepdf
import pypdfium2
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from portal.app import create_app
from portal.config import REPOSITORY_ROOT, Settings
from portal.models import AccessEvent, AuthSession, DataKey, Share, utcnow
from portal.security import codes
from tests.conftest import BASE_URL, csrf_from, make_settings
from tests.helpers import (
    CLINICIAN,
    create_share,
    issue_share,
    portal_of,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)


async def post_birth_date_share(
    app: Litestar, client: AsyncTestClient[Litestar], date_of_birth: str = "1951-03-14"
) -> httpx.Response:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    return await client.post(
        "/api/v1/shares",
        headers=headers,
        json={
            "document_ids": [uploaded.json()["id"]],
            "profile": "patient_dob",
            "recipient_name": "Maria Keller",
            "purpose": "Results",
            "date_of_birth": date_of_birth,
        },
    )


async def share_with_birth_date(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, str]:
    answer = await post_birth_date_share(app, client)
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def redeem_with_birth_date(
    client: AsyncTestClient[Litestar], code: str, date_of_birth: str
) -> httpx.Response:
    token = csrf_from((await client.get("/access")).text)
    return await client.post(
        "/access", data={"code": code, "date_of_birth": date_of_birth, "_csrf_token": token}
    )


async def share_count(app: Litestar) -> int:
    async with portal_of(app).transaction() as db:
        return len((await db.scalars(select(Share.id))).all())


async def test_birth_date_required_at_creation(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    answer = await create_share(client, headers, [uploaded.json()["id"]], profile="patient_dob")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(
        "The profile 'Patient, with date-of-birth check' asks"
    )
    assert answer.json()["error"]["field"] == "date_of_birth"


async def test_birth_date_asked_then_checked(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    share = await share_with_birth_date(app, client)
    code = share["access_code"]

    asked = await redeem(client, code)
    assert asked.status_code == 200
    assert "Enter your date of birth as well" in asked.text
    assert 'id="date_of_birth"' in asked.text
    # Asking for the second factor is a step of its own, not an error.
    assert "error-summary" not in asked.text
    assert "<title>Error:" not in asked.text

    token = csrf_from(asked.text)
    wrong = await client.post(
        "/access", data={"code": code, "date_of_birth": "15.03.1951", "_csrf_token": token}
    )
    assert wrong.status_code == 400
    assert "The access code or the date of birth does not match" in wrong.text
    assert "This code cannot be used" not in wrong.text

    right = await client.post(
        "/access", data={"code": code, "date_of_birth": "1951-03-14", "_csrf_token": token}
    )
    assert right.status_code == 200
    assert "Maria Keller" in right.text

    async with portal_of(app).transaction() as db:
        failures = (
            await db.scalars(select(AccessEvent.details).where(AccessEvent.event_type == "code.failed"))
        ).all()
    assert len(failures) == 1  # asking for the date spent nothing; the wrong date counted once


async def test_wrong_birth_date_counts_toward_lock(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    share = await share_with_birth_date(app, client)
    token = csrf_from((await client.get("/access")).text)
    for _ in range(5):
        await client.post(
            "/access",
            data={"code": share["access_code"], "date_of_birth": "01.01.1960", "_csrf_token": token},
        )
    locked = await client.post(
        "/access", data={"code": share["access_code"], "date_of_birth": "14.03.1951", "_csrf_token": token}
    )
    assert locked.status_code == 400
    assert "The access code or the date of birth does not match" in locked.text


@pytest.mark.parametrize(
    "typed", ["14031951", " 14031951 ", "14.03.1951", "14/03/1951", "1951-03-14", "19510314"]
)
async def test_birth_date_digits_or_separators(
    app: Litestar, client: AsyncTestClient[Litestar], typed: str
) -> None:
    # A phone's number pad types digits only, so eight digits are read as DDMMYYYY, the hint's order.
    share = await share_with_birth_date(app, client)
    opened = await redeem_with_birth_date(client, share["access_code"], typed)
    assert opened.status_code == 200, opened.text
    assert "Maria Keller" in opened.text


async def test_birth_date_hint_shows_digits_only(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    share = await share_with_birth_date(app, client)
    asked = await redeem(client, share["access_code"])
    assert "for example 31.12.1950 or 31121950" in asked.text

    impossible = await redeem_with_birth_date(client, share["access_code"], "31131950")
    assert impossible.status_code == 400
    assert "&#39;31131950&#39; is not a date" in impossible.text
    async with portal_of(app).transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None
    assert row.failed_attempts == 0, "a date that cannot be read spends no attempt"


async def test_staff_form_takes_birth_date_digits(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    document_id = uploaded.json()["id"]
    await sign_in(client, CLINICIAN)
    page = await client.get(f"/staff/documents/{document_id}")
    assert "For example 31.12.1950 or 31121950 (day, month, year)" in page.text
    created = await client.post(
        f"/staff/documents/{document_id}/shares",
        data={
            "_csrf_token": csrf_from(page.text),
            "profile": "patient_dob",
            "recipient_name": "Maria Keller",
            "purpose": "Results",
            "date_of_birth": "14031951",
        },
    )
    assert created.status_code == 201, created.text
    code = re.search(r'data-testid="access-code">([0-9A-Z-]+)<', created.text)
    assert code

    client.cookies.clear()
    opened = await redeem_with_birth_date(client, code.group(1), "1951-03-14")
    assert opened.status_code == 200, opened.text


@pytest.mark.parametrize(
    "sent", ["04/05/1962", "17.04.1962", "17041962", "19620417", "1962-4-17", "1962-04-31"]
)
async def test_api_birth_date_iso_only(app: Litestar, client: AsyncTestClient[Litestar], sent: str) -> None:
    # A system that sends the month first would otherwise create a share that the patient can never open.
    answer = await post_birth_date_share(app, client, sent)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == "date_of_birth"
    assert error["message"] == (
        f"date_of_birth '{sent}' is not a date in the form YYYY-MM-DD. Send it as, for example, 1950-12-31."
    )
    assert await share_count(app) == 0


async def test_api_refuses_implausible_birth_date(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    answer = await post_birth_date_share(app, client, "1850-01-01")
    assert answer.status_code == 422, answer.text
    assert "'1850-01-01' is not plausible" in answer.json()["error"]["message"]
    assert (await post_birth_date_share(app, client, "1962-04-17")).status_code == 201


async def test_birth_date_refusals_name_both_checks(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    share = await share_with_birth_date(app, client)
    expired = await share_with_birth_date(app, client)
    spent = await share_with_birth_date(app, client)
    _headers, plain = await issue_share(app, client)
    async with portal_of(app).transaction() as db:
        past = utcnow() - dt.timedelta(minutes=1)
        await db.execute(update(Share).where(Share.id == uuid.UUID(expired["id"])).values(expires_at=past))
    assert (await redeem_with_birth_date(client, spent["access_code"], "14.03.1951")).status_code == 200
    client.cookies.clear()

    answers = {
        "wrong date": await redeem_with_birth_date(client, share["access_code"], "15.03.1951"),
        "wrong code": await redeem_with_birth_date(
            client,
            codes.display(codes.with_locator(codes.locator_of(codes.normalise(share["access_code"])))),
            "14.03.1951",
        ),
        "expired": await redeem_with_birth_date(client, expired["access_code"], "14.03.1951"),
        "spent": await redeem_with_birth_date(client, spent["access_code"], "14.03.1951"),
    }
    bodies = {}
    for name, answer in answers.items():
        assert answer.status_code == 400, name
        assert (
            "The access code or the date of birth does not match. Check both against the letter"
            in answer.text
        )
        # The CSRF token and the typed code, which stays in its field, differ per form.
        typed = re.search(r'name="code"[^>]*value="([^"]*)"', answer.text)
        assert typed, name
        bodies[name] = answer.text.replace(csrf_from(answer.text), "TOKEN").replace(typed.group(1), "CODE")
    assert len(set(bodies.values())) == 1, "no refusal tells which check failed"

    async with portal_of(app).transaction() as db:
        row = await db.get(Share, uuid.UUID(share["id"]))
    assert row is not None
    assert row.failed_attempts == 2, "a wrong date and a wrong code count the same"

    # A share without the date of birth keeps the text that names only the code.
    refused = await redeem(
        client, codes.display(codes.with_locator(codes.locator_of(codes.normalise(plain["access_code"]))))
    )
    assert "This code cannot be used" in refused.text
    assert "date of birth" not in refused.text


async def test_reissue_kills_old_code_and_copy(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, share = await issue_share(app, client)
    old_code = share["access_code"]
    for _ in range(5):
        await redeem(client, codes.display(codes.with_locator(codes.locator_of(codes.normalise(old_code)))))
    status = await client.get(f"/api/v1/shares/{share['id']}", headers=headers)
    assert status.json()["status"] == "locked"

    reissued = await client.post(f"/api/v1/shares/{share['id']}/reissue", headers=headers)
    assert reissued.status_code == 200
    new_code = reissued.json()["access_code"]
    assert new_code != old_code
    assert reissued.json()["id"] == share["id"]

    assert (await redeem(client, old_code)).status_code == 400
    opened = await redeem(client, new_code)
    assert opened.status_code == 200
    copy = (await client.get("/access/download")).content
    with pikepdf.open(io.BytesIO(copy), password=new_code) as pdf:
        assert pdf.encryption.R == 6

    async with portal_of(app).transaction() as db:
        keys = (await db.scalars(select(DataKey.blob_id))).all()
        types = (await db.scalars(select(AccessEvent.event_type))).all()
    assert len(keys) == 2  # the original and the new copy; the old copy's key is gone
    assert types.count("share.reissued") == 1


COPY_NOTES = {
    "patient": "The downloaded PDF opens with the same code, typed exactly as printed: capital letters and dashes.",
    "insurer": "You can read the report in the web browser. It cannot be downloaded.",
}


@pytest.mark.parametrize("profile", sorted(COPY_NOTES))
async def test_slip_page_and_pdf(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings, profile: str
) -> None:
    await token_for(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    token = csrf_from((await client.get("/staff")).text)
    uploaded = await client.post(
        "/staff/documents",
        data={"_csrf_token": token, "title": "Slip test", "patient_ref": "PAT-9"},
        files={"file": ("r.pdf", simple_pdf(), "application/pdf")},
        headers={"x-csrftoken": token},
    )
    created = await client.post(
        f"{uploaded.url.path}/shares",
        data={
            "_csrf_token": csrf_from(uploaded.text),
            "profile": profile,
            "recipient_name": "Jan Nowak",
            "recipient_org": "Riverside GP Practice",
            "purpose": "Results",
        },
    )
    code = re.search(r'data-testid="access-code">([0-9A-Z-]+)<', created.text)
    assert code
    assert "<svg" in created.text  # the QR code, inline
    # Only the note for this profile's copy: a view-only slip promises no PDF.
    assert [note for note in COPY_NOTES.values() if note in created.text] == [COPY_NOTES[profile]]

    slip_form = re.search(r'action="(/staff/shares/[0-9a-f-]+/slip)"', created.text)
    assert slip_form
    slip = await client.post(
        slip_form.group(1), data={"_csrf_token": csrf_from(created.text), "code": code.group(1)}
    )
    assert slip.status_code == 200
    assert slip.headers["content-type"] == "application/pdf"
    # Long lines wrap on the slip, so the extracted text is compared with its line breaks as spaces.
    text = " ".join(pypdfium2.PdfDocument(slip.content)[0].get_textpage().get_text_range().split())
    assert code.group(1) in text
    assert "For: Jan Nowak, Riverside GP Practice" in text
    assert "For: <bdi>Jan Nowak</bdi>, <bdi>Riverside GP Practice</bdi>" in created.text
    assert f"{settings.public_url}/access" in text
    assert [note for note in COPY_NOTES.values() if note in text] == [COPY_NOTES[profile]]
    # Every profile here allows one redemption, which both slips state; the PDF also explains the QR code.
    for slip_text in (text, created.text):
        assert "The code works once and expires on" in slip_text
    assert "Or scan the QR code with a phone camera" in text
    if profile == "patient":
        # The patient profile allows three downloads in the one session its code opens, as both slips state.
        for slip_text in (text, created.text):
            assert (
                "You can download the report up to 3 times in the one session that the code opens."
                in slip_text
            )
    # The page's heading, like the PDF's first line, comes from one sentence that each language punctuates.
    assert '<h2 id="slip-heading">Riverside Dermatology: your report</h2>' in created.text

    # The recipient's page names the organisation too (the insurer profile waits for approval first).
    if profile == "patient":
        recipient_page = await redeem(client, code.group(1))
        assert recipient_page.status_code == 200
        assert "Jan Nowak, Riverside GP Practice" in recipient_page.text

    forged = await client.post(
        slip_form.group(1),
        data={"_csrf_token": csrf_from(created.text), "code": codes.display(codes.generate_code())},
    )
    assert forged.status_code == 400


async def test_flood_control_answers_429(tmp_path: object, database_url: str) -> None:
    from pathlib import Path

    from portal.app import create_app

    folder = Path(str(tmp_path))
    app = create_app(
        make_settings(folder / "data", database_url, PORTAL_TRUSTED_PROXY_HOPS="1"), pdf_workers=1
    )
    async with AsyncTestClient(app=app, base_url="https://portal.test") as client:
        token = csrf_from((await client.get("/access")).text)
        statuses = []
        for _ in range(12):
            answer = await client.post(
                "/access",
                data={"code": codes.display(codes.generate_code()), "_csrf_token": token},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            statuses.append(answer.status_code)
        assert statuses[:10] == [400] * 10
        assert statuses[10:] == [429, 429]
        other = await client.post(
            "/access",
            data={"code": codes.display(codes.generate_code()), "_csrf_token": token},
            headers={"X-Forwarded-For": "198.51.100.8"},
        )
        assert other.status_code == 400


async def test_download_of_view_only_copy_not_allowed(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    _headers, shared = await issue_share(app, client, profile="insurer")
    async with portal_of(app).transaction() as db:
        # The insurer profile needs a second clinician's approval, which another test covers.
        await db.execute(update(Share).values(approved_at=utcnow()))
    assert (await redeem(client, shared["access_code"])).status_code == 200

    rejected = await client.get("/access/download")
    assert rejected.status_code == 403
    assert "Not allowed" in rejected.text
    assert "This report can be viewed but not downloaded." in rejected.text
    assert 'href="/access/share"' in rejected.text, "the page leads back to the report"
    # The report itself is still there for viewing, in this session only.
    page = await client.get("/access/share")
    assert page.status_code == 200
    assert "This report cannot be downloaded, so read it now." in page.text
    async with portal_of(app).transaction() as db:
        events = (await db.scalars(select(AccessEvent.event_type))).all()
    assert "access.download.started" not in events


async def test_download_limit_reached(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, shared = await issue_share(app, client)  # the patient profile allows three downloads
    assert (await redeem(client, shared["access_code"])).status_code == 200
    for _download in range(3):
        answer = await client.get("/access/download")
        assert answer.status_code == 200
        assert answer.content.startswith(b"%PDF")

    rejected = await client.get("/access/download")
    assert rejected.status_code == 410
    assert "The download limit for this report is reached." in rejected.text
    assert 'href="/access/share"' in rejected.text, "the page leads back to the report"
    page = await client.get("/access/share")
    assert page.status_code == 200
    assert "The download limit is reached." in page.text
    async with portal_of(app).transaction() as db:
        events = (await db.scalars(select(AccessEvent.event_type))).all()
    assert events.count("access.download.started") == 3
    assert events.count("access.download.completed") == 3


async def _patient_share_page(app: Litestar, client: AsyncTestClient[Litestar]) -> httpx.Response:
    """Issue a patient share (one redemption, three downloads), redeem its code and return its page."""
    _headers, shared = await issue_share(app, client)
    assert (await redeem(client, shared["access_code"])).status_code == 200
    return await client.get("/access/share")


async def test_download_count_fragment(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    page = await _patient_share_page(app, client)
    assert 'id="download-link"' in page.text
    # The patient's code works once, so the downloads left can only happen in this session.
    assert "3 downloads left in this session." in page.text

    counts = []
    for _download in range(3):
        assert (await client.get("/access/download")).status_code == 200
        fragment = await client.get("/access/share/downloads")
        assert fragment.status_code == 200
        assert "<html" not in fragment.text, "a fragment for the share page, not a whole page"
        counts.append(fragment.text)
    assert "2 downloads left in this session." in counts[0]
    assert "1 download left in this session." in counts[1]
    assert 'hx-get="/access/share/downloads"' in counts[1], "the count reloads after the next download"

    # At the limit the fragment shows the limit message and removes the download button from the page.
    assert "The download limit is reached." in counts[2]
    assert 'id="download-action" hx-swap-oob="true" hidden' in counts[2]
    assert "hx-get" not in counts[2]

    # Reading the count records nothing in the access log.
    async with portal_of(app).transaction() as db:
        before = len((await db.scalars(select(AccessEvent.seq))).all())
    await client.get("/access/share/downloads")
    async with portal_of(app).transaction() as db:
        after = len((await db.scalars(select(AccessEvent.seq))).all())
    assert after == before

    # After "Finish" the fragment gives the reason instead of an error page.
    await client.post("/access/end", data={"_csrf_token": csrf_from(page.text)})
    ended = await client.get("/access/share/downloads")
    assert ended.status_code == 410
    assert "<html" not in ended.text
    assert "Your session has ended:" in ended.text


async def _session_end(app: Litestar, share_id: str) -> dt.datetime:
    """Return when the share's one recipient session ends at the latest."""
    async with portal_of(app).transaction() as db:
        share = await db.get(Share, uuid.UUID(share_id))
        session = await db.scalar(select(AuthSession).where(AuthSession.subject_id == uuid.UUID(share_id)))
    assert share is not None
    assert session is not None
    return min(session.expires_at, share.expires_at)


async def test_times_in_clinic_time_zone(tmp_path: Path, database_url: str) -> None:
    app = create_app(
        make_settings(tmp_path / "data", database_url, PORTAL_TIMEZONE="Europe/Berlin"), pdf_workers=1
    )
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        _headers, shared = await issue_share(app, client)
        assert (await redeem(client, shared["access_code"])).status_code == 200
        page = await client.get("/access/share")
        ends = await _session_end(app, shared["id"])

    # The page shows the session's end in Berlin time with the zone's abbreviation, not in UTC.
    local = ends.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert f"at {local:%H:%M} {local.tzname()}</dd>" in page.text
    assert "UTC" not in page.text.split("Session ends", 1)[1].split("</dd>", 1)[0]


async def test_share_page_once_only_code(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, shared = await issue_share(app, client)  # the patient profile: one redemption, three downloads
    assert (await redeem(client, shared["access_code"])).status_code == 200
    page = await client.get("/access/share")
    text = html.unescape(page.text)
    ends = await _session_end(app, shared["id"])

    # Right under the heading, before the report's details, the page states that this session is the only one.
    found = re.search(r'data-testid="code-spent">(.*?)</div>', text, re.DOTALL)
    assert found is not None
    notice = found.group(1)
    assert text.index('data-testid="code-spent"') < text.index('<dl class="summary">')
    assert (
        "Your access code has now been used. Entering it on this website again will not open the report."
        in notice
    )
    assert "stays open on this page only until you select “Finish” or the session times out." in notice
    # The shipped policy ends a recipient session after 15 idle or 60 minutes, long before the share expires.
    session_end = f"no later than {ends.day} {ends:%B %Y} at {ends:%H:%M} UTC"
    assert f"times out after 15 minutes without activity, and {session_end}." in notice
    assert "download it now, before you select “Finish”." in notice

    # No date suggests a later visit: the summary gives the session's end, and the count is for this session.
    assert "Available until" not in text
    assert session_end in text.split("<dt>Session ends</dt>", 1)[1].split("</dd>", 1)[0]
    assert "3 downloads left in this session." in text
    assert text.count('action="/access/end"') == 2, "Finish at the top and at the end of the page"
    fragment = await client.get("/access/share/downloads")
    assert "3 downloads left in this session." in fragment.text

    for _download in range(3):
        assert (await client.get("/access/download")).status_code == 200
    # With no download left, the notice no longer mentions downloading.
    text = html.unescape((await client.get("/access/share")).text)
    assert "Entering it on this website again will not open the report." in text
    assert "download it now" not in text

    # After "Finish" the confirmation states that the code is used up instead of suggesting to enter it again.
    finished = await client.post("/access/end", data={"_csrf_token": csrf_from(page.text)})
    assert str(finished.url).endswith("/access?finished=spent")
    assert "Your code has been used as often as it allows" in finished.text
    assert "you can enter it again" not in finished.text


REUSABLE_PROFILE = """
[profiles.family]
label = "Family doctor, two visits"
description = "The family doctor may open the report twice."
expiry_days = 14
max_redemptions = 2
allow_download = true
max_downloads = 3
allow_view = true
pdf_password = "code"
allow_print = true
allow_copy = true
second_factor = "none"
requires_approval = false
"""


async def test_share_page_reusable_code(tmp_path: Path, database_url: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", policies)
    with (policies / "profiles.toml").open("a", encoding="utf-8") as profiles:
        profiles.write(REUSABLE_PROFILE)
    settings = make_settings(tmp_path / "data", database_url, PORTAL_POLICY_DIR=str(policies))
    app = create_app(settings, pdf_workers=1)

    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        _headers, shared = await issue_share(app, client, profile="family")
        assert (await redeem(client, shared["access_code"])).status_code == 200
        page = await client.get("/access/share")
        fragment = await client.get("/access/share/downloads")

        # The code opens the report once more, so the page keeps the share's end and shows no last-visit notice.
        assert 'data-testid="code-spent"' not in page.text
        assert "Session ends" not in page.text
        assert "Available until" in page.text
        assert "3 downloads left." in page.text
        assert "3 downloads left." in fragment.text
        assert "in this session" not in fragment.text
        finished = await client.post("/access/end", data={"_csrf_token": csrf_from(page.text)})
        assert str(finished.url).endswith("/access?finished=1")

        # The second redemption is the last one: now the page warns as for a code that works once.
        assert (await redeem(client, shared["access_code"])).status_code == 200
        page = await client.get("/access/share")
        assert 'data-testid="code-spent"' in page.text
        assert "Available until" not in page.text
        assert "3 downloads left in this session." in page.text
