"""JSON request bodies on the API: the Content-Type they need and the errors for bodies that are not JSON objects."""

from __future__ import annotations

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
