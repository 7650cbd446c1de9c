"""Migrations build the models' schema on SQLite and PostgreSQL and keep data written by older revisions."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import anyio.to_thread
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import DateTime, Uuid, bindparam, func, select, text

from portal.audit.checkpoint import Checkpoint, sign_checkpoint
from portal.audit.checkpoints import LogOnly, load_leaf_hashes, log_key, log_origin, make_checkpoint, open_log
from portal.audit.merkle import MerkleTree
from portal.audit.recorder import SYSTEM, record
from portal.audit.verify import verify_database
from portal.core import start_portal
from portal.crypto.keyring import KeyRing
from portal.db import create_engine, create_sessionmaker
from portal.errors import PortalError
from portal.models import AccessEvent, Base, utcnow
from portal.models import Checkpoint as CheckpointRow
from portal.schema import alembic_config, upgrade_to_head
from tests.conftest import BASE_URL, make_settings


async def test_head_matches_models(database_url: str) -> None:
    await anyio.to_thread.run_sync(upgrade_to_head, database_url)

    engine = create_engine(database_url)
    async with engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    await engine.dispose()
    assert differences == [], "models changed without a migration: run alembic revision --autogenerate"


async def test_upgrade_keeps_existing_data(database_url: str, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(lambda: command.upgrade(alembic_config(database_url), "0001"))

    staff_id, document_id, share_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = dt.datetime(2026, 11, 1, 9, 30)
    engine = create_engine(database_url)
    rows = [
        (
            "INSERT INTO staff_user (id, email, role, password_hash, created_at) "
            "VALUES (:id, 'old@riverside.test', 'clinician', 'x', :now)",
            {"id": staff_id, "now": now},
        ),
        (
            "INSERT INTO api_token (id, user_id, token_hash, label, created_at) "
            "VALUES (:id, :user, :hash, 'old', :now)",
            {"id": uuid.uuid4(), "user": staff_id, "hash": "a" * 64, "now": now},
        ),
        (
            "INSERT INTO document (id, title, patient_ref_sealed, patient_pseudonym, pages, size, sha256, "
            "uploaded_by, created_at, removed_content, warnings, repaired) VALUES (:id, 'Old report', :sealed, "
            "'pseudonym', 2, 100, :sha, :user, :now, '[]', '[]', false)",
            {"id": document_id, "sealed": b"sealed", "sha": "b" * 64, "user": staff_id, "now": now},
        ),
        (
            "INSERT INTO share (id, reference, profile, recipient_name, purpose, created_by, created_at, expires_at, "
            "max_redemptions, redemptions, allow_view, allow_download, max_downloads, downloads_started, "
            "downloads_completed, code_locator, code_hash, failed_attempts, copy_password_is_code) VALUES "
            "(:id, 'S-OLD00001', 'patient', 'Old Recipient', 'Follow-up', :user, :now, :later, 1, 0, true, true, 3, "
            "0, 0, 'ABCDE', 'hash', 0, true)",
            {"id": share_id, "user": staff_id, "now": now, "later": now + dt.timedelta(days=14)},
        ),
        (
            "INSERT INTO share_document (share_id, document_id, position) VALUES (:share, :document, 0)",
            {"share": share_id, "document": document_id},
        ),
        (
            "INSERT INTO access_event (seq, time, event_type, outcome, actor, details, leaf_hash) "
            "VALUES (1, :now, 'share.created', 'success', 'system', '{}', :leaf)",
            {"now": now, "leaf": b"\\0" * 32},
        ),
    ]
    async with engine.begin() as connection:
        for statement, values in rows:
            # Typed parameters, so each backend stores UUIDs and times the way the ORM does.
            typed = [
                bindparam(name, type_=Uuid())
                for name, value in values.items()
                if isinstance(value, uuid.UUID)
            ]
            typed += [
                bindparam(name, type_=DateTime())
                for name, value in values.items()
                if isinstance(value, dt.datetime)
            ]
            await connection.execute(text(statement).bindparams(*typed), values)
    await engine.dispose()

    await anyio.to_thread.run_sync(lambda: command.upgrade(alembic_config(database_url), "0004"))
    # An open invitation written by the previous head, before reset links shared its table.
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO invitation (id, token_hash, email, role, created_by, created_at, expires_at) "
                "VALUES (:id, :hash, 'invited@riverside.test', 'dpo', :user, :now, :later)"
            ).bindparams(
                bindparam("id", type_=Uuid()),
                bindparam("user", type_=Uuid()),
                bindparam("now", type_=DateTime()),
                bindparam("later", type_=DateTime()),
            ),
            {
                "id": uuid.uuid4(),
                "hash": "c" * 64,
                "user": staff_id,
                "now": now,
                "later": now + dt.timedelta(hours=72),
            },
        )
    await engine.dispose()

    await anyio.to_thread.run_sync(upgrade_to_head, database_url)

    engine = create_engine(database_url)
    async with engine.connect() as connection:
        share = (
            await connection.execute(
                text("SELECT recipient_name, approval_required, reissue_count, language FROM share")
            )
        ).one()
        links = (await connection.execute(text("SELECT count(*) FROM share_document"))).scalar_one()
        token_scopes = (await connection.execute(text("SELECT scopes FROM api_token"))).scalar_one()
        events = (await connection.execute(text("SELECT count(*) FROM access_event"))).scalar_one()
        invitation = (
            await connection.execute(text("SELECT email, role, staff_id, reset_totp FROM invitation"))
        ).one()
    await engine.dispose()

    assert share[0] == "Old Recipient"
    assert not share[1]
    assert share[2] == 0
    assert share[3] == "en", "shares made before the language column had English slips and footers"
    assert links == 1, "rebuilding the share table must not cascade into share_document"
    assert token_scopes == "upload share audit-read"
    assert events == 1
    assert invitation[0] == "invited@riverside.test"
    assert invitation[1] == "dpo"
    assert invitation[2] is None, "an invitation from before reset links resets no account"
    assert not invitation[3]

    # The upgraded database still rejects edits to the access log.
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE access_event SET outcome = 'failure'"))
        raise AssertionError("the insert-only trigger is missing after the upgrade")
    except Exception as error:  # the driver's error type differs between SQLite and PostgreSQL
        assert "insert-only" in str(error)
    finally:
        await engine.dispose()

    settings = make_settings(tmp_path / "data", database_url)
    assert settings.public_url == BASE_URL


async def test_newer_schema_named(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    portal = await start_portal(settings, pdf_workers=1)
    await portal.close()
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()

    with pytest.raises(PortalError, match="revision 9999, which this version of the portal does not know"):
        async with open_log(settings):
            pass


async def test_upgrade_adopts_checkpoint_name(database_url: str, tmp_path: Path) -> None:
    trial = make_settings(tmp_path / "data", database_url, PORTAL_PUBLIC_URL="http://127.0.0.1:18137")
    portal = await start_portal(trial, pdf_workers=1)  # creates the key file
    await portal.close()
    await anyio.to_thread.run_sync(lambda: command.downgrade(alembic_config(database_url), "0005"))

    with pytest.raises(PortalError, match="at revision 0005, but this version of the portal needs"):
        async with open_log(trial):
            pass

    # Before the name was stored, each process signed under its own public URL: the server under the trial
    # address, a command in a shell without the server's settings under the default one.
    engine = create_engine(database_url)
    access = LogOnly(trial, KeyRing.load(trial.kek_file), engine, create_sessionmaker(engine))
    try:
        await _sign_as_before(access, "http://127.0.0.1:18137")
        await _sign_as_before(access, "http://127.0.0.1:8000")
    finally:
        await engine.dispose()

    production = make_settings(
        tmp_path / "data", database_url, PORTAL_PUBLIC_URL="https://share.clinic.example"
    )
    portal = await start_portal(production, pdf_workers=1)
    try:
        assert (await log_key(portal)).origin == "127.0.0.1:18137/access-log"
        report = await verify_database(portal)
        assert report.ok, report.first_failure
        assert report.checkpoints == 2

        async with portal.transaction() as db:
            await record(db, SYSTEM, "export.created", details={"format": "jsonl"})
        signed = await make_checkpoint(portal)
        assert signed.note.startswith("127.0.0.1:18137/access-log\n")
        report = await verify_database(portal)
        assert report.ok, report.first_failure
        assert report.checkpoints == 3
    finally:
        await portal.close()


async def _sign_as_before(access: LogOnly, public_url: str) -> None:
    """Record an event and sign a checkpoint over the whole log under the origin of `public_url`."""
    async with access.transaction() as db:
        await record(db, SYSTEM, "export.created", details={"format": "jsonl"})
    async with access.transaction() as db:
        size = await db.scalar(select(func.max(AccessEvent.seq)))
    assert size is not None
    root = MerkleTree(await load_leaf_hashes(access, size)).root()
    origin = log_origin(public_url)
    note = sign_checkpoint(Checkpoint(origin, size, root), access.keyring.checkpoint_signing_key(), origin)
    async with access.transaction() as db:
        db.add(CheckpointRow(tree_size=size, root_hash=root, note=note, created_at=utcnow()))
