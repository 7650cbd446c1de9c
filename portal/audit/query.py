"""Searching the access log and reading it in pages for streamed exports.

The recipient filter matches the recipient names kept in the `share` table and turns them into share
ids; event rows never hold a recipient name. The IP prefix filter accepts any network: a narrower one
selects the stored prefix that contains it, a wider one up to `MAX_PREFIX_EXPANSION` stored prefixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import re
import sqlite3
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, Engine, Row, Select, String, create_engine, false, or_, select, type_coerce
from sqlalchemy.pool import StaticPool

from portal.audit.exporters import ExportLabels, stored_event
from portal.audit.lookups import ExportLookup
from portal.audit.recorder import EVENT_TYPES
from portal.core import Portal
from portal.crypto.pseudonym import pseudonymise
from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import AccessEvent, Document, Share, ShareDocument

# Rows per keyset page of an export: about 2 MB of row objects, which SQLite returned in 25 to 60 ms
# on a 2-core machine (bench/audit_export_http.py).
EXPORT_PAGE_SIZE = 5000
FILTER_KEYS = ("patient_ref", "share_id", "recipient", "event_type", "ip_prefix", "since", "until")
# A share reference ("S-" and eight code characters), accepted in the share id filter with or without
# the "S-", in any case and with spaces.
SHARE_REFERENCE = re.compile(r"(?:S-?)?([0-9A-Z]{8})")
# A wider network than this many stored prefixes (e.g. an IPv4 /16 over stored /24s) is rejected,
# because the query lists every stored prefix it covers.
MAX_PREFIX_EXPANSION = 256
# More matching shares than this means the recipient text is too vague to scope anything.
MAX_RECIPIENT_SHARES = 1000
MAX_RECIPIENT_TEXT = 200


@dataclass(frozen=True)
class EventFilter:
    """Search criteria for access-log events; empty fields do not filter."""

    patient_ref: str | None = None
    share_id: str | None = None
    # A share reference as printed on the slip and in the watermark. `resolve_recipient` turns it into
    # `share_id`.
    share_reference: str | None = None
    recipient: str | None = None
    event_type: str | None = None
    ip_prefix: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    # Filled by `resolve_recipient`: the ids of the shares whose recipient name matches.
    recipient_share_ids: tuple[str, ...] | None = None
    # Filled by `resolve_recipient`: the patient's documents and the shares of them. Events about a share
    # (redemptions, views, downloads) name the share, not the patient, so a patient search needs both.
    patient_document_ids: tuple[str, ...] | None = None
    patient_share_ids: tuple[str, ...] | None = None
    # Set by bundle exports: no event after this seq (the checkpoint's tree size).
    max_seq: int | None = None

    def as_dict(self) -> dict[str, str]:
        """Return the filters in force, for the export record.

        The patient reference and the recipient text are shown only as "given": the log never holds a
        clinic reference or a recipient name.
        """
        values = {
            "share_id": self.share_id,
            "share_reference": self.share_reference,
            "event_type": self.event_type,
            "ip_prefix": self.ip_prefix,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "patient_ref": "given" if self.patient_ref else None,
            "recipient": "given" if self.recipient else None,
        }
        return {key: value for key, value in values.items() if value}


def _parse_time(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    text = value.strip()
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            _("{name}='{value}' is not a date or time. Use YYYY-MM-DD or an RFC 3339 time.").format(
                name=name, value=value[:40]
            ),
            field=name,
        ) from None
    # A bare date as the end of a window means "up to the end of that day".
    if name == "until" and len(text) == 10:
        moment += dt.timedelta(days=1)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_filter(params: Mapping[str, str | None]) -> EventFilter:
    """Validate filter parameters from a form, a query string or the command line.

    Raises:
        InvalidInput: a value is malformed; the message names the field and the expected form.
    """
    share_id = (params.get("share_id") or "").strip() or None
    share_reference = None
    if share_id:
        try:
            share_id = str(uuid.UUID(share_id))
        except ValueError:
            reference = SHARE_REFERENCE.fullmatch("".join(share_id.upper().split()))
            if reference is None:
                raise InvalidInput(
                    _(
                        "'{value}' is neither a share reference nor a share id. Enter the reference printed "
                        "on the slip and in the watermark (such as S-7K3M9QXA), or the id from the share's page."
                    ).format(value=share_id[:40]),
                    field="share_id",
                ) from None
            share_reference, share_id = f"S-{reference.group(1)}", None

    event_type = (params.get("event_type") or "").strip() or None
    if event_type and event_type not in EVENT_TYPES:
        raise InvalidInput(
            _("'{value}' is not an event type. Choose one of: {choices}.").format(
                value=event_type[:40], choices=", ".join(sorted(EVENT_TYPES))
            ),
            field="event_type",
        )

    prefix = (params.get("ip_prefix") or "").strip() or None
    if prefix:
        try:
            prefix = str(ipaddress.ip_network(prefix, strict=False))
        except ValueError:
            raise InvalidInput(
                _("'{value}' is not a network. Enter an IP prefix such as 203.0.113.0/24.").format(
                    value=prefix[:50]
                ),
                field="ip_prefix",
            ) from None

    recipient = unicodedata.normalize("NFC", (params.get("recipient") or "").strip()) or None
    if recipient and len(recipient) > MAX_RECIPIENT_TEXT:
        raise InvalidInput(
            _("The recipient text is longer than {limit} characters. Type part of the name.").format(
                limit=MAX_RECIPIENT_TEXT
            ),
            field="recipient",
        )

    filters = EventFilter(
        patient_ref=(params.get("patient_ref") or "").strip() or None,
        share_id=share_id,
        share_reference=share_reference,
        recipient=recipient,
        event_type=event_type,
        ip_prefix=prefix,
        since=_parse_time(params.get("since"), "since"),
        until=_parse_time(params.get("until"), "until"),
    )
    if filters.since and filters.until and filters.until <= filters.since:
        raise InvalidInput(_("'until' must be later than 'since'."), field="until")
    return filters


async def resolve_recipient(portal: Portal, filters: EventFilter) -> EventFilter:
    """Return the filter with the ids of the shares whose recipient name contains the recipient text.

    Matching ignores case (Unicode case folding) on both SQLite and PostgreSQL, so it runs here, over
    the share table's ids and names, and not in SQL.

    Raises:
        InvalidInput: more than `MAX_RECIPIENT_SHARES` shares match.
    """
    if filters.share_reference:
        filters = await _resolve_reference(portal, filters)
    if filters.patient_ref and filters.patient_share_ids is None:
        filters = await _resolve_patient(portal, filters)
    if not filters.recipient or filters.recipient_share_ids is not None:
        return filters

    needle = filters.recipient.casefold()
    async with portal.transaction() as db:
        rows = (await db.execute(select(Share.id, Share.recipient_name, Share.recipient_org))).all()
    matches = [
        str(share_id)
        for share_id, name, organisation in rows
        if needle in unicodedata.normalize("NFC", name).casefold()
        or (organisation and needle in unicodedata.normalize("NFC", organisation).casefold())
    ]
    if len(matches) > MAX_RECIPIENT_SHARES:
        raise InvalidInput(
            _("{count} shares match this recipient text. Type more of the name.").format(count=len(matches)),
            field="recipient",
        )
    return dataclasses.replace(filters, recipient_share_ids=tuple(sorted(matches)))


async def _resolve_reference(portal: Portal, filters: EventFilter) -> EventFilter:
    async with portal.transaction() as db:
        share_id = await db.scalar(select(Share.id).where(Share.reference == filters.share_reference))
    if share_id is None:
        raise InvalidInput(
            _("No share has the reference {reference}. Check it against the slip or the watermark.").format(
                reference=filters.share_reference
            ),
            field="share_id",
        )
    return dataclasses.replace(filters, share_id=str(share_id), share_reference=None)


async def _resolve_patient(portal: Portal, filters: EventFilter) -> EventFilter:
    pseudonym = pseudonymise(portal.keyring.secret("pseudonym"), filters.patient_ref or "")
    async with portal.transaction() as db:
        document_ids = list(
            (await db.scalars(select(Document.id).where(Document.patient_pseudonym == pseudonym))).all()
        )
        share_ids = list(
            (
                await db.scalars(
                    select(ShareDocument.share_id).where(ShareDocument.document_id.in_(document_ids))
                )
            ).all()
        )
    return dataclasses.replace(
        filters,
        patient_document_ids=tuple(sorted(str(value) for value in document_ids)),
        patient_share_ids=tuple(sorted({str(value) for value in share_ids})),
    )


def stored_prefixes(portal: Portal, prefix: str) -> list[str]:
    """Return the stored IP prefixes (policy length) that a searched network covers or lies in.

    Raises:
        InvalidInput: the network covers more than `MAX_PREFIX_EXPANSION` stored prefixes.
    """
    network = ipaddress.ip_network(prefix, strict=False)
    security = portal.policies.security
    stored_bits = security.ip_prefix_v4 if network.version == 4 else security.ip_prefix_v6
    if network.prefixlen >= stored_bits:
        return [str(network.supernet(new_prefix=stored_bits))]

    count = 1 << (stored_bits - network.prefixlen)
    if count > MAX_PREFIX_EXPANSION:
        raise InvalidInput(
            _(
                "ip_prefix='{value}' is too wide: events keep /{bits} prefixes. "
                "Use a prefix of /{limit} or longer."
            ).format(
                value=prefix, bits=stored_bits, limit=stored_bits - MAX_PREFIX_EXPANSION.bit_length() + 1
            ),
            field="ip_prefix",
        )
    return [str(subnet) for subnet in network.subnets(new_prefix=stored_bits)]


def build_query(portal: Portal, filters: EventFilter) -> Select[AccessEvent]:
    """Return the SELECT of matching events, unordered. Resolve the recipient filter first."""
    query = select(AccessEvent)
    if filters.patient_ref:
        if filters.patient_share_ids is None or filters.patient_document_ids is None:
            raise ValueError("call resolve_recipient before build_query when the patient filter is set")
        pseudonym = pseudonymise(portal.keyring.secret("pseudonym"), filters.patient_ref)
        query = query.where(
            or_(
                AccessEvent.patient_pseudonym == pseudonym,
                AccessEvent.document_id.in_(filters.patient_document_ids),
                AccessEvent.share_id.in_(filters.patient_share_ids),
            )
        )
    if filters.share_id:
        query = query.where(AccessEvent.share_id == filters.share_id)
    if filters.recipient:
        if filters.recipient_share_ids is None:
            raise ValueError("call resolve_recipient before build_query when the recipient filter is set")
        ids = filters.recipient_share_ids
        query = query.where(AccessEvent.share_id.in_(ids) if ids else false())
    if filters.event_type:
        query = query.where(AccessEvent.event_type == filters.event_type)
    if filters.ip_prefix:
        prefixes = stored_prefixes(portal, filters.ip_prefix)
        query = query.where(
            AccessEvent.ip_prefix == prefixes[0]
            if len(prefixes) == 1
            else AccessEvent.ip_prefix.in_(prefixes)
        )
    if filters.since:
        query = query.where(AccessEvent.time >= filters.since)
    if filters.until:
        query = query.where(AccessEvent.time < filters.until)
    if filters.max_seq is not None:
        query = query.where(AccessEvent.seq <= filters.max_seq)
    return query


async def search(
    portal: Portal, filters: EventFilter, before_seq: int | None, limit: int = 50
) -> list[AccessEvent]:
    """Return one page of matching events, newest first, older than `before_seq` when given."""
    filters = await resolve_recipient(portal, filters)
    query = build_query(portal, filters).order_by(AccessEvent.seq.desc()).limit(limit)
    if before_seq:
        query = query.where(AccessEvent.seq < before_seq)
    async with portal.transaction() as db:
        return list((await db.scalars(query)).all())


async def iterate_events(portal: Portal, filters: EventFilter) -> AsyncIterator[dict[str, Any]]:
    """Yield matching events in order as the mappings that are hashed, exported and verified."""
    async for page in iterate_event_rows(portal, filters):
        for row in page:
            yield stored_event(row)


async def iterate_event_rows(portal: Portal, filters: EventFilter) -> AsyncIterator[Sequence[Row[Any]]]:
    """Yield matching events in order, in pages of up to `EXPORT_PAGE_SIZE` stored rows.

    A row holds the columns of `EVENT_FIELDS` in that order, with details as its stored JSON text and
    the time as a naive UTC datetime (PostgreSQL) or its stored text (SQLite); `RowFormatter` and
    `stored_event` read this form. Each page is one short query, so no lock or snapshot is held while
    a slow client receives the export. On SQLite the pages come from a separate connection that only
    reads and never takes the write lock.
    """
    async for rows, _labels in _iterate_pages(portal, filters, None):
        yield rows


async def iterate_labelled_rows(
    portal: Portal, filters: EventFilter
) -> AsyncIterator[tuple[Sequence[Row[Any]], ExportLabels]]:
    """Yield the pages of `iterate_event_rows`, each with the share references and staff e-mail addresses
    of its rows (`portal.audit.lookups.ExportLookup`).

    The lookups for a page run right after the page is read, on the same connection, so an export sends at
    most three lookup queries per page of `EXPORT_PAGE_SIZE` events and never one per event.
    """
    async for rows, labels in _iterate_pages(portal, filters, ExportLookup(portal.engine.dialect.name)):
        yield rows, labels or ExportLabels()


async def _iterate_pages(
    portal: Portal, filters: EventFilter, lookup: ExportLookup | None
) -> AsyncIterator[tuple[Sequence[Row[Any]], ExportLabels | None]]:
    filters = await resolve_recipient(portal, filters)
    dialect = portal.engine.dialect.name
    page_query = (
        build_query(portal, filters)
        .with_only_columns(*_stored_columns(dialect))
        .order_by(AccessEvent.seq)
        .limit(EXPORT_PAGE_SIZE)
    )

    async with _page_reader(portal) as read_page:

        async def read_labelled(after: int) -> tuple[Sequence[Row[Any]], ExportLabels | None]:
            # One task reads a page and then its lookups, so they never share the reader's SQLite
            # connection with another query at the same time.
            rows = await read_page(page_query.where(AccessEvent.seq > after))
            if lookup is None or not rows:
                return rows, None
            return rows, await lookup.labels(rows, read_page)

        # The next page is read while the caller formats this one: on two cores the database driver
        # and the formatter then overlap.
        pending: asyncio.Future[tuple[Sequence[Row[Any]], ExportLabels | None]] | None = (
            asyncio.ensure_future(read_labelled(0))
        )
        try:
            while pending is not None:
                rows, labels = await pending
                pending = None
                if len(rows) == EXPORT_PAGE_SIZE:
                    pending = asyncio.ensure_future(read_labelled(rows[-1][0]))
                if rows:
                    yield rows, labels
        finally:
            # A page still being read uses the reader's connection, which closes after this block.
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending


def _stored_columns(dialect: str) -> list[Any]:
    table = AccessEvent.__table__.c
    # Without the UTCDateTime conversion: SQLite returns the stored text, which is cheaper to read
    # than a parsed datetime, and PostgreSQL a naive UTC datetime.
    time = type_coerce(table.time, String() if dialect == "sqlite" else DateTime())
    return [
        table.seq,
        time,
        table.event_type,
        table.outcome,
        table.actor,
        table.share_id,
        table.document_id,
        table.patient_pseudonym,
        table.purpose,
        table.ip_prefix,
        table.user_agent_family,
        table.request_id,
        table.details,
    ]


PageReader = Callable[[Select[Any]], Awaitable[Sequence[Row[Any]]]]


@contextlib.asynccontextmanager
async def _page_reader(portal: Portal) -> AsyncIterator[PageReader]:
    database = portal.engine.url.database
    if portal.engine.dialect.name != "sqlite" or not database or database == ":memory:":

        async def read_shared(query: Select[Any]) -> Sequence[Row[Any]]:
            async with portal.engine.connect() as connection:
                return (await connection.execute(query)).all()

        yield read_shared
        return

    # The portal's SQLite engine begins every transaction with BEGIN IMMEDIATE, which takes the write
    # lock. A plain connection in autocommit mode reads each page as its own WAL snapshot instead.
    engine = await asyncio.to_thread(_sqlite_read_engine, database)

    async def read_sqlite(query: Select[Any]) -> Sequence[Row[Any]]:
        return await asyncio.to_thread(_read_page, engine, query)

    try:
        yield read_sqlite
    finally:
        await asyncio.to_thread(engine.dispose)


def _sqlite_read_engine(database: str) -> Engine:
    def connect() -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN. The connection is used by one thread at a time.
        connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=15000")
        connection.execute("PRAGMA query_only=ON")
        return connection

    return create_engine("sqlite://", creator=connect, poolclass=StaticPool)


def _read_page(engine: Engine, query: Select[Any]) -> Sequence[Row[Any]]:
    with engine.connect() as connection:
        return connection.execute(query).all()
