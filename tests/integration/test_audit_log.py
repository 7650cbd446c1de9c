"""The running access log: insert-only triggers, record() limits, checkpoints and exports over HTTP."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from portal.app import create_app
from portal.audit.checkpoint import load_public_key_text, open_checkpoint
from portal.audit.checkpoints import log_key, make_checkpoint
from portal.audit.recorder import Actor, record
from portal.config import REPOSITORY_ROOT, Settings
from portal.core import start_portal
from portal.models import AccessEvent
from portal.models import Checkpoint as CheckpointRow
from tests.conftest import BASE_URL, make_settings
from tests.helpers import (
    CLINICIAN,
    DPO,
    create_share,
    issue_share,
    portal_of,
    simple_pdf,
    token_for,
    upload_pdf,
)


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


@pytest.fixture
async def copying_client(
    tmp_path: Path, database_url: str, checkpoint_dir: Path
) -> AsyncIterator[tuple[Litestar, AsyncTestClient[Litestar]]]:
    """A portal that writes every checkpoint to a folder as well."""
    settings = Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_PUBLIC_URL": BASE_URL,
            "PORTAL_CHECKPOINT_DIR": str(checkpoint_dir),
        }
    )
    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as test_client:
        yield app, test_client


async def test_triggers_reject_update_delete(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    await make_checkpoint(portal)
    statements = [
        "UPDATE access_event SET outcome = 'failure' WHERE seq = 1",
        "DELETE FROM access_event WHERE seq = 1",
        "UPDATE checkpoint SET note = 'x'",
        "DELETE FROM checkpoint",
        "UPDATE access_log_name SET origin = 'other.example/access-log'",
        "DELETE FROM access_log_name",
    ]
    if portal.engine.dialect.name == "postgresql":
        statements += ["TRUNCATE access_event", "TRUNCATE checkpoint", "TRUNCATE access_log_name"]

    for statement in statements:
        with pytest.raises(DBAPIError, match="insert-only"):
            async with portal.engine.begin() as connection:
                await connection.execute(text(statement))

    async with portal.transaction() as db:
        first = await db.get(AccessEvent, 1)
        assert first is not None
        assert first.outcome == "success"
        assert await db.scalar(select(CheckpointRow.tree_size)) is not None


async def test_record_clips_client_values(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    who = Actor(
        actor="system",
        ip_prefix="203.0.113.77/24",
        user_agent_family="x" * 500,
        request_id="r" * 300 + "\ud800",
    )
    async with portal.transaction() as db:
        row = await record(
            db,
            who,
            "export.created",
            purpose="p" * 1000,
            details={"format": "csv", "note": "n" * 5000 + "\udfff"},
        )

    assert row.user_agent_family is not None and len(row.user_agent_family) == 32
    assert row.request_id == "r" * 64
    assert row.purpose == "p" * 200
    assert row.ip_prefix == "203.0.113.0/24"
    assert len(json.loads(row.details)["note"]) == 256


async def test_checkpoint_signed_and_copied(
    copying_client: tuple[Litestar, AsyncTestClient[Litestar]], checkpoint_dir: Path
) -> None:
    app, client = copying_client
    portal = portal_of(app)
    dpo = await token_for(app, DPO, "dpo")

    exported = await client.get("/api/v1/audit/events?format=jsonl", headers=dpo)
    assert exported.status_code == 200
    async with portal.transaction() as db:
        stored = await db.scalar(select(CheckpointRow).order_by(CheckpointRow.tree_size.desc()))
        export_event = await db.scalar(select(AccessEvent).where(AccessEvent.event_type == "export.created"))
    assert stored is not None and export_event is not None
    assert stored.tree_size >= export_event.seq  # the export's own event is signed

    copy = checkpoint_dir / f"checkpoint-{stored.tree_size}.txt"
    assert copy.read_text() == stored.note
    key = await log_key(portal)
    head = open_checkpoint(
        copy.read_text(), load_public_key_text(key.vkey), key.key_name, "portal.test/access-log"
    )
    assert head.root_hash == stored.root_hash

    again = await make_checkpoint(portal)
    assert again.tree_size == stored.tree_size  # nothing new, nothing signed


async def test_csv_export_neutralises_formula(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    shared = await create_share(
        client, headers, [uploaded.json()["id"]], purpose='=HYPERLINK("http://x.test")'
    )
    assert shared.status_code == 201, shared.text

    dpo = await token_for(app, DPO, "dpo")
    answer = await client.get("/api/v1/audit/events?format=csv&event_type=share.created", headers=dpo)
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 1
    assert rows[0]["purpose"] == '\'=HYPERLINK("http://x.test")'


async def test_recipient_filter_uses_share_names(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, wanted = await issue_share(app, client, recipient_name="Dr. Zoë Brandvold")
    await issue_share(app, client, recipient_name="Dr. Hannah Okafor")
    dpo = await token_for(app, DPO, "dpo")

    answer = await client.get("/api/v1/audit/events?format=jsonl&recipient=zoë brand", headers=dpo)
    assert answer.status_code == 200
    events = [json.loads(line) for line in answer.text.splitlines()]
    assert events
    assert {event["share_id"] for event in events} == {wanted["id"]}

    everything = await client.get("/api/v1/audit/events?format=jsonl", headers=dpo)
    assert "Brandvold" not in everything.text
    assert "Okafor" not in everything.text
    assert '"recipient":"given"' in everything.text  # the export record says a name was searched, not which


async def test_bundle_over_api_covers_filter(
    app: Litestar, client: AsyncTestClient[Litestar], tmp_path: Path
) -> None:
    from portal.audit.bundle import verify_bundle

    _headers, share = await issue_share(app, client)
    dpo = await token_for(app, DPO, "dpo")
    answer = await client.get(f"/api/v1/audit/bundle?share_id={share['id']}", headers=dpo)
    assert answer.status_code == 200
    path = tmp_path / "bundle.zip"
    path.write_bytes(answer.content)

    report = verify_bundle(path, (await log_key(portal_of(app))).vkey)
    assert report.ok, report.first_failure
    assert report.checked == 1  # one share.created event for the one document
    assert report.trusted_key


async def test_policy_loaded_once_per_policy(tmp_path: Path, database_url: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", policies)
    settings = make_settings(tmp_path / "data", database_url, PORTAL_POLICY_DIR=str(policies))

    async def start_and_count() -> list[str]:
        portal = await start_portal(settings, pdf_workers=1)
        try:
            async with portal.transaction() as db:
                rows = await db.scalars(
                    select(AccessEvent.details).where(AccessEvent.event_type == "policy.loaded")
                )
                return list(rows.all())
        finally:
            await portal.close()

    first = await start_and_count()
    assert len(first) == 1
    assert await start_and_count() == first, "a restart with the same policy records nothing"

    with (policies / "security.toml").open("a") as file:
        file.write("\n# edited\n")
    changed = await start_and_count()
    assert len(changed) == 2, "a changed policy is recorded"
    assert changed[0] == first[0]
    assert changed[1] != first[0]
