"""``portal purge``: apply the retention clocks, then record one ``retention.purged`` event with counts.

Steps, in order: record expired shares, shred the copies of shares that ended, erase documents past their
clock (unless a legal hold applies), remove orphan blobs, delete expired sessions and clear old session IP
prefixes, delete old throttle counters, and count the access events past the log's clock. Access events are
never deleted: the log is insert-only, so that count is reported and nothing more.

Each share or document is handled in its own short transaction, because on SQLite every transaction takes
the database's write lock. Stored bytes are deleted only after the transaction that destroyed their data
key has committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, exists, func, or_, select, update

from portal.audit.recorder import SYSTEM, Actor, record
from portal.core import Portal
from portal.errors import NotFound
from portal.models import AccessEvent, AuthSession, Blob, Document, Share, ShareDocument, utcnow
from portal.retention.erasure import RETENTION_REASON, LegalHoldApplies, active_hold, erase_in_transaction
from portal.retention.policy import RetentionPolicy
from portal.retention.shredding import delete_bytes_after_commit, shred_rows
from portal.security import throttle
from portal.security.sessions import end_sessions_of
from portal.storage.filesystem import FileBlobStore

log = logging.getLogger(__name__)

# Bytes younger than this may belong to an upload or share whose rows are not committed yet.
ORPHAN_MIN_AGE = dt.timedelta(hours=1)
# Throttle counters whose window started longer ago than this are deleted. The longest window is a
# one-time form id's day (portal.form_ids), so older counters limit nothing.
COUNTER_MAX_AGE = dt.timedelta(days=2)
_BATCH = 200


@dataclass
class PurgeReport:
    """Counts per kind. The same fields go into the ``retention.purged`` event."""

    shares_expired: int = 0
    copies_deleted: int = 0
    documents_erased: int = 0
    documents_held: int = 0
    orphan_blobs_deleted: int = 0
    orphan_blobs_unchecked: int = 0
    temporary_files_deleted: int = 0
    sessions_deleted: int = 0
    session_ips_cleared: int = 0
    throttle_counters_deleted: int = 0
    access_events_past_clock: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


async def purge(
    portal: Portal,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    who: Actor = SYSTEM,
) -> PurgeReport:
    """Apply every retention clock once, or with ``dry_run`` only count what would be done."""
    moment = now or utcnow()
    report = PurgeReport()

    report.shares_expired = await _record_expired_shares(portal, moment, dry_run, who)
    report.copies_deleted = await _delete_ended_copies(portal, moment, dry_run)
    report.documents_erased, report.documents_held = await _erase_documents(
        portal, policy, moment, dry_run, who
    )
    await _remove_orphans(portal, moment, dry_run, report)
    report.sessions_deleted = await _delete_expired_sessions(portal, moment, dry_run)
    report.session_ips_cleared = await _clear_session_ips(portal, policy, moment, dry_run)
    async with portal.transaction() as db:
        report.throttle_counters_deleted = await throttle.forget_windows_before(
            db, moment - COUNTER_MAX_AGE, dry_run=dry_run
        )
    report.access_events_past_clock = await _count_old_events(portal, policy, moment)

    if not dry_run:
        async with portal.transaction() as db:
            await record(db, who, "retention.purged", details=dict(report.as_dict()))
    log.info("purge finished", extra={"dry_run": dry_run, **report.as_dict()})
    return report


async def _record_expired_shares(portal: Portal, now: dt.datetime, dry_run: bool, who: Actor) -> int:
    query = select(Share.id).where(
        Share.expires_at <= now, Share.expired_recorded_at.is_(None), Share.revoked_at.is_(None)
    )
    async with portal.transaction() as db:
        share_ids = list((await db.scalars(query)).all())
    if dry_run:
        return len(share_ids)

    recorded = 0
    for start in range(0, len(share_ids), _BATCH):
        async with portal.transaction() as db:
            for share_id in share_ids[start : start + _BATCH]:
                # The condition makes two concurrent purges record each expiry once.
                marked = await db.execute(
                    update(Share)
                    .where(Share.id == share_id, Share.expired_recorded_at.is_(None))
                    .values(expired_recorded_at=now)
                    .returning(Share.purpose, Share.expires_at)
                )
                row = marked.first()
                if row is None:
                    continue
                await end_sessions_of(db, kind="recipient", subject_id=share_id)
                await record(
                    db,
                    who,
                    "share.expired",
                    share_id=share_id,
                    purpose=row.purpose,
                    details={"expires_at": row.expires_at.isoformat()},
                )
                recorded += 1
    return recorded


async def _delete_ended_copies(portal: Portal, now: dt.datetime, dry_run: bool) -> int:
    query = select(Share.id, Share.copy_blob_id).where(
        Share.copy_blob_id.is_not(None), or_(Share.revoked_at.is_not(None), Share.expires_at <= now)
    )
    async with portal.transaction() as db:
        candidates = [(row.id, row.copy_blob_id) for row in await db.execute(query)]
    if dry_run:
        return len(candidates)

    deleted = 0
    for share_id, blob_id in candidates:
        async with portal.transaction() as db:
            cleared = await db.scalar(
                update(Share)
                .where(Share.id == share_id, Share.copy_blob_id == blob_id)
                .values(copy_blob_id=None)
                .returning(Share.id)
            )
            if cleared is None:
                continue
            await shred_rows(portal, db, blob_id)
        await delete_bytes_after_commit(portal, [blob_id])
        deleted += 1
    return deleted


async def _erase_documents(
    portal: Portal, policy: RetentionPolicy, now: dt.datetime, dry_run: bool, who: Actor
) -> tuple[int, int]:
    cutoff = policy.document_cutoff(now)
    # A share ends at the earlier of its revocation and its expiry. One that ends after the cutoff keeps
    # the document. A document never shared counts from its upload.
    ends_after_cutoff = (
        select(ShareDocument.share_id)
        .join(Share, Share.id == ShareDocument.share_id)
        .where(
            ShareDocument.document_id == Document.id,
            Share.expires_at > cutoff,
            or_(Share.revoked_at.is_(None), Share.revoked_at > cutoff),
        )
    )
    query = select(Document.id).where(
        Document.erased_at.is_(None), Document.created_at <= cutoff, ~exists(ends_after_cutoff)
    )
    async with portal.transaction() as db:
        document_ids = list((await db.scalars(query)).all())

    erased = held = 0
    for document_id in document_ids:
        if dry_run:
            held += await _is_held(portal, document_id)
            continue
        try:
            async with portal.transaction() as db:
                _erasure, blob_ids = await erase_in_transaction(
                    portal, db, who, document_id, RETENTION_REASON, now
                )
        except LegalHoldApplies:
            held += 1
            continue
        except NotFound:
            # Erased by someone else since the query above.
            continue
        await delete_bytes_after_commit(portal, blob_ids)
        erased += 1

    if dry_run:
        erased = len(document_ids) - held
    return erased, held


async def _is_held(portal: Portal, document_id: uuid.UUID) -> bool:
    async with portal.transaction() as db:
        document = await db.get(Document, document_id)
        return document is not None and await active_hold(db, document) is not None


async def _remove_orphans(portal: Portal, now: dt.datetime, dry_run: bool, report: PurgeReport) -> None:
    store = portal.blobs.store
    # Listing the store before reading the rows means a blob committed in between is not taken for an orphan.
    stored = await store.list_ids()
    async with portal.transaction() as db:
        known = set((await db.scalars(select(Blob.id))).all())
    orphans = [blob_id for blob_id in stored if blob_id not in known]

    if not isinstance(store, FileBlobStore):
        # NOTE: the database store keeps no write time, so its orphans cannot be told apart from a blob
        # whose rows are about to commit. They are counted, never deleted.
        report.orphan_blobs_unchecked = len(orphans)
        return

    cutoff = (now - ORPHAN_MIN_AGE).timestamp()
    old = [
        blob_id for blob_id in orphans if await asyncio.to_thread(_modified_before, store, blob_id, cutoff)
    ]
    if dry_run:
        report.orphan_blobs_deleted = len(old)
        return

    for blob_id in old:
        await store.delete(blob_id)
    report.orphan_blobs_deleted = len(old)
    report.temporary_files_deleted = await store.remove_stale_temporary_files(ORPHAN_MIN_AGE.total_seconds())


def _modified_before(store: FileBlobStore, blob_id: str, cutoff: float) -> bool:
    # Same layout as FileBlobStore: <root>/<id[0:2]>/<id[2:4]>/<id>.
    path = Path(store.root) / blob_id[0:2] / blob_id[2:4] / blob_id
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


async def _delete_expired_sessions(portal: Portal, now: dt.datetime, dry_run: bool) -> int:
    query = select(
        AuthSession.id_hash, AuthSession.expires_at, AuthSession.last_seen_at, AuthSession.idle_seconds
    )
    async with portal.transaction() as db:
        rows = list(await db.execute(query))
    # The idle deadline depends on each row's own idle_seconds, which is simpler to compare here than in SQL.
    expired = [
        row.id_hash
        for row in rows
        if now >= row.expires_at or now >= row.last_seen_at + dt.timedelta(seconds=row.idle_seconds)
    ]
    if dry_run:
        return len(expired)

    for start in range(0, len(expired), _BATCH):
        async with portal.transaction() as db:
            await db.execute(
                delete(AuthSession).where(AuthSession.id_hash.in_(expired[start : start + _BATCH]))
            )
    return len(expired)


async def _clear_session_ips(portal: Portal, policy: RetentionPolicy, now: dt.datetime, dry_run: bool) -> int:
    condition = (AuthSession.created_at <= policy.ip_cutoff(now), AuthSession.ip_prefix.is_not(None))
    async with portal.transaction() as db:
        if dry_run:
            return int(await db.scalar(select(func.count()).select_from(AuthSession).where(*condition)) or 0)
        cleared = await db.execute(
            update(AuthSession).where(*condition).values(ip_prefix=None).returning(AuthSession.id_hash)
        )
        return len(cleared.all())


async def _count_old_events(portal: Portal, policy: RetentionPolicy, now: dt.datetime) -> int:
    query = (
        select(func.count()).select_from(AccessEvent).where(AccessEvent.time < policy.access_log_cutoff(now))
    )
    async with portal.transaction() as db:
        return int(await db.scalar(query) or 0)
