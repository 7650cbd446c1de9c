"""The slip's QR code in a real Chromium: what it encodes, and that the code it carries never reaches a log.

The QR code opens ``<portal>/access#code=<code>``. Browsers keep the fragment to themselves, and the access
page's script copies it into the form and then removes it from the address bar. The code reaches the
server only in POST bodies: the recipient's redemption and the clinician's slip download.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
import zxingcpp
from PIL import Image, ImageOps
from playwright.sync_api import expect

from portal.security import codes
from tests.browser.conftest import PortalServer, Visitor
from tests.browser.test_flows import create_share, download, sign_in, upload_report
from tests.helpers import CLINICIAN

pytestmark = pytest.mark.browser

OpenVisitor = Callable[[str], Visitor]

# The slip's SVG is drawn 10rem wide (160 CSS pixels for about 37 modules). Enlarging it with
# nearest-neighbour sampling and adding a white quiet zone of four modules or more gives the decoder
# square, sharp modules to work with.
SCREENSHOT_ENLARGEMENT = 3
QUIET_ZONE_PX = 80
# 200 dpi: the slip's 170-point QR code becomes about 470 pixels, 13 per module.
PDF_RENDER_SCALE = 200 / 72
QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


def decode_qr(image: Image.Image, picture: Path) -> str:
    """Decode the one QR code in ``image`` and return its text. Fail when there is none or more than one.

    Args:
        image: the picture to decode.
        picture: where the picture was saved, named in the failure message.
    """
    padded = ImageOps.expand(image.convert("L"), border=QUIET_ZONE_PX, fill=255)
    found = zxingcpp.read_barcodes(padded, formats=QR_ONLY)
    assert len(found) == 1, f"expected one readable QR code, found {len(found)}; see {picture}"
    return found[0].text


def qr_text_on_page(visitor: Visitor, folder: Path) -> str:
    """Screenshot the slip's inline SVG QR code, keep the picture, and decode it."""
    path = folder / "slip-qr-screen.png"
    visitor.page.locator(".qr svg").screenshot(path=str(path))
    with Image.open(path) as shot:
        enlarged = shot.resize(
            (shot.width * SCREENSHOT_ENLARGEMENT, shot.height * SCREENSHOT_ENLARGEMENT),
            Image.Resampling.NEAREST,
        )
    return decode_qr(enlarged, path)


def qr_text_in_pdf(pdf_path: Path, folder: Path) -> str:
    """Render the slip PDF's only page, keep the picture, and decode its QR code."""
    document = pypdfium2.PdfDocument(pdf_path)
    try:
        assert len(document) == 1, f"the slip has {len(document)} pages instead of one"
        page_image = document[0].render(scale=PDF_RENDER_SCALE).to_pil()
    finally:
        document.close()
    path = folder / "slip-qr-pdf.png"
    page_image.save(path)
    return decode_qr(page_image, path)


def log_records(server: PortalServer) -> list[tuple[str, dict[str, Any]]]:
    """Return every line of the server's log with its parsed JSON record (empty for a non-JSON line)."""
    records = []
    for line in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = {}
        records.append((line, record if isinstance(record, dict) else {}))
    return records


def code_forms(printed: str) -> list[str]:
    """Return the spellings under which a code could appear: as printed and without dashes, in lower case.

    Callers compare in lower case, so the upper-case spellings are covered as well.
    """
    canonical = codes.normalise(printed)
    return [printed.lower(), canonical.lower()]


def test_qr_code_fills_form_without_sending_code(
    open_visitor: OpenVisitor, portal_server: PortalServer, tmp_path: Path
) -> None:
    clinician = open_visitor("clinician")
    sign_in(clinician, CLINICIAN)
    upload_report(clinician, "QR slip report")
    code = create_share(clinician, "QR code on the slip")
    clinician.shot("share-created")
    expected_link = f"{portal_server.base_url}/access#code={code}"
    shots = clinician.shots.folder

    screen_text = qr_text_on_page(clinician, shots)
    assert screen_text == expected_link, "the QR code on the page opens the access page with the printed code"

    # Printed, the page shows the slip alone: no heading or note meant for the clinician.
    clinician.page.emulate_media(media="print")
    expect(clinician.page.get_by_role("heading", level=1)).to_be_hidden()
    expect(clinician.page.locator(".slip")).to_be_visible()
    clinician.page.emulate_media(media="screen")

    slip_path, slip_name = download(
        clinician, clinician.page.get_by_role("button", name="Download the slip (PDF)"), tmp_path
    )
    assert slip_name.startswith("slip-"), f"unexpected slip file name {slip_name!r}"
    assert slip_name.endswith(".pdf"), f"unexpected slip file name {slip_name!r}"
    pdf_text = qr_text_in_pdf(slip_path, shots)
    assert pdf_text == expected_link, "the PDF slip's QR code opens the access page with the printed code"

    # A second browser context stands for the recipient's phone, which has never seen the portal.
    recipient = open_visitor("recipient")
    page = recipient.page
    page.goto(screen_text)
    recipient.shot("scanned-link")
    code_field = page.get_by_label("Access code")
    expect(code_field).to_have_value(code)
    assert page.evaluate("() => window.location.hash") == "", "the fragment stays in the address bar"
    assert page.url == f"{portal_server.base_url}/access", f"the address bar shows {page.url}"
    assert code.lower() not in page.evaluate("() => document.location.href").lower()

    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/access/share")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Your report from")
    recipient.shot("share-page")

    # The server writes a request's log line once the response is sent, and the handler flushes each line.
    # The share page has loaded, so the POST that spent the code is in the file by now.
    records = log_records(portal_server)
    redemptions = [
        record
        for _line, record in records
        if record.get("path") == "/access" and record.get("method") == "POST"
    ]
    assert redemptions, "the POST that spent the code is missing from the server log"
    for line, record in records:
        lowered = line.lower()
        for form in code_forms(code):
            assert form not in lowered, f"the access code is in a server log line: {record.get('message')!r}"
        if record.get("message") == "request":
            assert "?" not in str(record.get("path", "")), f"a request line carries a query string: {line}"
            query_fields = [key for key in record if "query" in key.lower()]
            assert not query_fields, f"a request line logs a query: {line}"
        if str(record.get("path", "")).startswith("/access"):
            assert "code" not in lowered, f"a request line for /access mentions a code: {line}"

    clinician.assert_console_clean()
    recipient.assert_console_clean()
