"""Bulk issue from a CSV file: all rows checked first, one PDF of slips, nothing left after a failure."""

from __future__ import annotations

import html
import io
import re
from typing import Any

import pypdfium2
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.errors import UploadRejected
from portal.models import DataKey, Document, Share
from portal.shares import bulk
from tests.conftest import csrf_from
from tests.helpers import CLINICIAN, portal_of, redeem, sign_in, simple_pdf, token_for, upload_pdf

CODE_IN_TEXT = re.compile(r"\b([0-9A-Z]{4}-){4}[0-9A-Z]{4}\b")


async def upload_reports(app: Litestar, client: AsyncTestClient[Litestar]) -> dict[str, str]:
    """Upload one report for each of three patients, sign in, and return patient reference → document id."""
    headers = await token_for(app, CLINICIAN, "clinician")
    ids = {}
    for patient in ("PAT-1", "PAT-2", "PAT-3"):
        uploaded = await upload_pdf(
            client, headers, simple_pdf(), patient_ref=patient, title=f"Report {patient}"
        )
        assert uploaded.status_code == 201, uploaded.text
        ids[patient] = uploaded.json()["id"]
    await sign_in(client, CLINICIAN)
    return ids


async def send_csv(client: AsyncTestClient[Litestar], text: str, profile: str = "patient") -> Any:
    page = await client.get("/staff/shares/bulk")
    return await client.post(
        "/staff/shares/bulk",
        data={"_csrf_token": csrf_from(page.text), "profile": profile, "purpose": "Year-end results"},
        files={"csv": ("batch.csv", text.encode(), "text/csv")},
    )


async def stored_documents(app: Litestar) -> list[tuple[str, str, str]]:
    async with portal_of(app).transaction() as db:
        rows = await db.execute(select(Document.id, Document.title, Document.blob_id))
        return sorted((str(row.id), row.title, str(row.blob_id)) for row in rows)


async def share_count(app: Litestar) -> int:
    async with portal_of(app).transaction() as db:
        return int(await db.scalar(select(func.count()).select_from(Share)) or 0)


def page_texts(pdf: bytes) -> list[str]:
    document = pypdfium2.PdfDocument(pdf)
    return [document[index].get_textpage().get_text_range() for index in range(len(document))]


async def test_bulk_creates_slips(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    ids = await upload_reports(app, client)
    csv_text = (
        "patient_ref,recipient_name,date_of_birth,document\n"
        f"PAT-1,Anna Berg,1950-01-02,{ids['PAT-1']}\n"
        "PAT-2,Jan Nowak,,Report PAT-2\n"
        f"PAT-3,Zoë Łukasiewicz,,{ids['PAT-3']}\n"
    )
    answer = await send_csv(client, csv_text)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert "no-store" in answer.headers["cache-control"]

    texts = page_texts(answer.content)
    assert len(texts) == 3, "one slip per page"
    assert "Anna Berg" in texts[0]
    assert "Jan Nowak" in texts[1]
    assert await share_count(app) == 3

    code = CODE_IN_TEXT.search(texts[1])
    assert code
    opened = await redeem(client, code.group(0))
    assert str(opened.url).endswith("/access/share")


async def test_bad_row_creates_nothing(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    ids = await upload_reports(app, client)
    csv_text = (
        "patient_ref,recipient_name,date_of_birth,document\n"
        f"PAT-1,Anna Berg,,{ids['PAT-1']}\n"
        "PAT-2,Jan Nowak,,No such title\n"
        f"PAT-3,,,{ids['PAT-3']}\n"
        f"PAT-1,Eve Adams,,{ids['PAT-2']}\n"
    )
    answer = await send_csv(client, csv_text)
    assert answer.status_code == 400
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", answer.text)
    assert [line for line, _message in rows] == ["3", "4", "5"]
    assert "No report" in rows[0][1]
    assert "No such title" in rows[0][1]
    assert "Recipient name is missing" in rows[1][1]
    assert "belongs to another patient" in rows[2][1]
    assert "Anna Berg" not in answer.text.split("<form")[0], "valid rows' names are not echoed"
    assert await share_count(app) == 0


async def test_batch_size_limited(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    ids = await upload_reports(app, client)
    line = f"PAT-1,Anna Berg,,{ids['PAT-1']}\n"
    answer = await send_csv(
        client, "patient_ref,recipient_name,date_of_birth,document\n" + line * (bulk.MAX_ROWS + 1)
    )
    assert answer.status_code == 400
    assert f"more than {bulk.MAX_ROWS} rows" in answer.text
    assert await share_count(app) == 0


async def test_missing_column_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await upload_reports(app, client)
    answer = await send_csv(client, "patient_ref;recipient_name\nPAT-1;Anna Berg\n")
    assert answer.status_code == 400
    assert "lacks the column(s) document" in answer.text


async def test_failure_midway_withdraws(
    app: Litestar, client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await upload_reports(app, client)
    real_create = bulk.create_share
    calls = {"count": 0}

    async def fail_on_third(*args: Any, **kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] == 3:
            raise UploadRejected("The PDF worker rejected the copy.")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(bulk, "create_share", fail_on_third)
    csv_text = "patient_ref,recipient_name,date_of_birth,document\n" + "".join(
        f"{patient},Anna Berg,,{document_id}\n" for patient, document_id in ids.items()
    )
    answer = await send_csv(client, csv_text)
    assert answer.status_code == 500
    assert "line 4 failed" in answer.text
    assert "2 share(s) created before it were revoked" in answer.text

    async with portal_of(app).transaction() as db:
        shares = (await db.scalars(select(Share))).all()
        key_ids = set((await db.scalars(select(DataKey.blob_id))).all())
    assert len(shares) == 2
    assert all(share.revoked_at is not None for share in shares)
    assert not {share.copy_blob_id for share in shares} & key_ids, "the copies' data keys are destroyed"


def test_semicolon_csv_parsed() -> None:
    rows = bulk.read_rows(
        "\ufeffPatient reference;Recipient name;Date of birth;Document\nPAT-1;Anna;;Report\n".encode()
    )
    assert rows == [
        (2, {"patient_ref": "PAT-1", "recipient_name": "Anna", "date_of_birth": "", "document": "Report"})
    ]


def test_non_utf8_rejected() -> None:
    with pytest.raises(bulk.BulkRejected) as rejected:
        bulk.read_rows(io.BytesIO("patient_ref\nZoë".encode("latin-1")).getvalue())
    assert "not UTF-8" in rejected.value.errors[0].message


async def test_windows_1252_file_names_line_and_byte(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    ids = await upload_reports(app, client)
    before = await stored_documents(app)
    csv_text = (
        "patient_ref,recipient_name,date_of_birth,document\n"
        f"PAT-1,Anna Berg,,{ids['PAT-1']}\r\n"
        f"PAT-2,Zoë Müller,,{ids['PAT-2']}\r\n"
    )
    page = await client.get("/staff/shares/bulk")
    answer = await client.post(
        "/staff/shares/bulk",
        data={"_csrf_token": csrf_from(page.text), "profile": "patient", "purpose": "Year-end results"},
        files={"csv": ("batch.csv", csv_text.encode("cp1252"), "text/csv")},
    )

    assert answer.status_code == 400
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", answer.text)
    position = csv_text.encode("cp1252").index("ë".encode("cp1252")) + 1
    assert rows == [
        (
            "3",
            f"This line is not UTF-8 text: byte {position} of the file is 0xEB. The file was probably saved in a "
            "Windows or Latin-1 encoding. Save it again as CSV in UTF-8 (in Excel: CSV UTF-8).",
        )
    ]
    assert await share_count(app) == 0
    assert await stored_documents(app) == before


def test_whole_file_problem_has_no_line() -> None:
    with pytest.raises(bulk.BulkRejected) as rejected:
        bulk.read_rows(b"x" * (bulk.MAX_CSV_BYTES + 1))
    assert rejected.value.errors[0].line is None


async def test_title_matches_ignoring_case_and_spaces(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    await upload_reports(app, client)
    csv_text = "patient_ref;recipient_name;document\nPAT-2;Jan Nowak;  REPORT pat-2  \n"
    answer = await send_csv(client, csv_text)
    assert answer.status_code == 200, answer.text
    assert await share_count(app) == 1


async def test_unknown_title_names_the_patients_titles(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> None:
    ids = await upload_reports(app, client)
    headers = await token_for(app, CLINICIAN, "clinician")
    for title in ("Scar review", "Wound photos week 2"):
        uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-2", title=title)
        assert uploaded.status_code == 201, uploaded.text
    before = await stored_documents(app)

    csv_text = (
        "patient_ref,recipient_name,document\n"
        "PAT-2,Jan Nowak,Wound photo week 2\n"
        "PAT-9,Eve Adams,Report PAT-9\n"
        f"PAT-1,Anna Berg,{ids['PAT-1']}\n"
    )
    answer = await send_csv(client, csv_text)

    assert answer.status_code == 400
    found = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", answer.text)
    rows = [(line, html.unescape(message)) for line, message in found]
    assert rows == [
        (
            "2",
            "No report 'Wound photo week 2' was found for patient reference 'PAT-2'. Its reports are titled: "
            "'Report PAT-2', 'Scar review', 'Wound photos week 2'.",
        ),
        (
            "3",
            "No report 'Report PAT-9' was found for patient reference 'PAT-9'. No reports are stored for this "
            "patient reference. Check the reference.",
        ),
    ]
    assert await share_count(app) == 0
    assert await stored_documents(app) == before


async def test_unknown_title_names_the_closest(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    titles = [f"Visit {number}" for number in range(1, 7)] + ["Wound photos week 2"]
    for title in titles:
        uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref="PAT-2", title=title)
        assert uploaded.status_code == 201, uploaded.text
    await sign_in(client, CLINICIAN)

    answer = await send_csv(
        client, "patient_ref,recipient_name,document\nPAT-2,Jan Nowak,Wound photo week 2\n"
    )

    assert answer.status_code == 400
    message = html.unescape(re.findall(r"<tr><td>2</td><td>(.*?)</td></tr>", answer.text)[0])
    closest = message.split("The closest of its 7 titles: ")[1]
    assert closest.startswith("'Wound photos week 2', ")
    assert closest.count("'") == 6, "three titles of seven are named"


async def test_bulk_language_column(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    ids = await upload_reports(app, client)
    csv_text = (
        "patient_ref,recipient_name,document,language\n"
        f"PAT-1,Anna Berg,{ids['PAT-1']},de\n"
        f"PAT-2,Jan Nowak,{ids['PAT-2']},\n"
    )
    answer = await send_csv(client, csv_text)
    assert answer.status_code == 200, answer.text
    texts = page_texts(answer.content)
    assert "Öffnen Sie diese Adresse in einem Webbrowser" in texts[0]
    assert "Open this address in a web browser" in texts[1], "an empty cell takes the page's language"

    wrong = await send_csv(client, csv_text.replace(",de\n", ",klingon\n"))
    assert wrong.status_code == 400
    assert "The file has a problem. Nothing was created: fix it and upload the file again." in wrong.text
    assert "Language &#39;klingon&#39; is not available" in wrong.text
    assert await share_count(app) == 2
