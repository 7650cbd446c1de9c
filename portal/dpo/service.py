"""Queries behind the DPO pages: one event in full, disclosures per patient, and the scope of a breach.

Everything here reads metadata only (event rows, share and document rows). No function opens a blob,
so no page built from it can show document content.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.checkpoints import latest_checkpoint
from portal.audit.lookups import AnyRow, AnySelect, find_names
from portal.audit.query import EventFilter, build_query, resolve_recipient
from portal.core import Portal
from portal.crypto.pseudonym import pseudonymise
from portal.errors import InvalidInput, NotFound
from portal.i18n import _
from portal.models import AccessEvent, Document, Share, ShareDocument, utcnow
from portal.shares.service import share_status

# A breach scope lists at most this many shares and documents; the counts stay exact.
MAX_LISTED = 500
# Event types that mark when a recipient opened, viewed and downloaded a share.
_MILESTONES = ("code.redeemed", "access.viewed", "access.download.completed")


@dataclass(frozen=True)
class EventDetail:
    """One event with the share and documents it names and the checkpoint that covers it, if any."""

    event: AccessEvent
    share: Share | None
    documents: list[Document]
    covered_by: int | None


@dataclass(frozen=True)
class Disclosure:
    """One share of a patient's reports: who received what, for which purpose, and what they did."""

    share: Share
    documents: list[Document]
    first_opened: dt.datetime | None
    first_viewed: dt.datetime | None
    first_downloaded: dt.datetime | None
    downloads: int
    status: str


@dataclass(frozen=True)
class BreachScope:
    """Everything one recipient, share or network touched in a time window."""

    events: int
    first: dt.datetime | None
    last: dt.datetime | None
    by_type: list[tuple[str, int]]
    share_count: int
    shares: list[Share]
    document_count: int
    documents: list[Document]
    patient_count: int


async def event_detail(portal: Portal, seq: int) -> EventDetail:
    """Load one event by seq with its share, documents and covering checkpoint.

    Raises:
        NotFound: no event has this seq.
    """
    async with portal.transaction() as db:
        event = await db.get(AccessEvent, seq)
        if event is None:
            raise NotFound(_("Event {seq} does not exist. Search the access log for it.").format(seq=seq))
        share = await db.get(Share, uuid.UUID(event.share_id)) if event.share_id else None
        document_ids = {uuid.UUID(event.document_id)} if event.document_id else set()
        if share is not None:
            document_ids.update(link.document_id for link in share.documents)
        documents = await _documents(db, document_ids)

    latest = await latest_checkpoint(portal)
    covered_by = latest.tree_size if latest is not None and latest.tree_size >= seq else None
    return EventDetail(event=event, share=share, documents=documents, covered_by=covered_by)


async def disclosure_report(portal: Portal, patient_ref: str) -> list[Disclosure]:
    """List every share of the patient's reports, oldest first, with when it was opened and downloaded.

    This is the recipients part of a GDPR Art 15(1)(c) access request.

    Raises:
        InvalidInput: the patient reference is empty.
    """
    reference = patient_ref.strip()
    if not reference:
        raise InvalidInput(_("Enter a patient reference."), field="patient_ref")
    pseudonym = pseudonymise(portal.keyring.secret("pseudonym"), reference)

    async with portal.transaction() as db:
        share_ids = (
            select(ShareDocument.share_id).join(Document).where(Document.patient_pseudonym == pseudonym)
        )
        shares = list(
            (await db.scalars(select(Share).where(Share.id.in_(share_ids)).order_by(Share.created_at))).all()
        )
        milestones = await _milestones(db, [str(share.id) for share in shares])

    report = []
    for share in shares:
        times = milestones.get(str(share.id), {})
        report.append(
            Disclosure(
                share=share,
                documents=[link.document for link in share.documents],
                first_opened=share.first_opened_at or _first(times, "code.redeemed"),
                first_viewed=_first(times, "access.viewed"),
                first_downloaded=_first(times, "access.download.completed"),
                downloads=share.downloads_completed,
                status=share_status(share),
            )
        )
    return report


def parse_breach_filter(filters: EventFilter) -> EventFilter:
    """Check that a breach query names one subject and a window start; the end defaults to now.

    Raises:
        InvalidInput: no recipient, share or IP prefix is given, or the window has no start.
    """
    if not (filters.recipient or filters.share_id or filters.share_reference or filters.ip_prefix):
        raise InvalidInput(_("Enter a recipient, a share id or an IP prefix."), field="recipient")
    if filters.since is None:
        raise InvalidInput(_("Enter the start of the time window."), field="since")
    if filters.until is None:
        return dataclasses.replace(filters, until=utcnow())
    return filters


async def breach_scope(portal: Portal, filters: EventFilter) -> BreachScope:
    """Count and list what the events matching `filters` touched: event types, shares, documents, patients."""
    filters = await resolve_recipient(portal, filters)
    matching = build_query(portal, filters).subquery()

    async with portal.transaction() as db:
        rows = (
            await db.execute(
                select(
                    matching.c.event_type, func.count(), func.min(matching.c.time), func.max(matching.c.time)
                )
                .group_by(matching.c.event_type)
                .order_by(func.count().desc())
            )
        ).all()
        share_ids = {
            value for value in (await db.scalars(select(matching.c.share_id).distinct())).all() if value
        }
        direct_documents = {
            value for value in (await db.scalars(select(matching.c.document_id).distinct())).all() if value
        }

        share_keys = [uuid.UUID(value) for value in share_ids]
        linked = await db.scalars(
            select(ShareDocument.document_id).where(ShareDocument.share_id.in_(share_keys))
        )
        document_ids = {uuid.UUID(value) for value in direct_documents} | set(linked.all())
        shares = list(
            (
                await db.scalars(
                    select(Share).where(Share.id.in_(share_keys)).order_by(Share.created_at).limit(MAX_LISTED)
                )
            ).all()
        )
        documents = await _documents(db, document_ids, limit=MAX_LISTED)
        patient_count = await db.scalar(
            select(func.count(func.distinct(Document.patient_pseudonym))).where(Document.id.in_(document_ids))
        )

    times = [row[2] for row in rows] + [row[3] for row in rows]
    return BreachScope(
        events=sum(row[1] for row in rows),
        first=_as_utc(min(times)) if times else None,
        last=_as_utc(max(times)) if times else None,
        by_type=[(row[0], row[1]) for row in rows],
        share_count=len(share_ids),
        shares=shares,
        document_count=len(document_ids),
        documents=documents,
        patient_count=patient_count or 0,
    )


async def _documents(db: AsyncSession, ids: Iterable[uuid.UUID], limit: int | None = None) -> list[Document]:
    keys = list(ids)
    if not keys:
        return []
    query = select(Document).where(Document.id.in_(keys)).order_by(Document.created_at)
    if limit is not None:
        query = query.limit(limit)
    return list((await db.scalars(query)).all())


async def _milestones(db: AsyncSession, share_ids: list[str]) -> dict[str, dict[str, dt.datetime]]:
    if not share_ids:
        return {}
    query = (
        select(AccessEvent.share_id, AccessEvent.event_type, func.min(AccessEvent.time))
        .where(AccessEvent.share_id.in_(share_ids), AccessEvent.event_type.in_(_MILESTONES))
        .group_by(AccessEvent.share_id, AccessEvent.event_type)
    )
    result: dict[str, dict[str, dt.datetime]] = {}
    for share_id, event_type, first in (await db.execute(query)).all():
        if share_id is not None:
            result.setdefault(share_id, {})[event_type] = _as_utc(first)
    return result


def _first(times: dict[str, dt.datetime], event_type: str) -> dt.datetime | None:
    return times.get(event_type)


def _as_utc(value: dt.datetime) -> dt.datetime:
    # Aggregates over a subquery bypass the column type, so SQLite returns text and both return naive UTC.
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class EventLabels:
    """Readable names for the ids on one page of events: share references and staff e-mail addresses."""

    shares: dict[str, str]
    actors: dict[str, str]


async def event_labels(portal: Portal, events: Iterable[AccessEvent]) -> EventLabels:
    """Look up the share references and the staff e-mail addresses behind the ids on a page of events.

    The log itself stores only ids. A purged share or a removed account is shown by its id.
    """
    rows = list(events)
    share_ids = {row.share_id for row in rows if row.share_id}
    share_ids |= {row.actor.split(":", 1)[1] for row in rows if row.actor.startswith("recipient:")}
    staff_ids = {row.actor.split(":", 1)[1] for row in rows if row.actor.startswith("staff:")}
    token_ids = {row.actor.split(":", 1)[1] for row in rows if row.actor.startswith("token:")}
    async with portal.transaction() as db:

        async def read(query: AnySelect) -> Sequence[AnyRow]:
            return (await db.execute(query)).all()

        names = await find_names(read, portal.engine.dialect.name, share_ids, staff_ids, token_ids)
    shares, owners, staff = names.share_references, names.token_owners, names.staff_emails

    actors = {}
    for row in rows:
        kind, _separator, value = row.actor.partition(":")
        if kind == "staff" and value in staff:
            actors[row.actor] = staff[value]
        elif kind == "token" and owners.get(value) in staff:
            actors[row.actor] = _("API token of {email}").format(email=staff[owners[value]])
        elif kind == "recipient" and value in shares:
            # The reference stays on one line: a break at its hyphen reads as two values.
            reference = Markup('<span class="nowrap">{}</span>').format(shares[value])
            actors[row.actor] = Markup.escape(_("Recipient of {reference}")).format(reference=reference)
        elif row.actor == "recipient:unknown":
            actors[row.actor] = _("Someone with an unknown code")
        elif row.actor == "system":
            actors[row.actor] = _("System (the portal itself)")
    return EventLabels(shares=shares, actors=actors)
