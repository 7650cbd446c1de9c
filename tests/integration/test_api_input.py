"""JSON request bodies on the API: the Content-Type they need, the errors for bodies that are not JSON objects or
name unknown fields, and the ids a share can be read by."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.models import Document, Share
from tests.helpers import CLINICIAN, portal_of, simple_pdf, token_for, upload_pdf


async def share_body(app: Litestar, client: AsyncTestClient[Litestar]) -> tuple[dict[str, str], bytes]:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    body = {
        "document_ids": [uploaded.json()["id"]],
        "profile": "patient",
        "recipient_name": "Ada Jansen",
        "purpose": "Follow-up after treatment",
    }
    return headers, json.dumps(body).encode()


async def share_count(app: Litestar) -> int:
    async with portal_of(app).transaction() as db:
        return int(await db.scalar(select(func.count()).select_from(Share)) or 0)


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        (None, "no Content-Type header"),
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
    ],
)
async def test_share_body_needs_json_content_type(
    app: Litestar, client: AsyncTestClient[Litestar], content_type: str | None, shown: str
) -> None:
    headers, body = await share_body(app, client)
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}

    answer = await client.post("/api/v1/shares", headers=headers, content=body)

    assert answer.status_code == 415, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["message"] == (
        f"Send the body as JSON with the header Content-Type: application/json (this request had {shown})."
    )
    assert await share_count(app) == 0


async def test_json_with_charset_accepted(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)

    answer = await client.post(
        "/api/v1/shares", headers={**headers, "Content-Type": "Application/JSON; charset=utf-8"}, content=body
    )

    assert answer.status_code == 201, answer.text
    assert await share_count(app) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The request body is not valid JSON. Send a JSON object."),
        (b"\xff\xfe", "The request body is not valid JSON. Send a JSON object."),
        (b'["a list"]', "The request body must be a JSON object."),
    ],
)
async def test_share_body_must_be_object(
    app: Litestar, client: AsyncTestClient[Litestar], body: bytes, message: str
) -> None:
    headers, _ = await share_body(app, client)

    answer = await client.post(
        "/api/v1/shares", headers={**headers, "Content-Type": "application/json"}, content=body
    )

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "code": "invalid_input",
        "message": message,
        "field": None,
        "request_id": answer.json()["error"]["request_id"],
    }


async def test_erase_body_needs_json_content_type(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    document_id = uploaded.json()["id"]

    answer = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, content=b'{"reason": "patient_request"}'
    )

    assert answer.status_code == 415, answer.text
    assert "Content-Type: application/json" in answer.json()["error"]["message"]
    # Nothing was erased: the document keeps its stored file.
    async with portal_of(app).transaction() as db:
        document = await db.get(Document, uuid.UUID(document_id))
    assert document is not None and document.blob_id is not None


async def test_unknown_share_field_refused(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)
    misspelt = {**json.loads(body), "lang": "de"}

    answer = await client.post("/api/v1/shares", headers=headers, json=misspelt)

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "lang"
    assert error["message"] == (
        "Unknown field 'lang'. A share takes: date_of_birth, document_ids, expiry_days, language, "
        "max_downloads, not_before, profile, purpose, recipient_name, recipient_org."
    )
    assert await share_count(app) == 0


async def test_share_options_as_on_the_form(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    options = {
        "recipient_org": "Northside Practice",
        "expiry_days": 3,
        "max_downloads": 1,
        "not_before": start.isoformat(),
    }

    answer = await client.post("/api/v1/shares", headers=headers, json={**json.loads(body), **options})

    assert answer.status_code == 201, answer.text
    assert dt.datetime.fromisoformat(answer.json()["not_before"]) == start
    assert answer.json()["recipient_org"] == "Northside Practice"
    status = await client.get(f"/api/v1/shares/{answer.json()['id']}", headers=headers)
    assert dt.datetime.fromisoformat(status.json()["not_before"]) == start
    assert status.json()["recipient_org"] == "Northside Practice"
    async with portal_of(app).transaction() as db:
        share = await db.scalar(select(Share))
    assert share is not None
    assert share.recipient_org == "Northside Practice"
    assert share.max_downloads == 1
    assert share.not_before == start
    assert share.expires_at - start == dt.timedelta(days=3)


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        ({"expiry_days": "3"}, "expiry_days must be a whole number, not \"3\"."),
        ({"max_downloads": True}, "max_downloads must be a whole number, not true."),
        ({"expiry_days": 99}, "above the profile's maximum of 14"),
        ({"max_downloads": 9}, "above the profile's maximum of 3"),
        ({"not_before": "next week"}, "Start time 'next week' is invalid"),
        ({"recipient_org": 7}, "recipient_org must be a string."),
    ],
)
async def test_share_option_errors_named(
    app: Litestar, client: AsyncTestClient[Litestar], option: dict[str, object], shown: str
) -> None:
    headers, body = await share_body(app, client)

    answer = await client.post("/api/v1/shares", headers=headers, json={**json.loads(body), **option})

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == next(iter(option))
    assert shown in error["message"]
    assert await share_count(app) == 0


async def test_missing_profile_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)
    without_profile = {key: value for key, value in json.loads(body).items() if key != "profile"}

    answer = await client.post("/api/v1/shares", headers=headers, json=without_profile)

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "profile"
    assert error["message"].startswith("No recipient profile chosen. Use one of: patient, ")


async def test_unknown_document_names_field(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)
    unknown_id = str(uuid.uuid4())
    unknown_document = {**json.loads(body), "document_ids": [unknown_id]}

    answer = await client.post("/api/v1/shares", headers=headers, json=unknown_document)

    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["field"] == "document_ids"
    assert answer.json()["error"]["message"] == f"Document {unknown_id} was not found."


async def test_share_read_by_reference(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, body = await share_body(app, client)
    created = await client.post("/api/v1/shares", headers=headers, json=json.loads(body))
    assert created.status_code == 201, created.text
    share_id, reference = created.json()["id"], created.json()["reference"]

    # The reference as printed on the slip, and typed in lower case, reach the same share as its id.
    for key in (share_id, reference, reference.lower()):
        answer = await client.get(f"/api/v1/shares/{key}", headers=headers)
        assert answer.status_code == 200, f"{key}: {answer.text}"
        assert answer.json()["id"] == share_id

    missing = await client.get("/api/v1/shares/S-AAAAAAAA", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Share S-AAAAAAAA was not found."


async def test_upload_needs_multipart(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")

    answer = await client.post(
        "/api/v1/documents", headers=headers, json={"title": "Report", "patient_ref": "PAT-1"}
    )

    assert answer.status_code == 415, answer.text
    assert answer.json()["error"]["message"] == (
        "Send the upload as multipart/form-data with the PDF in a part named file "
        "(this request had application/json)."
    )


async def test_upload_missing_field_named(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")

    answer = await client.post(
        "/api/v1/documents",
        headers=headers,
        data={"title": "Report"},
        files={"file": ("report.pdf", simple_pdf(), "application/pdf")},
    )

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "patient_ref"
    assert error["message"] == "Patient reference is missing. Fill it in and send again."
