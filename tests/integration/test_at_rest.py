"""Encryption at rest: dumps of the database and data folder, and damaged blobs that are never served."""

from __future__ import annotations

import io
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from litestar import Litestar
from litestar.exceptions import LitestarException
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, func, select, update

from portal.blobs import STREAM_SEGMENTS
from portal.config import Settings
from portal.crypto.envelope import HEADER_SIZE, SEALED_SEGMENT_SIZE, SEGMENT_SIZE
from portal.crypto.errors import BlobIntegrityError
from portal.models import BLOB_CHUNK_TABLE, AccessEvent, Base, Share
from tests.conftest import BASE_URL
from tests.helpers import CLINICIAN, create_share, portal_of, redeem, token_for, upload_pdf

# Distinctive values, so a hit in a dump cannot come from anything else.
PATIENT_REF = "PAT-QX7-ZEBRA-4417"
RECIPIENT = "Quirina Vandermolen-Yrjölä"
DAMAGED_MESSAGE = "failed its integrity check; ask the clinic to reissue"


def photo_pdf(seed: int = 1, side: int = 512) -> bytes:
    """A one-page PDF with an uncompressed random grey image, so its copy spans several 64 KiB segments."""
    import random

    pixels = random.Random(seed).randbytes(side * side)
    pdf = pikepdf.new()
    image = pdf.make_stream(
        pixels,
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=side,
        Height=side,
        ColorSpace=pikepdf.Name.DeviceGray,
        BitsPerComponent=8,
    )
    content = pdf.make_stream(b"q 400 0 0 400 100 300 cm /Im1 Do Q")
    page = pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, 595, 842],
        Contents=content,
        Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im1=image)),
    )
    pdf.pages.append(pikepdf.Page(page))
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


async def share_photo(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    seed: int = 1,
    recipient: str = RECIPIENT,
    side: int = 512,
) -> dict[str, Any]:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, photo_pdf(seed, side), patient_ref=PATIENT_REF)
    assert uploaded.status_code == 201, uploaded.text
    shared = await create_share(client, headers, [uploaded.json()["id"]], recipient_name=recipient)
    assert shared.status_code == 201, shared.text
    return {"document_id": uploaded.json()["id"], **shared.json()}


async def copy_blob_id(app: Litestar, share_id: str) -> str:
    async with portal_of(app).transaction() as db:
        share = await db.get(Share, uuid.UUID(share_id))
        assert share is not None and share.copy_blob_id is not None
        return share.copy_blob_id


def blob_path(settings: Settings, blob_id: str) -> Path:
    return settings.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id


def forms_of(value: str | bytes) -> list[bytes]:
    """The value's raw bytes and its hex spelling, as pg_dump writes bytea columns."""
    raw = value.encode() if isinstance(value, str) else value
    return [raw, raw.hex().encode()]


async def table_rows(app: Litestar) -> dict[str, bytes]:
    """Every table's rows as bytes (text as UTF-8, binary columns raw and as hex), keyed by table name."""
    rows: dict[str, bytes] = {}
    async with portal_of(app).transaction() as db:
        for table in Base.metadata.sorted_tables:
            parts: list[bytes] = []
            for row in await db.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.extend(forms_of(bytes(value)))
                    elif value is not None:
                        parts.append(str(value).encode())
            rows[table.name] = b"\n".join(parts)
    return rows


@pytest.fixture(params=["filesystem", "database"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    return Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_CLINIC_NAME": "Riverside Dermatology",
            "PORTAL_PUBLIC_URL": BASE_URL,
            "PORTAL_BLOB_STORE": request.param,
        }
    )


async def test_dump_without_plaintext(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    first = await share_photo(app, client, seed=1)
    await share_photo(app, client, seed=2)
    assert (await redeem(client, first["access_code"])).status_code == 200
    downloaded = await client.get("/access/download")
    assert downloaded.status_code == 200
    assert downloaded.content.startswith(b"%PDF")

    # Table by table: no PDF bytes and no patient reference anywhere, the recipient only in share rows.
    for table, content in (await table_rows(app)).items():
        for form in forms_of(b"%PDF") + forms_of(PATIENT_REF):
            assert form not in content, f"{form[:20]!r} found in table {table}"
        if table != "share":
            for form in forms_of(RECIPIENT):
                assert form not in content, f"recipient name found in table {table}"

    # Every file of the data folder, including the SQLite database, its WAL and the key file.
    files = [path for path in settings.data_dir.rglob("*") if path.is_file()]
    assert files
    for path in files:
        content = path.read_bytes()
        assert b"%PDF" not in content, f"%PDF found in {path}"
        assert PATIENT_REF.encode() not in content, f"patient reference found in {path}"
        if not path.name.startswith("portal.db"):
            assert RECIPIENT.encode() not in content, f"recipient name found in {path}"

    if settings.database_url.startswith("postgresql"):
        dump = pg_dump(settings.database_url)
        for form in forms_of(b"%PDF") + forms_of(PATIENT_REF):
            assert form not in dump
        outside_share = re.sub(rb"COPY public\.share \(.*?\n\\\.\n", b"", dump, flags=re.DOTALL)
        assert RECIPIENT.encode() in dump
        assert RECIPIENT.encode() not in outside_share


def pg_dump(database_url: str) -> bytes:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    result = subprocess.run(
        ["/usr/bin/pg_dump", "--data-only", "--no-owner", url], capture_output=True, timeout=60, check=True
    )
    return result.stdout


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + SEALED_SEGMENT_SIZE + 100] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: HEADER_SIZE + 2 * SEALED_SEGMENT_SIZE])


def swap_segments(path: Path) -> None:
    data = path.read_bytes()
    first = data[HEADER_SIZE : HEADER_SIZE + SEALED_SEGMENT_SIZE]
    second = data[HEADER_SIZE + SEALED_SEGMENT_SIZE : HEADER_SIZE + 2 * SEALED_SEGMENT_SIZE]
    path.write_bytes(data[:HEADER_SIZE] + second + first + data[HEADER_SIZE + 2 * SEALED_SEGMENT_SIZE :])


TAMPERING = {"flipped_bit": flip_bit, "truncated": truncate, "swapped_segments": swap_segments}


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
@pytest.mark.parametrize("damage", sorted(TAMPERING))
async def test_damaged_copy_never_served(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings, damage: str
) -> None:
    share = await share_photo(app, client)
    blob_id = await copy_blob_id(app, share["id"])
    path = blob_path(settings, blob_id)
    assert path.stat().st_size > HEADER_SIZE + 3 * SEALED_SEGMENT_SIZE
    TAMPERING[damage](path)

    await assert_download_rejected(app, client, share)
    async with portal_of(app).transaction() as db:
        with pytest.raises(BlobIntegrityError):
            await portal_of(app).blobs.read_all(db, blob_id)


@pytest.mark.parametrize("settings", ["database"], indirect=True)
@pytest.mark.parametrize("damage", ["flipped_bit", "last_row_deleted"])
async def test_damaged_copy_in_database_never_served(
    app: Litestar, client: AsyncTestClient[Litestar], damage: str
) -> None:
    share = await share_photo(app, client)
    blob_id = await copy_blob_id(app, share["id"])
    chunks = BLOB_CHUNK_TABLE
    async with portal_of(app).transaction() as db:
        rows = (
            await db.execute(select(chunks.c.seq, chunks.c.data).where(chunks.c.blob_id == blob_id))
        ).all()
        assert len(rows) >= 2
        if damage == "flipped_bit":
            data = bytearray(rows[0].data)
            data[HEADER_SIZE + SEALED_SEGMENT_SIZE + 100] ^= 0x01
            change = (
                update(chunks).where(chunks.c.blob_id == blob_id, chunks.c.seq == 0).values(data=bytes(data))
            )
        else:
            change = delete(chunks).where(chunks.c.blob_id == blob_id, chunks.c.seq == len(rows) - 1)
        await db.execute(change)

    await assert_download_rejected(app, client, share)


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
async def test_swapped_blobs_never_served(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    first = await share_photo(app, client, seed=1)
    second = await share_photo(app, client, seed=2, recipient="Dr. Second Reader")
    first_path = blob_path(settings, await copy_blob_id(app, first["id"]))
    second_path = blob_path(settings, await copy_blob_id(app, second["id"]))
    aside = first_path.with_name("aside")
    os.replace(first_path, aside)
    os.replace(second_path, first_path)
    os.replace(aside, second_path)

    await assert_download_rejected(app, client, first)
    async with portal_of(app).transaction() as db:
        with pytest.raises(BlobIntegrityError):
            await portal_of(app).blobs.read_all(db, await copy_blob_id(app, second["id"]))


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
async def test_damage_past_first_mib_cuts_the_download(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    share = await share_photo(app, client, side=1400)
    path = blob_path(settings, await copy_blob_id(app, share["id"]))
    damaged_segment = STREAM_SEGMENTS + 4
    assert path.stat().st_size > HEADER_SIZE + (damaged_segment + 2) * SEALED_SEGMENT_SIZE
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + damaged_segment * SEALED_SEGMENT_SIZE + 77] ^= 0x04
    path.write_bytes(bytes(data))
    assert (await redeem(client, share["access_code"])).status_code == 200

    # The response has started when the damaged segment is reached: the server raises out of the body,
    # which cuts the connection, and only the whole steps before it were sent.
    with pytest.raises(LitestarException, match="after response started") as caught:
        await client.get("/access/download")
    cause = caught.value.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    # anyio's task group wraps the error raised out of the body.
    assert isinstance(cause, ExceptionGroup)
    [integrity_error] = cause.exceptions
    assert isinstance(integrity_error, BlobIntegrityError)
    assert f"segment {damaged_segment} failed authentication" in str(integrity_error)

    async with portal_of(app).transaction() as db:
        aborted = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "access.download.aborted"))
        ).all()
        stored = await db.get(Share, uuid.UUID(share["id"]))
    assert len(aborted) == 1
    assert '"integrity_check_failed"' in aborted[0].details
    assert f'"bytes":{STREAM_SEGMENTS * SEGMENT_SIZE},' in aborted[0].details
    # The recipient gets the attempt back, as with damage found before the first byte.
    assert stored is not None and stored.downloads_started == 0


async def assert_download_rejected(
    app: Litestar, client: AsyncTestClient[Litestar], share: dict[str, Any]
) -> None:
    assert (await redeem(client, share["access_code"])).status_code == 200
    response = await client.get("/access/download")

    assert response.status_code == 410
    assert DAMAGED_MESSAGE in response.text
    assert b"%PDF" not in response.content
    assert response.headers["content-type"].startswith("text/html")

    async with portal_of(app).transaction() as db:
        aborted = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "access.download.aborted"))
        ).all()
        completed = await db.scalar(
            select(func.count())
            .select_from(AccessEvent)
            .where(AccessEvent.event_type == "access.download.completed")
        )
        stored = await db.get(Share, uuid.UUID(share["id"]))
    assert len(aborted) == 1
    assert aborted[0].share_id == share["id"]
    assert '"integrity_check_failed"' in aborted[0].details
    assert completed == 0
    assert stored is not None and stored.downloads_started == 0
