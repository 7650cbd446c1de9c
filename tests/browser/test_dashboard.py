"""The clinician's dashboard in Chromium: upload progress, the create-share dialog, live status, revoke,
reissue and four-eyes approval, with the recipient and a second clinician in their own browser contexts."""

from __future__ import annotations

import io
import os
import re
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pikepdf
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PortalServer, Visitor, _add_staff
from tests.conftest import CORPUS_DIR, PASSWORD
from tests.helpers import CLINICIAN, SECOND_CLINICIAN

pytestmark = pytest.mark.browser

OpenVisitor = Callable[[str], Visitor]

REPORT_PDF = CORPUS_DIR / "rotate-mixed-90-180-270-six-pages.pdf"
LARGE_UPLOAD_BYTES = 25_000_000
PATIENT_REF = "PAT-7310"
RECIPIENT = "Zoë Łukasiewicz"
REFERENCE = re.compile(r"S-[0-9A-Z]{8}")
# The table polls every 10 s; two polls and the download's completion fit in this.
LIVE_UPDATE_TIMEOUT_MS = 25_000
UPLOAD_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def second_clinician(portal_server: PortalServer) -> str:
    """Add a second clinician with the portal's CLI, as an operator would."""
    _add_staff(portal_server.env, SECOND_CLINICIAN, "clinician")
    return SECOND_CLINICIAN


def sign_in(visitor: Visitor, email: str) -> None:
    page = visitor.page
    page.goto("/staff/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/staff$"))


def large_pdf(path: Path, size: int) -> Path:
    """Write a PDF of about ``size`` bytes: one page per random-noise image, which does not compress."""
    pdf = pikepdf.new()
    width, height = 1600, 1800
    pages = max(1, -(-size // (width * height * 3)))  # rounded up
    for _number in range(pages):
        image = pdf.make_stream(
            zlib.compress(os.urandom(width * height * 3), 1),
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=width,
            Height=height,
            ColorSpace=pikepdf.Name.DeviceRGB,
            BitsPerComponent=8,
            Filter=pikepdf.Name.FlateDecode,
        )
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page,
            MediaBox=[0, 0, 595, 842],
            Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)),
            Contents=pdf.make_stream(b"q 595 0 0 842 0 0 cm /Im0 Do Q"),
        )
        pdf.pages.append(pikepdf.Page(page))
    buffer = io.BytesIO()
    pdf.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def fill_upload(visitor: Visitor, file: Path, title: str) -> None:
    page = visitor.page
    page.goto("/staff")
    upload = page.get_by_role("region", name="Upload a report")
    upload.get_by_label("Report PDF").set_input_files(file)
    upload.get_by_label("Title").fill(title)
    upload.get_by_label("Patient reference").fill(PATIENT_REF)


def upload_report(visitor: Visitor, title: str) -> str:
    """Upload the six-page report and return the document page's address."""
    fill_upload(visitor, REPORT_PDF, title)
    visitor.page.get_by_role("button", name="Upload").click()
    visitor.page.wait_for_url(re.compile(r"/staff/documents/[0-9a-f-]+$"))
    return visitor.page.url


def create_share_in_dialog(visitor: Visitor, profile: str, purpose: str) -> tuple[str, str]:
    """Open the create-share dialog from the document page; return the printed code and the share reference."""
    page = visitor.page
    page.get_by_role("link", name="Share several reports of this patient as one package").click()
    page.wait_for_url(re.compile(r"/staff/shares/new\?document="))
    expect(page.get_by_role("heading", level=1)).to_have_text("New share")
    page.get_by_label(profile, exact=True).check()
    page.get_by_label("Recipient's name").fill(RECIPIENT)
    page.get_by_label("Recipient's organisation (optional)").fill("Northside Practice")
    page.get_by_label("Purpose").fill(purpose)
    visitor.shot("dialog")

    page.get_by_role("button", name="Create share and access code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Share created")
    code = page.get_by_test_id("access-code").inner_text().strip()
    reference = REFERENCE.search(page.locator(".slip").inner_text())
    assert reference, "the slip shows the share reference"
    return code, reference.group(0)


def redeem(visitor: Visitor, code: str) -> None:
    page = visitor.page
    page.goto("/access")
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/access/share")


def redeem_and_download(visitor: Visitor, code: str, folder: Path) -> None:
    redeem(visitor, code)
    page = visitor.page
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the report (PDF)").click()
    info.value.save_as(folder / "copy.pdf")


def row_state(visitor: Visitor, reference: str) -> str:
    return (
        visitor.page.locator(f'tr[data-share="{reference}"] .states .status').first.get_attribute(
            "data-status"
        )
        or ""
    )


def storage(visitor: Visitor) -> str:
    return str(
        visitor.page.evaluate(
            "() => JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])"
        )
    )


def test_upload_shows_progress(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    report = large_pdf(tmp_path / "large.pdf", LARGE_UPLOAD_BYTES)
    assert report.stat().st_size > 24_000_000

    fill_upload(clinician, report, "Large photo series")
    page = clinician.page
    seen: list[int] = []
    # The server may answer before a DOM check could run, so an observer reports every value the bar takes.
    page.expose_function("reportProgress", lambda value: seen.append(int(value)))
    page.evaluate(
        """() => {
            const bar = document.getElementById("upload-progress");
            new MutationObserver(() => window.reportProgress(bar.value)).observe(bar, {attributes: true});
        }"""
    )
    started = time.monotonic()
    with page.expect_request(
        lambda request: request.method == "POST" and request.url.endswith("/staff/documents")
    ) as sent:
        page.get_by_role("button", name="Upload").click()
    assert sent.value.header_value("x-csrftoken"), "the script sends the CSRF token in its header"
    page.wait_for_url(re.compile(r"/staff/documents/[0-9a-f-]+$"), timeout=UPLOAD_TIMEOUT_MS)
    elapsed = time.monotonic() - started
    expect(page.get_by_role("heading", level=1)).to_have_text("Large photo series")
    clinician.shot("document-page")

    assert seen and max(seen) == 100, f"progress values seen: {seen}"
    print(f"25 MB upload through the form: {elapsed:.1f} s, progress values {seen[:5]}…{seen[-3:]}")
    clinician.assert_console_clean()


def test_live_status_revoke_reissue(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, "Live status report")
    code, reference = create_share_in_dialog(clinician, "Patient", "Live status")
    clinician.shot("share-created")

    page = clinician.page
    page.goto("/staff")
    row = page.locator(f'tr[data-share="{reference}"]')
    expect(row).to_be_visible()
    assert row_state(clinician, reference) == "issued"
    expect(row).to_contain_text("Northside Practice")
    page.evaluate("() => { window.notReloaded = true; }")
    clinician.shot("dashboard-issued")

    recipient = open_visitor("recipient")
    redeem_and_download(recipient, code, tmp_path)

    expect(row.locator('.status[data-status="downloaded"]')).to_be_visible(timeout=LIVE_UPDATE_TIMEOUT_MS)
    assert page.evaluate("() => window.notReloaded === true"), "the table updated without a page reload"
    clinician.shot("dashboard-downloaded")

    # Filtering by patient is a POST: the reference never reaches the address, so htmx cannot store it.
    filters = page.locator("#share-filters")
    filters.get_by_label("Patient reference").fill(PATIENT_REF)
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator(f'tr[data-share="{reference}"]')).to_be_visible()
    assert PATIENT_REF not in page.url
    assert PATIENT_REF not in storage(clinician), "no patient reference in browser storage"
    clinician.shot("dashboard-filtered")

    page.locator(f'tr[data-share="{reference}"]').get_by_role("link", name="Reissue…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Reissue share {reference}?")
    clinician.shot("reissue-confirm")
    page.get_by_role("button", name=f"Yes, reissue share {reference}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New code issued")
    new_code = page.get_by_test_id("access-code").inner_text().strip()
    assert new_code != code

    page.goto("/staff")
    page.locator(f'tr[data-share="{reference}"]').get_by_role("link", name="Revoke…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Revoke share {reference}?")
    clinician.shot("revoke-confirm")
    page.get_by_role("button", name=f"Yes, revoke share {reference}").click()
    expect(page.locator(".summary .status")).to_have_text("revoked")
    page.goto("/staff")
    assert row_state(clinician, reference) == "revoked"
    clinician.shot("dashboard-revoked")

    clinician.assert_console_clean()
    recipient.assert_console_clean()


def test_four_eyes_approval(open_visitor: OpenVisitor, second_clinician: str) -> None:
    creator = open_visitor("creator")
    sign_in(creator, CLINICIAN)
    upload_report(creator, "Insurance claim report")
    code, reference = create_share_in_dialog(creator, "Insurer", "Claim 2026-77")
    expect(creator.page.get_by_test_id("awaiting-approval")).to_be_visible()
    creator.shot("awaiting-approval")

    recipient = open_visitor("recipient")
    recipient.allowed_errors.append(re.compile(r"status of 400"))
    recipient.page.goto("/access")
    recipient.page.get_by_label("Access code").fill(code)
    recipient.page.get_by_role("button", name="Continue").click()
    expect(recipient.page.locator(".error-summary")).to_contain_text("This code cannot be used")
    recipient.shot("refused-before-approval")

    creator.page.goto("/staff")
    expect(
        creator.page.locator(f'tr[data-share="{reference}"] [data-status="awaiting_approval"]')
    ).to_be_visible()
    expect(
        creator.page.locator(f'tr[data-share="{reference}"]').get_by_role("link", name="Approve…")
    ).to_have_count(0)

    colleague = open_visitor("colleague")
    sign_in(colleague, second_clinician)
    colleague.page.locator(f'tr[data-share="{reference}"]').get_by_role("link", name="Approve…").click()
    colleague.shot("share-page")
    colleague.page.get_by_role("button", name="Approve and release the code").click()
    expect(colleague.page.locator(".summary .status")).to_have_text("issued")
    colleague.shot("approved")

    expect(creator.page.locator(f'tr[data-share="{reference}"] [data-status="issued"]')).to_be_visible(
        timeout=LIVE_UPDATE_TIMEOUT_MS
    )
    creator.shot("dashboard-approved")

    redeem(recipient, code)
    recipient.shot("opened-after-approval")

    creator.assert_console_clean()
    colleague.assert_console_clean()
    recipient.assert_console_clean()


def test_limits_follow_recipient_type(open_visitor: OpenVisitor) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    document_url = upload_report(clinician, "Limits report")
    page = clinician.page
    # As served, before the script runs, the fields accept the widest limits of any type. A browser
    # without the script then never blocks a value the chosen type allows; the server checks that type.
    served = page.request.get(document_url).text()
    assert 'id="expiry_days" name="expiry_days" type="number" min="1" max="30"' in served
    assert 'id="max_downloads" name="max_downloads" type="number" min="0" max="3"' in served
    expiry, downloads = page.locator("#expiry_days"), page.locator("#max_downloads")
    # The patient profile is chosen first: 14 days, 3 downloads.
    expect(expiry).to_have_attribute("max", "14")
    expect(downloads).to_have_attribute("max", "3")
    # The date of birth is asked only for a type with the date-of-birth check.
    birth_date = page.locator("#date_of_birth")
    expect(birth_date).to_be_hidden()
    page.get_by_label("Patient, with date-of-birth check", exact=True).check()
    expect(birth_date).to_be_visible()
    page.get_by_label("Colleague (second opinion)", exact=True).check()
    expect(birth_date).to_be_hidden()
    expect(expiry).to_have_attribute("max", "7")
    expect(downloads).to_have_attribute("max", "1")
    expect(downloads).to_be_enabled()
    page.get_by_label("Insurer", exact=True).check()
    expect(expiry).to_have_attribute("max", "30")
    expect(downloads).to_have_attribute("max", "0")
    expect(downloads).to_be_disabled()
    page.get_by_label("Patient", exact=True).check()
    expect(downloads).to_be_enabled()
    clinician.assert_console_clean()


def test_share_table_fits_in_german(open_visitor: OpenVisitor) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, "Wide table report")
    _code, reference = create_share_in_dialog(clinician, "Patient", "Table width")

    page = clinician.page
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/staff?lang=de")
    expect(page.locator(f'tr[data-share="{reference}"]')).to_be_visible()
    table = page.locator("table.share-table")
    overflow = table.evaluate("(element) => element.scrollWidth - element.clientWidth")
    assert overflow <= 1, f"the share table scrolls sideways by {overflow} px, hiding the actions"
    actions = page.get_by_role("columnheader", name="Aktionen").bounding_box()
    assert actions is not None
    assert actions["x"] + actions["width"] <= 1280, "the actions column lies within the window's width"
    clinician.shot("dashboard-de")
