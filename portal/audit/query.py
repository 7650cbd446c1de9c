"""Searching the access log and reading it in pages for streamed exports."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from portal.audit.recorder import EVENT_TYPES, event_mapping
from portal.core import Portal
from portal.crypto.pseudonym import pseudonymise
from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import AccessEvent

EXPORT_PAGE_SIZE = 2000


@dataclass(frozen=True)
class EventFilter:
    patient_ref: str | None = None
    share_id: str | None = None
    event_type: str | None = None
    ip_prefix: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def as_dict(self) -> dict[str, str]:
        """The filters in force, for the export record; the patient reference is left out on purpose."""
        values = {
            "share_id": self.share_id,
            "event_type": self.event_type,
            "ip_prefix": self.ip_prefix,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "patient_ref": "given" if self.patient_ref else None,
        }
        return {key: value for key, value in values.items() if value}


def _parse_time(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            _("{name}='{value}' is not a date or time. Use YYYY-MM-DD or an RFC 3339 time.").format(
                name=name, value=value[:40]
            ),
            field=name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_filter(params: dict[str, str | None]) -> EventFilter:
    share_id = (params.get("share_id") or "").strip() or None
    if share_id:
        try:
            share_id = str(uuid.UUID(share_id))
        except ValueError:
            raise InvalidInput(
                _("share_id='{value}' is not a share id.").format(value=share_id[:40]), field="share_id"
            ) from None

    event_type = (params.get("event_type") or "").strip() or None
    if event_type and event_type not in EVENT_TYPES:
        raise InvalidInput(
            _("event_type='{value}' is unknown. Use one of: {choices}.").format(
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
                _("ip_prefix='{value}' is not a network. Use a prefix such as 203.0.113.0/24.").format(
                    value=prefix[:50]
                ),
                field="ip_prefix",
            ) from None

    return EventFilter(
        patient_ref=(params.get("patient_ref") or "").strip() or None,
        share_id=share_id,
        event_type=event_type,
        ip_prefix=prefix,
        since=_parse_time(params.get("since"), "since"),
        until=_parse_time(params.get("until"), "until"),
    )


def build_query(portal: Portal, filters: EventFilter) -> Select[tuple[AccessEvent]]:
    query = select(AccessEvent)
    if filters.patient_ref:
        pseudonym = pseudonymise(portal.keyring.secret("pseudonym"), filters.patient_ref)
        query = query.where(AccessEvent.patient_pseudonym == pseudonym)
    if filters.share_id:
        query = query.where(AccessEvent.share_id == filters.share_id)
    if filters.event_type:
        query = query.where(AccessEvent.event_type == filters.event_type)
    if filters.ip_prefix:
        query = query.where(AccessEvent.ip_prefix == filters.ip_prefix)
    if filters.since:
        query = query.where(AccessEvent.time >= filters.since)
    if filters.until:
        query = query.where(AccessEvent.time < filters.until)
    return query


async def search(
    portal: Portal, filters: EventFilter, before_seq: int | None, limit: int = 50
) -> list[AccessEvent]:
    query = build_query(portal, filters).order_by(AccessEvent.seq.desc()).limit(limit)
    if before_seq:
        query = query.where(AccessEvent.seq < before_seq)
    async with portal.transaction() as db:
        return list((await db.scalars(query)).all())


async def iterate_events(portal: Portal, filters: EventFilter) -> AsyncIterator[dict[str, Any]]:
    """Yield matching events in order, one short transaction per page, so no lock is held while streaming."""
    after = 0
    while True:
        query = (
            build_query(portal, filters)
            .where(AccessEvent.seq > after)
            .order_by(AccessEvent.seq)
            .limit(EXPORT_PAGE_SIZE)
        )
        async with portal.transaction() as db:
            rows = list((await db.scalars(query)).all())
        for row in rows:
            yield event_mapping(row)
        if len(rows) < EXPORT_PAGE_SIZE:
            return
        after = rows[-1].seq
