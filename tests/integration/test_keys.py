"""Key rotation: data keys re-wrapped under the new KEK, old KEKs retired, every report still readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.app import create_app
from portal.config import Settings
from portal.core import Portal
from portal.crypto.errors import KeyUnavailable
from portal.crypto.keyring import KeyRing
from portal.models import AccessEvent, DataKey, Document
from portal.retention.keys import KekStillInUse, retire_kek, rewrap_data_keys, rotate_keys
from tests.conftest import BASE_URL
from tests.helpers import CLINICIAN, create_share, portal_of, redeem, simple_pdf, token_for, upload_pdf


async def issue(
    app: Litestar, client: AsyncTestClient[Litestar], documents: int = 2
) -> tuple[list[str], str]:
    """Upload ``documents`` reports and share the first; return the document ids and the access code."""
    headers = await token_for(app, CLINICIAN, "clinician")
    ids = []
    for number in range(documents):
        uploaded = await upload_pdf(client, headers, simple_pdf(number + 1), patient_ref=f"PAT-KEY-{number}")
        assert uploaded.status_code == 201, uploaded.text
        ids.append(uploaded.json()["id"])
    shared = await create_share(client, headers, ids[:1])
    assert shared.status_code == 201, shared.text
    return ids, shared.json()["access_code"]


async def kek_ids_in_use(portal: Portal) -> set[str]:
    async with portal.transaction() as db:
        return set((await db.scalars(select(DataKey.kek_id))).all())


async def assert_everything_readable(portal: Portal, keyring: KeyRing) -> None:
    """Unwrap every data key with ``keyring`` and decrypt every blob completely."""
    async with portal.transaction() as db:
        rows = (await db.scalars(select(DataKey))).all()
    assert rows
    for row in rows:
        data_key = keyring.unwrap(row.kek_id, row.wrapped_key)
        plaintext = b"".join([chunk async for chunk in portal.blobs.plaintext(row.blob_id, data_key)])
        assert plaintext.startswith(b"%PDF")


async def test_rotate_then_retire(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    document_ids, code = await issue(app, client)
    old = portal.keyring.primary_kek_id

    result = await rotate_keys(portal)
    await retire_kek(portal, old)

    assert result.kek_id != old
    assert result.rewrapped == 3  # two originals and one copy
    assert result.unreadable == 0
    assert await kek_ids_in_use(portal) == {result.kek_id}
    reloaded = KeyRing.load(settings.kek_file)
    assert reloaded.primary_kek_id == result.kek_id
    assert old not in reloaded.kek_ids
    await assert_everything_readable(portal, reloaded)

    assert (await redeem(client, code)).status_code == 200
    downloaded = await client.get("/access/download")
    assert downloaded.status_code == 200
    assert downloaded.content.startswith(b"%PDF")
    async with portal.transaction() as db:
        for document_id in document_ids:
            document = await db.get(Document, uuid.UUID(document_id))
            assert document is not None and document.blob_id is not None
            assert (await portal.blobs.read_all(db, document.blob_id)).startswith(b"%PDF")
        rotated = (await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "key.rotated"))).all()
    assert len(rotated) == 1
    assert json.loads(rotated[0].details) == {
        "kek_id": result.kek_id,
        "previous_kek_id": old,
        "rewrapped": 3,
        "unreadable": 0,
    }


async def test_retire_rejected_while_in_use(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    await issue(app, client, documents=1)
    old = portal.keyring.primary_kek_id

    # A new primary KEK without the re-wrap is what a portal process that has not restarted leaves behind.
    portal.keyring.rotate(settings.kek_file)
    with pytest.raises(KekStillInUse, match=r"still wraps 2 data key\(s\)"):
        await retire_kek(portal, old)
    assert old in KeyRing.load(settings.kek_file).kek_ids

    moved = await rewrap_data_keys(portal)
    assert moved.rewrapped == 2
    await retire_kek(portal, old)
    with pytest.raises(KeyUnavailable):
        await retire_kek(portal, old)
    await assert_everything_readable(portal, KeyRing.load(settings.kek_file))


def run_portal(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PORTAL_DATA_DIR": str(settings.data_dir),
        "PORTAL_DATABASE_URL": settings.database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "portal.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# The services below the command run on both databases in the other tests.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_keys_commands(settings: Settings) -> None:
    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        _ids, code = await issue(app, client)
        old = portal_of(app).keyring.primary_kek_id

    rotated = run_portal(["keys", "rotate"], settings)
    assert rotated.returncode == 0, rotated.stderr
    assert "3 data key(s) re-wrapped" in rotated.stdout
    assert f"portal keys retire {old}" in rotated.stdout
    retired = run_portal(["keys", "retire", old], settings)
    assert retired.returncode == 0, retired.stderr
    unknown = run_portal(["keys", "retire", old], settings)
    assert unknown.returncode == 2
    assert "retired" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    # A portal started after the rotation has only the new KEK and still serves the copy.
    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        assert old not in portal_of(app).keyring.kek_ids
        assert (await redeem(client, code)).status_code == 200
        downloaded = await client.get("/access/download")
        assert downloaded.status_code == 200
        assert downloaded.content.startswith(b"%PDF")
        await assert_everything_readable(portal_of(app), portal_of(app).keyring)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_start_needs_matching_key_file(settings: Settings) -> None:
    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        await issue(app, client, documents=1)
    original = settings.kek_file.read_bytes()

    # After a restore without the key file, start-up stops, names the path and creates no new key ring.
    settings.kek_file.unlink()
    missing = run_portal(["init"], settings)
    assert missing.returncode == 2, missing.stderr
    assert f"The key file {settings.kek_file} was not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not settings.kek_file.exists()

    # The key file of another installation lacks the key ids of the stored data keys.
    KeyRing.create(settings.kek_file)
    other = run_portal(["init"], settings)
    assert other.returncode == 2, other.stderr
    assert "which wraps data keys in the database" in other.stderr
    assert "Traceback" not in other.stderr

    settings.kek_file.write_bytes(original)
    restored = run_portal(["init"], settings)
    assert restored.returncode == 0, restored.stderr
