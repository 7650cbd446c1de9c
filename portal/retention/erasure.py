"""Erasing a document now (GDPR Art 17) or when its retention clock runs out, and legal holds.

Erasure revokes every share that still works, shreds the original and every recipient copy that contains
the document, and keeps the ``document`` row as a tombstone: its id, pseudonymous patient reference, sizes
and times stay so that access-log events still resolve, while its title and sealed patient reference are
cleared. Shares that held the document lose their recipient name. Access-log events are never changed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.recorder import SYSTEM, Actor, record
from portal.core import Portal
from portal.documents.service import clean_text, patient_pseudonym
from portal.errors import InvalidInput, NotFound, PortalError
from portal.i18n import _
from portal.models import Document, LegalHold, Share, ShareDocument, utcnow
from portal.retention.shredding import delete_bytes_after_commit, shred_rows
from portal.security.sessions import end_sessions_of

# Reasons are fixed codes because they land in the insert-only access log, where free text could carry a
# name that could then never be removed.
ERASURE_REASONS = ("patient_request", "uploaded_in_error", "clinic_decision")
RETENTION_REASON = "retention"


class LegalHoldApplies(PortalError):
    """A legal hold on the document or its patient blocks erasure."""

    status_code = 409
    code = "legal_hold"


class HoldNotFound(PortalError):
    status_code = 404
    code = "hold_not_found"


@dataclass(frozen=True)
class Erasure:
    """The outcome of one erasure: the document, and the shares and copies it ended."""

    document_id: uuid.UUID
    erased_at: dt.datetime
    shares_revoked: int
    copies_shredded: int


async def erase_document(portal: Portal, who: Actor, document_id: str | uuid.UUID, reason: str) -> Erasure:
    """Erase a document now: revoke its shares, shred its original and copies, record ``document.erased``.

    Raises:
        InvalidInput: ``reason`` is not one of ``ERASURE_REASONS``.
        NotFound: no document has this id, or it is erased already.
        LegalHoldApplies: a hold that is not released covers the document or its patient.
    """
    if reason not in ERASURE_REASONS:
        raise InvalidInput(
            _("Erasure reason '{value}' is unknown. Use one of: {choices}.").format(
                value=str(reason)[:40], choices=", ".join(ERASURE_REASONS)
            ),
            field="reason",
        )
    key = _document_key(document_id)

    async with portal.transaction() as db:
        erasure, blob_ids = await erase_in_transaction(portal, db, who, key, reason, utcnow())
    await delete_bytes_after_commit(portal, blob_ids)
    return erasure


async def erase_in_transaction(
    portal: Portal, db: AsyncSession, who: Actor, document_id: uuid.UUID, reason: str, now: dt.datetime
) -> tuple[Erasure, list[str]]:
    """Erase one document inside the caller's transaction.

    Returns:
        What was done, and the blob ids whose bytes the caller deletes after the commit.

    Raises:
        NotFound: no document has this id, or it is erased already.
        LegalHoldApplies: a hold that is not released covers the document or its patient.
    """
    # The row lock on PostgreSQL makes a purge and an erasure of the same document take turns. SQLite
    # transactions already have the database's write lock from BEGIN.
    document = await db.scalar(select(Document).where(Document.id == document_id).with_for_update())
    if document is None or document.erased_at is not None:
        raise NotFound(_("Document {value} was not found.").format(value=document_id))

    hold = await active_hold(db, document)
    if hold is not None:
        raise LegalHoldApplies(
            _(
                "Document {document} is under legal hold {hold} since {since}, so it cannot be erased. "
                "Release the hold with 'portal holds release {hold}' first if it no longer applies."
            ).format(document=document.id, hold=hold.id, since=hold.created_at.date().isoformat())
        )

    revoked, blob_ids = await _end_shares(portal, db, who, document.id, now)
    copies = len(blob_ids)
    if document.blob_id is not None:
        original = document.blob_id
        await db.execute(update(Document).where(Document.id == document.id).values(blob_id=None))
        await shred_rows(portal, db, original)
        blob_ids.append(original)

    await db.execute(
        update(Document)
        .where(Document.id == document.id)
        .values(erased_at=now, title="", patient_ref_sealed=b"")
    )
    await record(
        db,
        who,
        "document.erased",
        document_id=document.id,
        patient_pseudonym=document.patient_pseudonym,
        details={"reason": reason, "shares_revoked": revoked, "copies_shredded": copies},
    )
    erasure = Erasure(document_id=document.id, erased_at=now, shares_revoked=revoked, copies_shredded=copies)
    return erasure, blob_ids


async def _end_shares(
    portal: Portal, db: AsyncSession, who: Actor, document_id: uuid.UUID, now: dt.datetime
) -> tuple[int, list[str]]:
    query = (
        select(Share)
        .join(ShareDocument, ShareDocument.share_id == Share.id)
        .where(ShareDocument.document_id == document_id)
        .order_by(Share.created_at)
    )
    shares = list((await db.scalars(query)).all())

    revoked = 0
    blob_ids: list[str] = []
    for share in shares:
        # A share of several documents is revoked as a whole, because its one copy contains every document.
        if share.revoked_at is None and share.expires_at > now:
            await db.execute(update(Share).where(Share.id == share.id).values(revoked_at=now))
            await end_sessions_of(db, kind="recipient", subject_id=share.id)
            await record(
                db,
                who,
                "share.revoked",
                share_id=share.id,
                purpose=share.purpose,
                details={"reason": "document_erased"},
            )
            revoked += 1

        copy = share.copy_blob_id
        if copy is not None:
            await db.execute(update(Share).where(Share.id == share.id).values(copy_blob_id=None))
            await shred_rows(portal, db, copy)
            blob_ids.append(copy)
        await db.execute(update(Share).where(Share.id == share.id).values(recipient_name=""))

    return revoked, blob_ids


async def active_hold(db: AsyncSession, document: Document) -> LegalHold | None:
    """Return a hold that is not released and covers the document or its patient, if there is one."""
    query = (
        select(LegalHold)
        .where(
            LegalHold.released_at.is_(None),
            or_(
                LegalHold.document_id == document.id,
                LegalHold.patient_pseudonym == document.patient_pseudonym,
            ),
        )
        .order_by(LegalHold.created_at)
        .limit(1)
    )
    return await db.scalar(query)


async def add_hold(
    portal: Portal, *, document_id: str | None, patient_ref: str | None, reason: str
) -> LegalHold:
    """Place a legal hold on one document or on every document of one patient reference.

    Raises:
        InvalidInput: neither or both targets are given, or the reason is missing or too long.
        NotFound: the document does not exist or is erased already.
    """
    if (document_id is None) == (patient_ref is None):
        raise InvalidInput("Name exactly one target: --document ID or --patient-ref REF.")
    text = clean_text(reason, "reason", "Reason", 200)

    hold = LegalHold(reason=text)
    async with portal.transaction() as db:
        if document_id is not None:
            key = _document_key(document_id)
            document = await db.get(Document, key)
            if document is None or document.erased_at is not None:
                raise NotFound(
                    f"Document {key} was not found or is erased already, so there is nothing to hold."
                )
            hold.document_id = key
        else:
            hold.patient_pseudonym = patient_pseudonym(portal, (patient_ref or "").strip())
        db.add(hold)
        await db.flush()
        await record(
            db,
            SYSTEM,
            "legal_hold.added",
            document_id=hold.document_id,
            patient_pseudonym=hold.patient_pseudonym,
            details={"hold_id": str(hold.id)},
        )
    return hold


async def release_hold(portal: Portal, hold_id: str) -> LegalHold:
    """Release a legal hold, so retention and erasure apply again from the next purge.

    Raises:
        HoldNotFound: no hold has this id, or it was released already.
    """
    try:
        key = uuid.UUID(hold_id)
    except ValueError:
        raise HoldNotFound(
            f"Legal hold id '{hold_id[:40]}' is invalid: use the id 'portal holds add' printed."
        ) from None

    async with portal.transaction() as db:
        hold = await db.get(LegalHold, key)
        if hold is None or hold.released_at is not None:
            raise HoldNotFound(f"Legal hold {key} was not found or is released already.")
        hold.released_at = utcnow()
        await record(
            db,
            SYSTEM,
            "legal_hold.released",
            document_id=hold.document_id,
            patient_pseudonym=hold.patient_pseudonym,
            details={"hold_id": str(hold.id)},
        )
    return hold


def _document_key(document_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(document_id, uuid.UUID):
        return document_id
    try:
        return uuid.UUID(str(document_id))
    except ValueError:
        raise NotFound(_("Document {value} was not found.").format(value=str(document_id)[:40])) from None
