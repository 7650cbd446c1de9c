"""The running access log: insert-only triggers, record() limits, checkpoints and exports over HTTP."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, select, text
from sqlalchemy.exc import DBAPIError

from portal.app import create_app
from portal.audit import lookups, query
from portal.audit.canonical import EVENT_FIELDS
from portal.audit.checkpoint import load_public_key_text, open_checkpoint
from portal.audit.checkpoints import log_key, make_checkpoint
from portal.audit.export import export_chunks
from portal.audit.lookups import IdNames, ReadRows, find_names
from portal.audit.query import EventFilter
from portal.audit.recorder import SYSTEM, Actor, record
from portal.audit.verify import verify_database
from portal.config import REPOSITORY_ROOT, Settings
from portal.core import start_portal
from portal.models import AccessEvent, Share, ShareDocument, StaffUser
from portal.models import Checkpoint as CheckpointRow
from tests.conftest import BASE_URL, csrf_from, make_settings
from tests.helpers import (
    CLINICIAN,
    DPO,
    add_staff,
    create_share,
    issue_share,
    portal_of,
    redeem,
    sign_in,
    simple_pdf,
    token_for,
    upload_pdf,
)

LEAVER = "leaver@riverside.test"


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


async def test_exports_name_shares_and_staff(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    _headers, existing = await issue_share(app, client)
    _headers, deleted = await issue_share(app, client, recipient_name="Dr. Hannah Okafor")
    assert (await redeem(client, existing["access_code"])).status_code == 200
    client.cookies.clear()
    await add_staff(app, LEAVER, "clinician")
    assert (await sign_in(client, LEAVER)).status_code == 303
    client.cookies.clear()
    unknown_share = str(uuid.uuid4())
    async with portal.transaction() as db:
        leaver_id = await db.scalar(select(StaffUser.id).where(StaffUser.email == LEAVER))
        await record(db, Actor(f"staff:{uuid.uuid4()}"), "staff.logout")
        await record(db, SYSTEM, "share.expired", share_id=unknown_share)
    # Rows that a database clean-up removed: the log keeps their ids, the exports find no name.
    async with portal.transaction() as db:
        await db.execute(delete(StaffUser).where(StaffUser.id == leaver_id))
        deleted_id = uuid.UUID(deleted["id"])
        await db.execute(delete(ShareDocument).where(ShareDocument.share_id == deleted_id))
        await db.execute(delete(Share).where(Share.id == deleted_id))

    await add_staff(app, DPO, "dpo")
    assert (await sign_in(client, DPO)).status_code == 303
    fields = {"_csrf_token": csrf_from((await client.get("/dpo/events")).text)}
    csv_export = await client.post("/dpo/export", data={**fields, "format": "csv"})
    assert csv_export.status_code == 200, csv_export.text[:300]
    jsonl_export = await client.post("/dpo/export", data={**fields, "format": "jsonl"})
    assert jsonl_export.status_code == 200, jsonl_export.text[:300]

    parsed = list(csv.reader(io.StringIO(csv_export.text)))
    assert tuple(parsed[0][: len(EVENT_FIELDS)]) == EVENT_FIELDS, "the existing columns keep their order"
    assert tuple(parsed[0]) == (*EVENT_FIELDS, "share_reference", "actor_email")
    rows = [dict(zip(parsed[0], row, strict=True)) for row in parsed[1:]]
    events = {event["seq"]: event for event in map(json.loads, jsonl_export.text.splitlines())}
    assert len(events) == len(rows) + 1, "the JSON Lines export adds the CSV export's own event"

    def only(event_type: str, **matching: str) -> dict[str, str]:
        found = [
            row
            for row in rows
            if row["event_type"] == event_type and all(row[key] == value for key, value in matching.items())
        ]
        assert len(found) == 1, (event_type, matching, found)
        return found[0]

    opened = only("code.redeemed")
    assert opened["share_reference"] == existing["reference"], "the slip's reference finds who opened it"
    assert opened["actor"] == f"recipient:{existing['id']}"
    assert opened["actor_email"] == "", "a recipient is no staff member"
    existing_created = only("share.created", share_id=existing["id"])
    assert existing_created["share_reference"] == existing["reference"]
    assert existing_created["actor"].startswith("token:")
    assert existing_created["actor_email"] == CLINICIAN, "an API token's events name its owner"
    deleted_created = only("share.created", share_id=deleted["id"])
    assert deleted_created["share_reference"] == ""
    assert deleted_created["actor_email"] == CLINICIAN
    assert only("staff.login", actor=f"staff:{leaver_id}")["actor_email"] == ""
    assert only("staff.logout")["actor_email"] == "", "an account that never existed has no address"
    assert only("share.expired")["share_reference"] == ""
    dpo_login = only("staff.login", actor_email=DPO)
    assert dpo_login["share_reference"] == ""
    for row in rows:
        if not row["actor"].startswith(("staff:", "token:")):
            assert row["actor_email"] == "", row

    for row in rows:
        event = events[int(row["seq"])]
        assert list(event)[-2:] == ["share_reference", "actor_email"], "the lookups follow the event's fields"
        assert event["share_reference"] == (row["share_reference"] or None)
        assert event["actor_email"] == (row["actor_email"] or None)

    # The lookups are not part of the hashed event: each line without them gives the stored leaf hash, by
    # the recipe in docs/security.md.
    async with portal.transaction() as db:
        stored = dict((await db.execute(select(AccessEvent.seq, AccessEvent.leaf_hash))).all())
    for line in jsonl_export.text.splitlines():
        event = json.loads(line)
        del event["share_reference"], event["actor_email"]
        data = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(b"\x00" + data).digest() == bytes(stored[event["seq"]]), event["seq"]
    assert (await verify_database(portal)).ok


async def test_export_looks_up_each_id_once(
    app: Litestar, client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = portal_of(app)
    for _share in range(3):
        await issue_share(app, client)
    calls: list[tuple[set[str], set[str], set[str]]] = []

    async def counting_find_names(
        read: ReadRows,
        dialect: str,
        share_ids: Iterable[str],
        staff_ids: Iterable[str],
        token_ids: Iterable[str],
    ) -> IdNames:
        calls.append((set(share_ids), set(staff_ids), set(token_ids)))
        return await find_names(read, dialect, share_ids, staff_ids, token_ids)

    monkeypatch.setattr(lookups, "find_names", counting_find_names)
    monkeypatch.setattr(query, "EXPORT_PAGE_SIZE", 4)
    chunks = [chunk async for chunk in export_chunks(portal, EventFilter(), "jsonl")]
    lines = b"".join(chunks).splitlines()

    pages = -(-len(lines) // 4)
    assert len(lines) > 8, "the export spans several pages"
    assert 1 <= len(calls) <= pages, "one lookup per page at most"
    for position in range(3):
        looked_up = [value for call in calls for value in call[position]]
        assert len(looked_up) == len(set(looked_up)), f"an id was looked up twice: {calls}"
    assert any(json.loads(line)["share_reference"] for line in lines)
    assert any(json.loads(line)["actor_email"] == CLINICIAN for line in lines)


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
