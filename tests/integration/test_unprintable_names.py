"""Names the copy's font cannot draw are rejected on every path that creates or reissues a share.

A character the font lacks would be stamped as "?", and a copy "for ???" cannot be traced to its
recipient. Each rejection names the characters, and nothing is stored: no share and no copy.
"""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from portal.models import Blob, Share
from tests.conftest import csrf_from
from tests.helpers import (
    CLINICIAN,
    create_share,
    issue_share,
    portal_of,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)

UNPRINTABLE = [
    ("李小龙", "李, 小, 龙"),
    ("Anna 🌻 Schmidt", "🌻"),
]


def rejection(name: str, characters: str) -> str:
    return (
        f"The name {name} has characters that cannot be printed on the copy: {characters}. Enter the name in "
        "Latin letters, as on the recipient's ID."
    )


async def upload_and_sign_in(
    app: Litestar, client: AsyncTestClient[Litestar], patient_ref: str = "PAT-0042"
) -> str:
    """Upload a report, sign the clinician in to the web pages, and return the report's id."""
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref=patient_ref)
    await sign_in(client, CLINICIAN)
    return str(uploaded.json()["id"])


async def share_through_api(
    app: Litestar, client: AsyncTestClient[Litestar], name: str, accept_language: str = "en"
) -> Any:
    """Upload a report and share it with ``name`` through the API; return the response."""
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    headers["Accept-Language"] = accept_language
    return await create_share(client, headers, [uploaded.json()["id"]], recipient_name=name)


async def stored_counts(app: Litestar) -> tuple[int, int]:
    """Return the number of shares and of copy blobs."""
    async with portal_of(app).transaction() as db:
        shares = await db.scalar(select(func.count()).select_from(Share))
        copies = await db.scalar(select(func.count()).select_from(Blob).where(Blob.kind == "copy"))
    return int(shares or 0), int(copies or 0)


@pytest.mark.parametrize(("name", "characters"), UNPRINTABLE)
async def test_web_form_rejects_name(
    app: Litestar, client: AsyncTestClient[Litestar], name: str, characters: str
) -> None:
    document_id = await upload_and_sign_in(app, client)
    page = await client.get(f"/staff/documents/{document_id}")

    answer = await client.post(
        f"/staff/documents/{document_id}/shares",
        data={
            "_csrf_token": csrf_from(page.text),
            "profile": "patient",
            "recipient_name": name,
            "recipient_org": "Riverside GP",
            "purpose": "Follow-up",
        },
    )

    assert answer.status_code == 400
    field_error = re.search(r'<p class="field-error" id="recipient_name-error">(.*?)</p>', answer.text)
    assert field_error, "the error is shown at the name field"
    assert rejection(name, characters) in html.unescape(field_error.group(1))
    # The typed fields come back, so the clinician only corrects the name.
    assert f'value="{name}"' in answer.text
    assert 'value="Riverside GP"' in answer.text
    assert 'value="Follow-up"' in answer.text
    assert await stored_counts(app) == (0, 0)


async def test_share_dialog_rejects_organisation(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    document_id = await upload_and_sign_in(app, client)
    page = await client.get(f"/staff/shares/new?document={document_id}")

    answer = await client.post(
        "/staff/shares",
        data={
            "_csrf_token": csrf_from(page.text),
            "anchor": document_id,
            "document_ids": document_id,
            "profile": "patient",
            "recipient_name": "Anna Schmidt",
            "recipient_org": "北京 Clinic",
            "purpose": "Follow-up",
        },
    )

    assert answer.status_code == 400
    field_error = re.search(r'<p class="field-error" id="recipient_org-error">(.*?)</p>', answer.text)
    assert field_error, "the error is shown at the organisation field"
    assert "cannot be printed on the slip: 北, 京" in field_error.group(1)
    assert await stored_counts(app) == (0, 0)


@pytest.mark.parametrize(("name", "characters"), UNPRINTABLE)
async def test_api_rejects_name(
    app: Litestar, client: AsyncTestClient[Litestar], name: str, characters: str
) -> None:
    answer = await share_through_api(app, client, name)

    # The same response as the API's other checks of a share's fields.
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == "recipient_name"
    assert error["message"] == rejection(name, characters)
    assert await stored_counts(app) == (0, 0)


async def test_api_rejection_translated(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    answer = await share_through_api(app, client, "李小龙", accept_language="de")

    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert message.startswith("Der Name 李小龙 enthält Zeichen")
    assert "李, 小, 龙" in message


@pytest.mark.parametrize("name", ["محمد العلي", "מיכל כהן", "Nguyễn Thị Ánh"])
async def test_api_accepts_names_the_font_draws(
    app: Litestar, client: AsyncTestClient[Litestar], name: str
) -> None:
    answer = await share_through_api(app, client, name)

    assert answer.status_code == 201, answer.text
    assert await stored_counts(app) == (1, 1)


@pytest.mark.parametrize(("name", "characters"), UNPRINTABLE)
async def test_bulk_csv_rejects_name(
    app: Litestar, client: AsyncTestClient[Litestar], name: str, characters: str
) -> None:
    document_id = await upload_and_sign_in(app, client, patient_ref="PAT-1")
    page = await client.get("/staff/shares/bulk")
    csv_text = (
        f"patient_ref,recipient_name,document\nPAT-1,Anna Berg,{document_id}\nPAT-1,{name},{document_id}\n"
    )

    answer = await client.post(
        "/staff/shares/bulk",
        data={"_csrf_token": csrf_from(page.text), "profile": "patient", "purpose": "Year-end results"},
        files={"csv": ("batch.csv", csv_text.encode(), "text/csv")},
    )

    assert answer.status_code == 400
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", answer.text)
    assert [line for line, _message in rows] == ["3"]
    assert rejection(name, characters) in html.unescape(rows[0][1])
    assert await stored_counts(app) == (0, 0)


async def test_reissue_rejects_stored_name(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    # A share stored before names were checked: reissuing it would stamp "???" on the new copy.
    headers, shared = await issue_share(app, client)
    share_id = uuid.UUID(shared["id"])
    async with portal_of(app).transaction() as db:
        await db.execute(update(Share).where(Share.id == share_id).values(recipient_name="李小龙"))
        before = await db.get(Share, share_id)
        assert before is not None
        blob_id, code_hash = before.copy_blob_id, before.code_hash

    answer = await client.post(f"/api/v1/shares/{shared['id']}/reissue", headers=headers)

    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]["message"]
    assert "cannot be reissued" in message
    assert "李, 小, 龙" in message
    async with portal_of(app).transaction() as db:
        after = await db.get(Share, share_id)
        assert after is not None
        assert (after.copy_blob_id, after.code_hash) == (blob_id, code_hash)
    assert await stored_counts(app) == (1, 1)
