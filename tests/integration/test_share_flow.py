"""The whole flow through the HTTP API and the recipient pages: upload, share, redeem, download, export."""

from __future__ import annotations

import io
import json

import pikepdf
import pypdfium2
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import CORPUS_DIR
from tests.helpers import CLINICIAN, DPO, create_share, redeem, token_for, upload_pdf

SAMPLE = CORPUS_DIR / "rotate-mixed-90-180-270-six-pages.pdf"


def page_texts(data: bytes, password: str) -> list[str]:
    document = pypdfium2.PdfDocument(data, password=password)
    try:
        return [document[index].get_textpage().get_text_range() for index in range(len(document))]
    finally:
        document.close()


async def test_flow_upload_share_redeem_download(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    clinician = await token_for(app, CLINICIAN, "clinician")
    dpo = await token_for(app, DPO, "dpo")

    uploaded = await upload_pdf(client, clinician, SAMPLE.read_bytes())
    assert uploaded.status_code == 201, uploaded.text
    document = uploaded.json()
    assert document["pages"] == 6

    shared = await create_share(client, clinician, [document["id"]])
    assert shared.status_code == 201, shared.text
    share = shared.json()
    code = share["access_code"]
    assert share["access_url"].endswith("/access")

    landing = await client.get("/access")
    assert landing.status_code == 200

    redeemed = await redeem(client, code.lower().replace("-", " "))
    assert redeemed.status_code == 200
    assert "Zoë Łukasiewicz" in redeemed.text

    downloaded = await client.get("/access/download")
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "application/pdf"
    assert downloaded.headers["content-disposition"].startswith("attachment;")
    copy = downloaded.content

    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(copy))
    with pikepdf.open(io.BytesIO(copy), password=code) as opened:
        assert opened.encryption.R == 6
    texts = page_texts(copy, code)
    assert len(texts) == 6
    assert all("Zoë Łukasiewicz" in text for text in texts)

    status = await client.get(f"/api/v1/shares/{share['id']}", headers=clinician)
    assert status.json()["status"] == "downloaded"
    assert status.json()["downloads_completed"] == 1

    export = await client.get(
        "/api/v1/audit/events", params={"format": "jsonl", "patient_ref": "PAT-0042"}, headers=dpo
    )
    assert export.status_code == 200
    events = [json.loads(line) for line in export.text.splitlines()]
    types = [event["event_type"] for event in events]
    # A patient search also finds the events that name only the share: who opened and downloaded it.
    assert types == [
        "document.uploaded",
        "share.created",
        "code.redeemed",
        "access.download.started",
        "access.download.completed",
    ]

    full = await client.get("/api/v1/audit/events", params={"format": "jsonl"}, headers=dpo)
    all_types = [json.loads(line)["event_type"] for line in full.text.splitlines()]
    for expected in ("code.redeemed", "access.download.started", "access.download.completed"):
        assert expected in all_types
