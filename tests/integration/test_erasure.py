"""Erasure now (GDPR Art 17): shares revoked, original and copies shredded, legal holds respected."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.audit.canonical import canonical_event_bytes
from portal.audit.merkle import leaf_hash
from portal.audit.recorder import event_mapping
from portal.blobs import BlobUnavailable
from portal.config import Settings
from portal.models import AccessEvent, Blob, DataKey, Document, Share
from portal.retention.erasure import add_hold, release_hold
from tests.conftest import csrf_from
from tests.helpers import (
    CLINICIAN,
    DPO,
    add_staff,
    create_share,
    portal_of,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)

PATIENT_REF = "PAT-ERASE-0815"


async def upload_and_share(
    app: Litestar, client: AsyncTestClient[Litestar]
) -> tuple[dict[str, str], str, dict[str, str]]:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref=PATIENT_REF)
    assert uploaded.status_code == 201, uploaded.text
    shared = await create_share(client, headers, [uploaded.json()["id"]])
    assert shared.status_code == 201, shared.text
    return headers, uploaded.json()["id"], shared.json()


async def blob_ids_of(app: Litestar, document_id: str, share_id: str) -> tuple[str, str]:
    async with portal_of(app).transaction() as db:
        document = await db.get(Document, uuid.UUID(document_id))
        share = await db.get(Share, uuid.UUID(share_id))
    assert document is not None and document.blob_id is not None
    assert share is not None and share.copy_blob_id is not None
    return document.blob_id, share.copy_blob_id


async def events(app: Litestar) -> list[AccessEvent]:
    async with portal_of(app).transaction() as db:
        return list((await db.scalars(select(AccessEvent).order_by(AccessEvent.seq))).all())


def blob_path(settings: Settings, blob_id: str) -> Path:
    return settings.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id


async def test_erase_api_shreds_everything(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    headers, document_id, share = await upload_and_share(app, client)
    original, copy = await blob_ids_of(app, document_id, share["id"])
    assert (await redeem(client, share["access_code"])).status_code == 200
    assert (await client.get("/access/share")).status_code == 200

    erased = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )

    assert erased.status_code == 200, erased.text
    assert erased.json()["shares_revoked"] == 1
    assert erased.json()["copies_shredded"] == 1
    assert (await client.get("/access/share")).status_code == 410
    assert not blob_path(settings, original).exists()
    assert not blob_path(settings, copy).exists()
    async with portal_of(app).transaction() as db:
        assert await db.get(DataKey, original) is None
        assert await db.get(DataKey, copy) is None
        assert await db.get(Blob, copy) is None
        document = await db.get(Document, uuid.UUID(document_id))
        stored_share = await db.get(Share, uuid.UUID(share["id"]))
    assert document is not None and document.erased_at is not None
    assert document.title == ""
    assert stored_share is not None and stored_share.revoked_at is not None
    assert stored_share.recipient_name == ""

    again = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert again.status_code == 404
    status = await client.get(f"/api/v1/shares/{share['id']}", headers=headers)
    assert status.json()["status"] == "revoked"


async def test_erase_events_once_and_intact(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, document_id, share = await upload_and_share(app, client)
    before = await events(app)

    erased = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "uploaded_in_error"}
    )
    assert erased.status_code == 200, erased.text
    after = await events(app)

    # Earlier events are unchanged, and the log is still gap-free with every leaf hash matching its event.
    assert [(event.seq, event.leaf_hash) for event in after[: len(before)]] == [
        (e.seq, e.leaf_hash) for e in before
    ]
    assert [event.seq for event in after] == list(range(1, len(after) + 1))
    for event in after:
        assert event.leaf_hash == leaf_hash(canonical_event_bytes(event_mapping(event)))

    added = after[len(before) :]
    assert [event.event_type for event in added] == ["share.revoked", "document.erased"]
    assert added[0].share_id == share["id"]
    assert added[1].document_id == document_id
    assert '"reason":"uploaded_in_error"' in added[1].details
    assert added[1].actor.startswith("token:")


async def test_erase_restored_backup_unreadable(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    headers, document_id, share = await upload_and_share(app, client)
    original, copy = await blob_ids_of(app, document_id, share["id"])
    backups = {blob_id: blob_path(settings, blob_id).read_bytes() for blob_id in (original, copy)}

    erased = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert erased.status_code == 200, erased.text

    # Restoring the bytes brings back ciphertext only: the data key they need is gone from the database.
    for blob_id, content in backups.items():
        path = blob_path(settings, blob_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        async with portal_of(app).transaction() as db:
            with pytest.raises(BlobUnavailable):
                await portal_of(app).blobs.read_all(db, blob_id)
    assert (await redeem(client, share["access_code"])).status_code == 400


async def test_erase_rejected_under_hold(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, document_id, _share = await upload_and_share(app, client)
    portal = portal_of(app)
    patient_hold = await add_hold(
        portal, document_id=None, patient_ref=PATIENT_REF, reason="Complaint 2026-114"
    )
    document_hold = await add_hold(portal, document_id=document_id, patient_ref=None, reason="Court order")
    before = len(await events(app))

    rejected = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert rejected.status_code == 409
    assert "legal hold" in rejected.json()["error"]["message"]
    assert rejected.json()["error"]["code"] == "legal_hold"
    await release_hold(portal, str(patient_hold.id))
    still = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert still.status_code == 409
    assert str(document_hold.id) in still.json()["error"]["message"]
    # Refused erasures add nothing; releasing the patient hold adds exactly one event.
    assert len(await events(app)) == before + 1

    await release_hold(portal, str(document_hold.id))
    erased = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert erased.status_code == 200, erased.text


async def test_erase_api_rejects_bad_requests(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers, document_id, _share = await upload_and_share(app, client)
    dpo = await token_for(app, DPO, "dpo")

    wrong_role = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=dpo, json={"reason": "patient_request"}
    )
    assert wrong_role.status_code == 403
    no_token = await client.post(f"/api/v1/documents/{document_id}/erase", json={"reason": "patient_request"})
    assert no_token.status_code == 401
    free_text = await client.post(
        f"/api/v1/documents/{document_id}/erase", headers=headers, json={"reason": "Mrs Smith asked"}
    )
    assert free_text.status_code == 400
    assert "patient_request" in free_text.json()["error"]["message"]
    unknown = await client.post(
        f"/api/v1/documents/{uuid.uuid4()}/erase", headers=headers, json={"reason": "patient_request"}
    )
    assert unknown.status_code == 404


async def test_erase_staff_form(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, document_id, _share = await upload_and_share(app, client)
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    token = csrf_from((await client.get("/staff")).text)
    action = f"/staff/documents/{document_id}/erase"

    unconfirmed = await client.post(
        action, data={"_csrf_token": token, "reason": "patient_request", "confirm": ""}
    )
    assert unconfirmed.status_code == 400
    assert "Type &#39;erase&#39;" in unconfirmed.text or "Type 'erase'" in unconfirmed.text
    no_csrf = await client.post(action, data={"reason": "patient_request", "confirm": "erase"})
    assert no_csrf.status_code == 403

    erased = await client.post(
        action,
        data={"_csrf_token": token, "reason": "patient_request", "confirm": "erase"},
        follow_redirects=False,
    )
    assert erased.status_code == 303
    assert erased.headers["location"] == "/staff"
    assert (await client.get(f"/staff/documents/{document_id}")).status_code == 404
    erased_events = [event for event in await events(app) if event.event_type == "document.erased"]
    assert len(erased_events) == 1
    assert erased_events[0].actor.startswith("staff:")
