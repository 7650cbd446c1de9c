"""The dashboard's upload form in Chromium: the size check before sending, and the file kept after a rejection."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Request, expect

from tests.browser.conftest import Visitor
from tests.browser.test_flows import sign_in
from tests.helpers import CLINICIAN

pytestmark = pytest.mark.browser

OpenVisitor = Callable[[str], Visitor]

# 32.8 MB once rounded up to one decimal, over the shipped policy's 30 MB.
OVERSIZED_BYTES = 32_750_000
TOO_LARGE_MESSAGE = (
    "big-photo-series.pdf is 32.8 MB; a report may be at most 30 MB. "
    "Reduce the photo resolution and export it again."
)
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(200)


def fill_upload_form(visitor: Visitor, file: Path | dict[str, object]) -> None:
    page = visitor.page
    page.goto("/staff")
    upload = page.get_by_role("region", name="Upload a report")
    upload.get_by_label("Report PDF").set_input_files(file)
    upload.get_by_label("Title").fill("Photo series week 6")
    upload.get_by_label("Patient reference").fill("PAT-0042")


def test_oversized_file_is_not_sent(open_visitor: OpenVisitor, tmp_path: Path) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    page = clinician.page
    uploads: list[str] = []

    def note_upload(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/staff/documents"):
            uploads.append(request.url)

    page.on("request", note_upload)
    # A sparse file: the browser reads its size without the test writing 33 MB.
    oversized = tmp_path / "big-photo-series.pdf"
    with oversized.open("wb") as handle:
        handle.truncate(OVERSIZED_BYTES)

    fill_upload_form(clinician, oversized)
    upload = page.get_by_role("region", name="Upload a report")
    message = page.locator("#file-check-error")
    expect(message).to_be_visible()
    expect(message).to_have_text(f"Error: {TOO_LARGE_MESSAGE}")
    expect(upload.get_by_label("Report PDF")).to_have_attribute("aria-invalid", "true")

    upload.get_by_role("button", name="Upload").click()
    expect(upload.get_by_label("Report PDF")).to_be_focused()
    clinician.shot("size-message")
    assert uploads == [], "the oversized file was sent"
    assert page.url.endswith("/staff")
    expect(upload.get_by_label("Title")).to_have_value("Photo series week 6")
    expect(upload.get_by_label("Patient reference")).to_have_value("PAT-0042")
    clinician.assert_console_clean()


def test_rejected_file_stays_chosen(open_visitor: OpenVisitor) -> None:
    clinician = open_visitor("clinician")
    # The server responds to the rejected upload with status 422, which Chromium logs as a console error.
    clinician.allowed_errors.append(re.compile(r"status of 422"))
    sign_in(clinician, CLINICIAN)
    page = clinician.page

    fill_upload_form(clinician, {"name": "wound.pdf", "mimeType": "application/pdf", "buffer": JPEG_BYTES})
    page.get_by_role("region", name="Upload a report").get_by_role("button", name="Upload").click()

    upload = page.get_by_role("region", name="Upload a report")
    expect(page.locator("#file-error")).to_have_text(
        "Error: wound.pdf is a JPEG image, not a PDF. Export the report as PDF from your photo system."
    )
    clinician.shot("rejected-file")
    file_input = upload.get_by_label("Report PDF")
    assert file_input.evaluate("input => Array.from(input.files).map(file => file.name)") == ["wound.pdf"]
    expect(upload.get_by_label("Title")).to_have_value("Photo series week 6")
    clinician.assert_console_clean()
