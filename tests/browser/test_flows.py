"""The portal's pages in a real Chromium: clinician, recipient and DPO, each in their own browser context."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import pikepdf
import pytest
from playwright.sync_api import Locator, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from portal.audit.exporters import EXPORT_FIELDS
from portal.security import codes
from tests.browser.conftest import CLINIC_NAME, Visitor
from tests.conftest import CORPUS_DIR, PASSWORD
from tests.helpers import CLINICIAN, DPO

pytestmark = pytest.mark.browser

OpenVisitor = Callable[[str], Visitor]

REPORT_PDF = CORPUS_DIR / "rotate-mixed-90-180-270-six-pages.pdf"
REPORT_PAGES = 6
RECIPIENT = "Zoë Łukasiewicz"
PATIENT_REF = "PAT-0042"

# Chromium logs a console error for a page returned with status 400, as when the server rejects a code.
REJECTED_FORM = re.compile(r"Failed to load resource: the server responded with a status of 400")
DOWNLOAD_TIMEOUT_MS = 10_000
STATUS_POLL_ATTEMPTS = 20
STATUS_POLL_INTERVAL_MS = 250

# Reads the event-type codes of the DPO results table's cells.
EVENT_TYPES_JS = "cells => cells.map(cell => cell.dataset.eventType)"


def sign_in(visitor: Visitor, email: str) -> None:
    page = visitor.page
    page.goto("/staff/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    visitor.shot("sign-in")

    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(staff|dpo/events)$"))


def upload_report(visitor: Visitor, title: str) -> None:
    """Upload the six-page report through the dashboard form and wait for the document page."""
    page = visitor.page
    page.goto("/staff")
    page.get_by_label("Report PDF").set_input_files(REPORT_PDF)
    page.get_by_label("Title").fill(title)
    page.get_by_role("region", name="Upload a report").get_by_label("Patient reference").fill(PATIENT_REF)
    page.get_by_label("Report date (optional)").fill("2026-11-30")
    visitor.shot("upload-form")

    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/staff/documents/[0-9a-f-]+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(title)


def create_share(visitor: Visitor, purpose: str) -> str:
    """Create a patient share on the open document page and return the access code as printed."""
    page = visitor.page
    page.get_by_label("Patient", exact=True).check()
    page.get_by_label("Recipient's name").fill(RECIPIENT)
    page.get_by_label("Purpose").fill(purpose)
    visitor.shot("share-form")

    page.get_by_role("button", name="Create share and access code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Share created")
    code_element = page.get_by_test_id("access-code")
    expect(code_element).to_be_visible()
    return code_element.inner_text().strip()


def enter_code(visitor: Visitor, code: str) -> None:
    page = visitor.page
    page.goto("/access")
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Continue").click()


def redeem_code(visitor: Visitor, code: str) -> None:
    """Enter the code at /access and wait for the recipient's share page."""
    enter_code(visitor, code)
    visitor.page.wait_for_url("**/access/share")
    expect(visitor.page.get_by_role("heading", level=1)).to_have_text(f"Your report from {CLINIC_NAME}")


def download(visitor: Visitor, control: Locator, folder: Path) -> tuple[Path, str]:
    """Click a download link or button, save the file and return its path and suggested name."""
    try:
        with visitor.page.expect_download(timeout=DOWNLOAD_TIMEOUT_MS) as info:
            control.click()
    except PlaywrightTimeoutError:
        visitor.shot("no-download")
        # The end of the page is where a swapped-in response would appear.
        page_end = visitor.page.locator("main").inner_text()[-300:]
        pytest.fail(
            f"No download started within {DOWNLOAD_TIMEOUT_MS} ms. {visitor.page.url} ends with: {page_end!r}"
        )
    received = info.value
    assert received.failure() is None, f"download from {received.url} failed: {received.failure()}"
    path = folder / received.suggested_filename
    received.save_as(path)
    return path, received.suggested_filename


def wait_for_status(visitor: Visitor, share_url: str, expected: str) -> str:
    """Reload the clinician's share page until its status reads ``expected``, and return the last status."""
    # The download's completion is recorded after the last byte leaves the server, a moment after the
    # browser has the file, so the first reload may still show "opened".
    status = ""
    for _attempt in range(STATUS_POLL_ATTEMPTS):
        visitor.page.goto(share_url)
        status = visitor.page.locator(".summary .status").inner_text().strip()
        if status == expected:
            break
        visitor.page.wait_for_timeout(STATUS_POLL_INTERVAL_MS)
    return status


def wait_for_page_images(visitor: Visitor, count: int) -> None:
    """Scroll through the recipient's page images and wait until every one has loaded."""
    images = visitor.page.get_by_role("img", name=re.compile(rf"^Page \d+ of {count}$"))
    expect(images).to_have_count(count)
    for image in images.all():
        image.scroll_into_view_if_needed()
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("element => element.naturalWidth") > 0, "the page image did not decode"


def browser_storage(visitor: Visitor) -> dict[str, dict[str, str]]:
    return visitor.page.evaluate(
        """() => ({
            sessionStorage: Object.fromEntries(Object.entries(sessionStorage)),
            localStorage: Object.fromEntries(Object.entries(localStorage)),
        })"""
    )


def mistype(code: str) -> str:
    """Return the printed code with one character of its secret part replaced by another valid one."""
    canonical = codes.normalise(code)
    position = codes.LOCATOR_LENGTH + 3
    replacement = next(character for character in codes.ALPHABET if character != canonical[position])
    return codes.display(canonical[:position] + replacement + canonical[position + 1 :])


def test_clinician_and_recipient_walk(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, "Wound healing progress")
    clinician.shot("document-page")
    expect(clinician.page.locator(".summary")).to_contain_text(PATIENT_REF)

    code = create_share(clinician, "Follow-up after treatment")
    clinician.shot("share-created")
    assert re.fullmatch(r"([0-9A-Z]{4}-){4}[0-9A-Z]{4}", code), (
        "the slip shows the code in five groups of four"
    )
    clinician.page.get_by_role("link", name="Follow this share").click()
    clinician.page.wait_for_url(re.compile(r"/staff/shares/[0-9a-f-]+$"))
    share_url = clinician.page.url
    expect(clinician.page.locator(".summary .status")).to_have_text("issued")

    recipient = open_visitor("recipient")
    recipient.page.goto("/access")
    recipient.shot("access-form")
    redeem_code(recipient, code)
    expect(recipient.page.locator(".summary")).to_contain_text(RECIPIENT)
    download_link = recipient.page.get_by_role("link", name="Download the report (PDF)")
    expect(download_link).to_have_attribute("href", "/access/download")
    wait_for_page_images(recipient, REPORT_PAGES)
    recipient.shot("share-page")

    saved, filename = download(recipient, download_link, tmp_path)
    recipient.shot("after-download")
    assert re.fullmatch(r"report-[0-9A-Za-z-]+\.pdf", filename)
    assert saved.read_bytes().startswith(b"%PDF")
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(saved)
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(saved, password=codes.display(codes.generate_code()))
    with pikepdf.open(saved, password=code) as copy:
        assert copy.encryption.R == 6
        assert copy.user_password_matched
        assert len(copy.pages) == REPORT_PAGES

    status = wait_for_status(clinician, share_url, "downloaded")
    clinician.shot("share-downloaded")
    assert status == "downloaded"
    expect(clinician.page.locator("dt:text-is('Downloads completed') + dd")).to_have_text(
        re.compile(r"^1 / \d+$")
    )

    clinician.assert_console_clean()
    recipient.assert_console_clean()


def test_wrong_code_shows_error_summary(open_visitor: OpenVisitor) -> None:
    recipient = open_visitor("recipient")
    recipient.allowed_errors.append(REJECTED_FORM)
    summary = recipient.page.locator(".error-summary")

    enter_code(recipient, codes.display(codes.generate_code()))
    recipient.shot("wrong-code")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("This code cannot be used")
    expect(summary).not_to_contain_text("No attempt was used")
    expect(summary).to_be_focused()
    expect(recipient.page.get_by_label("Access code")).to_have_attribute("aria-invalid", "true")

    mistyped = mistype(codes.display(codes.generate_code()))
    enter_code(recipient, mistyped)
    recipient.shot("mistyped-code")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("No attempt was used up.")
    expect(summary).to_be_focused()
    expect(recipient.page.get_by_label("Access code")).to_have_value(mistyped)

    recipient.assert_console_clean()


def test_dpo_searches_and_exports(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    dpo = open_visitor("dpo")
    sign_in(dpo, DPO)
    page = dpo.page
    assert page.url.endswith("/dpo/events")
    rows = page.locator("#results tbody tr")
    expect(rows.first).to_be_visible()
    dpo.shot("events")
    # The cells show each type's name and carry its code.
    types_before = set(page.locator("#results tbody td[data-event-type]").evaluate_all(EVENT_TYPES_JS))
    assert "staff.login" in types_before
    assert len(types_before) > 1, f"the unfiltered log shows more than one event type: {types_before}"

    with page.expect_response(
        lambda response: response.url.endswith("/dpo/events") and response.request.method == "POST"
    ) as swap:
        page.get_by_label("Event type").select_option("staff.login")
    assert swap.value.request.headers.get("hx-request") == "true", "the filter is sent by htmx"
    assert swap.value.status == 200
    expect(page.locator("#results td:nth-child(3)").first).to_have_attribute("data-event-type", "staff.login")
    expect(page.locator("#results td:nth-child(3)").first).to_have_text("Staff sign-in")
    dpo.shot("filtered")
    types_after = set(page.locator("#results tbody td[data-event-type]").evaluate_all(EVENT_TYPES_JS))
    assert types_after == {"staff.login"}
    assert page.url.endswith("/dpo/events"), "the filter swaps the results without changing the address"
    expect(page.locator("#results h1")).to_have_count(0)
    expect(page.get_by_role("heading", level=1)).to_have_count(1)

    saved, filename = download(dpo, page.get_by_role("button", name="Export CSV"), tmp_path)
    dpo.shot("after-export")
    assert filename == "access-log.csv"
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(EXPORT_FIELDS)
    assert len(lines) > 1
    assert all(",staff.login," in line for line in lines[1:])
    emails = {row["actor_email"] for row in csv.DictReader(lines)}
    assert DPO in emails, f"the export names the signed-in staff: {emails}"

    dpo.assert_console_clean()


def test_no_patient_data_in_browser_storage(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, "Storage check report")
    code = create_share(clinician, "Storage check")

    recipient = open_visitor("recipient")
    redeem_code(recipient, code)
    wait_for_page_images(recipient, REPORT_PAGES)
    download(recipient, recipient.page.get_by_role("link", name="Download the report (PDF)"), tmp_path)
    recipient.page.reload()
    recipient.shot("share-page")
    assert browser_storage(recipient) == {"sessionStorage": {}, "localStorage": {}}

    # The dashboard filter is sent in a POST body, so the patient reference never reaches the address, which
    # htmx on that page would copy to sessionStorage.
    clinician.page.goto("/staff")
    clinician.page.get_by_role("searchbox", name="Patient reference").fill(PATIENT_REF)
    clinician.page.get_by_role("button", name="Filter").click()
    clinician.page.wait_for_load_state("networkidle")
    assert PATIENT_REF not in clinician.page.url
    expect(clinician.page.get_by_role("link", name="Storage check report")).to_be_visible()
    clinician.shot("filtered-dashboard")
    assert browser_storage(clinician) == {"sessionStorage": {}, "localStorage": {}}

    clinician.assert_console_clean()
    recipient.assert_console_clean()
