"""Rejected uploads and bulk files: each message names the file, the date or the line, and nothing stored is lost."""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.documents.controllers import UPLOAD_BODY_LIMIT
from portal.documents.service import shown_filename
from portal.models import Blob, DataKey, Document, Share
from tests.conftest import CORPUS_DIR, csrf_from
from tests.helpers import CLINICIAN, portal_of, sign_in, simple_pdf, token_for, upload_pdf

POLICY_MAX_BYTES = 30_000_000
# 32.8 MB as the size message rounds it (up, to one decimal).
OVERSIZED_BYTES = 32_750_000
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(200)
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)
HEIC_BYTES = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)


async def stored_state(app: Litestar) -> dict[str, Any]:
    """Return the stored reports, shares and encrypted blobs, to compare before and after."""
    async with portal_of(app).transaction() as db:
        return {
            "documents": sorted(
                (str(row.id), row.title, str(row.blob_id), row.erased_at)
                for row in (
                    await db.execute(
                        select(Document.id, Document.title, Document.blob_id, Document.erased_at)
                    )
                )
            ),
            "shares": sorted(str(row) for row in (await db.scalars(select(Share.id))).all()),
            "blobs": sorted(str(row) for row in (await db.scalars(select(Blob.id))).all()),
            "keys": sorted(str(row) for row in (await db.scalars(select(DataKey.blob_id))).all()),
        }


async def signed_in_with_report(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> tuple[str, dict[str, str]]:
    """Upload one report through the API, sign the clinician in; return the report's id and the API header."""
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), title="Report PAT-1", patient_ref="PAT-1")
    assert uploaded.status_code == 201, uploaded.text
    await sign_in(client, CLINICIAN)
    return uploaded.json()["id"], headers


async def post_form(
    client: AsyncTestClient[Litestar],
    filename: str,
    content: bytes,
    *,
    title: str = "Photo series week 6",
    patient_ref: str = "PAT-0042",
    report_date: str = "2026-11-30",
) -> Any:
    """Send the dashboard's upload form as a browser without JavaScript does: the token in the form only."""
    token = csrf_from((await client.get("/staff")).text)
    return await client.post(
        "/staff/documents",
        data={"_csrf_token": token, "title": title, "patient_ref": patient_ref, "report_date": report_date},
        files={"file": (filename, content, "application/pdf")},
    )


def field_error(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" id="{field}-error">.*?</span>(.*?)</p>', page, re.S)
    assert match, f"the page shows no error at the field {field}"
    return html.unescape(match.group(1))


def assert_form_kept(page: str, *, title: str = "Photo series week 6", patient_ref: str = "PAT-0042") -> None:
    assert 'action="/staff/documents"' in page, "the upload form is shown again"
    assert f'value="{title}"' in page
    assert f'value="{patient_ref}"' in page


async def test_oversized_file_keeps_the_form(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id, _headers = await signed_in_with_report(app, client)
    before = await stored_state(app)

    answer = await post_form(client, "big-photo-series.pdf", bytes(OVERSIZED_BYTES))

    assert answer.status_code == 413
    assert_form_kept(answer.text)
    assert field_error(answer.text, "file") == (
        "big-photo-series.pdf is 32.8 MB; a report may be at most 30 MB. "
        "Reduce the photo resolution and export it again."
    )
    assert await stored_state(app) == before
    assert (await client.get(f"/staff/documents/{document_id}")).status_code == 200


async def test_form_carries_the_size_check(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await signed_in_with_report(app, client)

    english = (await client.get("/staff")).text
    assert f'data-max-bytes="{POLICY_MAX_BYTES}"' in english
    assert (
        'data-too-large="{name} is {size} MB; a report may be at most 30 MB. '
        'Reduce the photo resolution and export it again."'
    ) in english

    german = (await client.get("/staff?lang=de")).text
    assert 'data-too-large="{name} ist {size} MB groß; ein Bericht darf höchstens 30 MB groß sein.' in german


async def test_oversized_german_message(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await signed_in_with_report(app, client)
    await client.get("/staff?lang=de")

    answer = await post_form(client, "big-photo-series.pdf", bytes(OVERSIZED_BYTES))

    assert answer.status_code == 413
    assert field_error(answer.text, "file").startswith(
        "big-photo-series.pdf ist 32,8 MB groß; ein Bericht darf höchstens 30 MB groß sein."
    )


async def test_body_over_route_limit_names_the_limit(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    document_id, headers = await signed_in_with_report(app, client)
    before = await stored_state(app)

    answer = await post_form(client, "whole-archive.pdf", bytes(UPLOAD_BODY_LIMIT + 1))

    assert answer.status_code == 413
    assert "The upload is larger than 30 MB, the most a report may have." in answer.text
    assert '<a href="/staff">Back to the form</a>' in answer.text

    api = await upload_pdf(client, headers, bytes(UPLOAD_BODY_LIMIT + 1))
    assert api.status_code == 413
    assert api.json()["error"]["message"].startswith("The upload is larger than 30 MB")
    assert await stored_state(app) == before
    assert (await client.get(f"/staff/documents/{document_id}")).status_code == 200


@pytest.mark.parametrize(
    ("content", "kind"),
    [(JPEG_BYTES, "JPEG"), (PNG_BYTES, "PNG"), (HEIC_BYTES, "HEIC")],
    ids=["jpeg", "png", "heic"],
)
async def test_image_renamed_to_pdf(
    app: Litestar, client: AsyncTestClient[Litestar], content: bytes, kind: str
) -> None:
    await signed_in_with_report(app, client)
    before = await stored_state(app)

    answer = await post_form(client, "wound.pdf", content)

    assert answer.status_code == 422
    assert_form_kept(answer.text)
    assert field_error(answer.text, "file") == (
        f"wound.pdf is a {kind} image, not a PDF. Export the report as PDF from your photo system."
    )
    assert await stored_state(app) == before


async def test_image_over_api_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _document_id, headers = await signed_in_with_report(app, client)
    before = await stored_state(app)

    answer = await client.post(
        "/api/v1/documents",
        headers=headers,
        files={"file": ("wound.pdf", JPEG_BYTES, "application/pdf")},
        data={"title": "Wound", "patient_ref": "PAT-1"},
    )

    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith("wound.pdf is a JPEG image, not a PDF.")
    assert answer.json()["error"]["field"] == "file"
    assert await stored_state(app) == before


async def test_corpus_png_named_as_image(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    png = CORPUS_DIR / "not-a-pdf-png-image.pdf"

    answer = await upload_pdf(client, headers, png.read_bytes())

    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "report.pdf is a PNG image, not a PDF. Export the report as PDF from your photo system."
    )


async def test_every_file_rejection_names_the_file(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await signed_in_with_report(app, client)
    before = await stored_state(app)

    not_pdf = await post_form(client, "scan.pdf", b"<html><body>not a report</body></html>")
    assert not_pdf.status_code == 422
    assert_form_kept(not_pdf.text)
    assert field_error(not_pdf.text, "file").startswith(
        "scan.pdf was not accepted. The uploaded file is not a PDF"
    )

    empty = await post_form(client, "empty.pdf", b"")
    assert field_error(empty.text, "file").startswith("empty.pdf was not accepted.")

    # A right-to-left override would make the name display as something else; a long name is cut short.
    spoofed = "invoice\u202efdp." + "x" * 80 + ".pdf"
    long_name = await post_form(client, spoofed, b"<html></html>")
    shown = field_error(long_name.text, "file")
    assert "\u202e" not in shown
    assert shown.startswith("invoicefdp.xxxx")
    assert shown.split(" was not accepted.")[0].endswith("x….pdf")
    assert await stored_state(app) == before


def test_shown_filename() -> None:
    assert shown_filename("wound.pdf") == "wound.pdf"
    assert shown_filename("C:\\fakepath\\wound.pdf") == "wound.pdf"
    assert shown_filename("a\x00b\u200b\u2066c.pdf") == "abc.pdf"
    assert shown_filename("\u202e\x07") == "The file"
    long = shown_filename("y" * 200 + ".pdf")
    assert len(long) == 60
    assert long.endswith("y….pdf")


@pytest.mark.parametrize(
    ("report_date", "message"),
    [
        (
            "2099-01-01",
            "Report date 2099-01-01 is in the future. Enter the date the report was written, today or earlier, "
            "or leave the field empty.",
        ),
        (
            "0203-05-04",
            "Report date 0203-05-04 is before 1900. Check the year (for example 2003, not 0203) and enter the "
            "date the report was written.",
        ),
    ],
)
async def test_implausible_report_date(
    app: Litestar, client: AsyncTestClient[Litestar], report_date: str, message: str
) -> None:
    _document_id, headers = await signed_in_with_report(app, client)
    before = await stored_state(app)

    form = await post_form(client, "scar.pdf", simple_pdf(), report_date=report_date)
    assert form.status_code == 400
    assert_form_kept(form.text)
    assert field_error(form.text, "report_date") == message

    api = await upload_pdf(client, headers, simple_pdf(), report_date=report_date)
    assert api.status_code == 400
    assert api.json()["error"] == {
        "code": "invalid_input",
        "message": message,
        "field": "report_date",
        "request_id": api.json()["error"]["request_id"],
    }
    assert await stored_state(app) == before


async def test_report_date_bounds_accepted(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    for accepted in ("1900-01-01", tomorrow.isoformat()):
        answer = await upload_pdf(client, headers, simple_pdf(), report_date=accepted)
        assert answer.status_code == 201, answer.text
        assert answer.json()["report_date"] == accepted

    too_late = (tomorrow + dt.timedelta(days=1)).isoformat()
    rejected = await upload_pdf(client, headers, simple_pdf(), report_date=too_late)
    assert rejected.status_code == 400
    assert f"Report date {too_late} is in the future" in rejected.json()["error"]["message"]
