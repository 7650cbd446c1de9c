"""``portal purge`` with a frozen clock: both clocks, legal holds, orphans, sessions, dry runs and events."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import time_machine
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.config import REPOSITORY_ROOT, Settings
from portal.core import Portal
from portal.models import (
    BLOB_CHUNK_TABLE,
    AccessEvent,
    AuthSession,
    DataKey,
    Document,
    Share,
    Throttle,
    utcnow,
)
from portal.policies import PolicyError
from portal.retention.erasure import add_hold, release_hold
from portal.retention.policy import load_retention_policy
from portal.retention.purge import PurgeReport, purge
from portal.security import codes, throttle
from portal.storage.base import new_blob_id
from portal.storage.database import DatabaseBlobStore
from tests.conftest import BASE_URL, csrf_from, make_settings
from tests.helpers import CLINICIAN, create_share, portal_of, redeem, simple_pdf, token_for, upload_pdf

DAY = dt.timedelta(days=1)


async def upload(client: AsyncTestClient[Litestar], headers: dict[str, str], patient_ref: str) -> str:
    uploaded = await upload_pdf(client, headers, simple_pdf(), patient_ref=patient_ref)
    assert uploaded.status_code == 201, uploaded.text
    return str(uploaded.json()["id"])


async def share(
    client: AsyncTestClient[Litestar], headers: dict[str, str], document_id: str
) -> dict[str, str]:
    shared = await create_share(client, headers, [document_id])
    assert shared.status_code == 201, shared.text
    return dict(shared.json())


async def event_types(portal: Portal) -> list[str]:
    async with portal.transaction() as db:
        return list((await db.scalars(select(AccessEvent.event_type).order_by(AccessEvent.seq))).all())


async def erased_documents(portal: Portal) -> set[str]:
    async with portal.transaction() as db:
        rows = await db.scalars(select(Document.id).where(Document.erased_at.is_not(None)))
        return {str(row) for row in rows}


async def data_key_count(portal: Portal) -> int:
    async with portal.transaction() as db:
        return int(await db.scalar(select(func.count()).select_from(DataKey)) or 0)


async def test_purge_clocks_and_holds(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    assert policy.documents_days_after_last_share == 90
    start = utcnow()

    with time_machine.travel(start, tick=True):
        headers = await token_for(app, CLINICIAN, "clinician")
        expiring = await upload(client, headers, "PAT-A")
        never_shared = await upload(client, headers, "PAT-B")
        held = await upload(client, headers, "PAT-HELD")
        revoked = await upload(client, headers, "PAT-D")
        expiring_share = await share(client, headers, expiring)
        held_share = await share(client, headers, held)
        revoked_share = await share(client, headers, revoked)
        assert (
            await client.post(f"/api/v1/shares/{revoked_share['id']}/revoke", headers=headers)
        ).status_code == 200
        hold = await add_hold(
            portal, document_id=None, patient_ref="PAT-HELD", reason="Complaint under review"
        )

    # Day 15: both 14-day shares have expired. Their copies and the revoked share's copy go; documents stay.
    with time_machine.travel(start + 15 * DAY, tick=True):
        dry = await purge(portal, policy, dry_run=True)
        report = await purge(portal, policy)
    assert report.shares_expired == 2
    assert report.copies_deleted == 3
    assert report.documents_erased == 0
    assert dry == report
    assert await erased_documents(portal) == set()
    assert await data_key_count(portal) == 4  # the four originals

    # Day 100: the never-shared and revoked documents are 100 days old; the expired shares ended on day 14.
    with time_machine.travel(start + 100 * DAY, tick=True):
        report = await purge(portal, policy)
    # The held document's share ended on day 14 as well, so the hold is first checked on day 105.
    assert report == PurgeReport(documents_erased=2)
    assert await erased_documents(portal) == {never_shared, revoked}

    # Day 105: the expiring share's document passes its clock; the held one stays until the hold is released.
    with time_machine.travel(start + 105 * DAY, tick=True):
        report = await purge(portal, policy)
        assert report.documents_erased == 1
        assert report.documents_held == 1
        await release_hold(portal, str(hold.id))
        report = await purge(portal, policy)
    assert report.documents_erased == 1
    assert await erased_documents(portal) == {expiring, never_shared, held, revoked}
    assert await data_key_count(portal) == 0
    assert not [path for path in settings.blob_dir.rglob("*") if path.is_file()]

    types = await event_types(portal)
    assert types.count("share.expired") == 2
    assert types.count("document.erased") == 4
    assert types.count("retention.purged") == 4
    async with portal.transaction() as db:
        expired = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "share.expired"))
        ).all()
        erased = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "document.erased"))
        ).all()
        purged = (
            await db.scalars(select(AccessEvent).where(AccessEvent.event_type == "retention.purged"))
        ).all()
    assert sorted(event.share_id or "" for event in expired) == sorted(
        [expiring_share["id"], held_share["id"]]
    )
    assert sorted(event.document_id or "" for event in erased) == sorted(
        [expiring, never_shared, held, revoked]
    )
    assert all(json.loads(event.details)["reason"] == "retention" for event in erased)
    assert all(event.actor == "system" for event in erased + purged)

    # The purged event carries counts only: no ids, names or references.
    details = json.loads(purged[0].details)
    assert set(details) == set(PurgeReport().as_dict())
    assert all(isinstance(value, int) for value in details.values())
    assert (
        purged[0].share_id is None and purged[0].document_id is None and purged[0].patient_pseudonym is None
    )


async def test_purge_dry_run_changes_nothing(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    start = utcnow()
    headers = await token_for(app, CLINICIAN, "clinician")
    await share(client, headers, await upload(client, headers, "PAT-DRY"))
    types = await event_types(portal)
    keys = await data_key_count(portal)
    files = sorted(settings.blob_dir.rglob("*"))

    with time_machine.travel(start + 200 * DAY, tick=True):
        report = await purge(portal, policy, dry_run=True)

    assert report.shares_expired == 1
    assert report.copies_deleted == 1
    assert report.documents_erased == 1
    assert await event_types(portal) == types
    assert await data_key_count(portal) == keys
    assert sorted(settings.blob_dir.rglob("*")) == files
    async with portal.transaction() as db:
        shares = (await db.scalars(select(Share))).all()
    assert all(row.expired_recorded_at is None and row.copy_blob_id is not None for row in shares)


async def test_purge_sessions_and_ips(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    headers = await token_for(app, CLINICIAN, "clinician")
    issued = await share(client, headers, await upload(client, headers, "PAT-SESSION"))
    assert (await redeem(client, issued["access_code"])).status_code == 200
    now = utcnow()
    async with portal.transaction() as db:
        # A long-lived session whose IP prefix is past the policy's clock, and one that is recent.
        for age_days, prefix in ((40, "203.0.113.0/24"), (1, "198.51.100.0/24")):
            db.add(
                AuthSession(
                    id_hash=uuid.uuid4().hex * 2,
                    kind="staff",
                    subject_id=uuid.uuid4(),
                    created_at=now - age_days * DAY,
                    last_seen_at=now,
                    expires_at=now + 3 * DAY,
                    idle_seconds=int((3 * DAY).total_seconds()),
                    ip_prefix=prefix,
                )
            )

    with time_machine.travel(now + dt.timedelta(hours=2), tick=True):
        report = await purge(portal, policy)

    assert report.sessions_deleted == 1  # the recipient session: 60 minutes absolute
    assert report.session_ips_cleared == 1
    async with portal.transaction() as db:
        prefixes = sorted(str(row) for row in await db.scalars(select(AuthSession.ip_prefix)))
    assert prefixes == ["198.51.100.0/24", "None"]
    assert (await client.get("/access/share")).status_code == 410


async def test_purge_deletes_old_throttle_counters(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    now = utcnow()
    async with portal.transaction() as db:
        await throttle.hit(db, "share-form:old", dt.timedelta(days=1), now=now - 3 * DAY)
        await throttle.hit(db, "share-form:yesterday", dt.timedelta(days=1), now=now - DAY)
        await throttle.hit(db, "code:recent", dt.timedelta(minutes=1), now=now)

    dry = await purge(portal, policy, dry_run=True)
    assert dry.throttle_counters_deleted == 1
    report = await purge(portal, policy)
    assert report.throttle_counters_deleted == 1
    async with portal.transaction() as db:
        buckets = sorted((await db.scalars(select(Throttle.bucket))).all())
    assert buckets == ["code:recent", "share-form:yesterday"]


async def test_code_throttle_stores_no_address(tmp_path: Path, database_url: str) -> None:
    app = create_app(
        make_settings(tmp_path / "data", database_url, PORTAL_TRUSTED_PROXY_HOPS="1"), pdf_workers=1
    )
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        token = csrf_from((await client.get("/access")).text)
        for _attempt in range(2):
            answer = await client.post(
                "/access",
                data={"code": codes.display(codes.generate_code()), "_csrf_token": token},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert answer.status_code == 400
        async with portal_of(app).transaction() as db:
            rows = (await db.execute(select(Throttle.bucket, Throttle.count))).all()
    assert len(rows) == 1, "both attempts count in one counter"
    bucket, count = rows[0]
    assert count == 2
    assert bucket.startswith("code:")
    assert "198.51.100" not in bucket


async def test_purge_orphans_after_an_hour(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    store = portal.blobs.store
    young, old = new_blob_id(), new_blob_id()
    for blob_id in (young, old):
        await store.write(blob_id, [b"ciphertext without a row"])
    old_path = settings.blob_dir / old[:2] / old[2:4] / old
    two_hours_ago = time.time() - 7200
    os.utime(old_path, (two_hours_ago, two_hours_ago))
    stale = old_path.with_name(f".{new_blob_id()}.0123456789abcdef.tmp")
    stale.write_bytes(b"partial")
    os.utime(stale, (two_hours_ago, two_hours_ago))

    dry = await purge(portal, policy, dry_run=True)
    assert dry.orphan_blobs_deleted == 1
    assert old_path.exists()

    report = await purge(portal, policy)
    assert report.orphan_blobs_deleted == 1
    assert report.temporary_files_deleted == 1
    assert not old_path.exists()
    assert not stale.exists()
    assert await store.exists(young)


async def test_purge_database_store_orphans_kept(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    portal = portal_of(app)
    policy = load_retention_policy(settings.policy_dir)
    store = DatabaseBlobStore(portal.engine, BLOB_CHUNK_TABLE)
    portal.blobs.store = store
    orphan = new_blob_id()
    await store.write(orphan, [b"ciphertext without a row"])

    report = await purge(portal, policy)

    assert report.orphan_blobs_unchecked == 1
    assert report.orphan_blobs_deleted == 0
    assert await store.exists(orphan)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("documents_days_after_last_share = 0", "documents_days_after_last_share = 0 is out of range"),
        ("access_log_years = 1", "access_log_years = 1 is out of range"),
        ("ip_reduce_days = 'soon'", "ip_reduce_days = 'soon' must be a whole number"),
        ("keep_forever = true", "unknown key(s): keep_forever"),
    ],
)
def test_policy_rejects_invalid(tmp_path: Path, line: str, message: str) -> None:
    original = (REPOSITORY_ROOT / "policies" / "retention.toml").read_text()
    key = line.split(" ", 1)[0]
    lines = [text for text in original.splitlines() if not text.startswith(f"{key} =")]
    (tmp_path / "retention.toml").write_text("\n".join([*lines, line]) + "\n")

    with pytest.raises(PolicyError) as raised:
        load_retention_policy(tmp_path)
    assert "retention.toml" in str(raised.value)
    assert message in str(raised.value)


def test_policy_missing_key(tmp_path: Path) -> None:
    (tmp_path / "retention.toml").write_text("access_log_years = 3\nip_reduce_days = 30\n")
    with pytest.raises(PolicyError, match="missing the key 'documents_days_after_last_share'"):
        load_retention_policy(tmp_path)


def run_portal(args: list[str], settings: Settings, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PORTAL_DATA_DIR": str(settings.data_dir),
        "PORTAL_DATABASE_URL": settings.database_url,
        "PORTAL_PUBLIC_URL": BASE_URL,
        **extra,
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
async def test_purge_command(settings: Settings) -> None:
    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        headers = await token_for(app, CLINICIAN, "clinician")
        await share(client, headers, await upload(client, headers, "PAT-CLI"))
        before = await event_types(portal_of(app))

    dry = run_portal(["purge", "--dry-run"], settings)
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: nothing was changed." in dry.stdout
    assert "shares_expired" in dry.stdout

    done = run_portal(["purge"], settings)
    assert done.returncode == 0, done.stderr
    assert "Purge finished." in done.stdout
    assert "PAT-CLI" not in done.stdout + done.stderr

    broken = settings.data_dir / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", broken)
    (broken / "retention.toml").write_text("documents_days_after_last_share = 90\n")
    failed = run_portal(["purge"], settings, PORTAL_POLICY_DIR=str(broken))
    assert failed.returncode == 2
    assert "retention.toml" in failed.stderr
    assert "Traceback" not in failed.stderr

    app = create_app(settings, pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL):
        after = await event_types(portal_of(app))
    assert after[: len(before)] == before
    assert after[len(before) :].count("retention.purged") == 1
