"""Recording access-log events, one function for every action.

``record`` runs inside the transaction of the action it describes: if the event cannot be written, the
action rolls back with it, and if the action rolls back, no event remains. Sequence numbers are
gap-free across processes: PostgreSQL serialises writers with a transaction-level advisory lock, SQLite
with the write lock every transaction takes at BEGIN IMMEDIATE.

Values a client can influence (purpose, user-agent family, request id, detail text) are cut to the
column limits of `portal.audit.canonical` and lone surrogates are replaced, so a hostile header or form
field cannot make the event, and with it the action, fail. Identifiers the server generates are still
validated strictly: a malformed one is a programming error and raises `EventInvalid`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.canonical import (
    MAX_DETAIL_TEXT,
    canonical_event_bytes,
    details_json,
    format_time,
)
from portal.audit.merkle import leaf_hash
from portal.models import AccessEvent, utcnow

EVENT_TYPES = frozenset(
    {
        "document.uploaded",
        "document.rejected",
        "document.erased",
        "share.created",
        "share.revoked",
        "share.approved",
        "share.expired",
        "share.reissued",
        "code.redeemed",
        "code.failed",
        "code.locked",
        "access.viewed",
        "access.download.started",
        "access.download.completed",
        "access.download.aborted",
        "staff.login",
        "staff.login.failed",
        "staff.logout",
        "staff.created",
        "staff.invited",
        "staff.invitation_withdrawn",
        "staff.password_reset_issued",
        "staff.password_reset_withdrawn",
        "staff.password_changed",
        "staff.totp_enrolled",
        "staff.role_changed",
        "staff.disabled",
        "staff.enabled",
        "api_token.created",
        "api_token.revoked",
        "export.created",
        "policy.loaded",
        "key.rotated",
        "key.retired",
        "legal_hold.added",
        "legal_hold.released",
        "retention.purged",
    }
)

# Column limits of the free-text fields, as validated by portal.audit.canonical.
MAX_PURPOSE = 200
MAX_USER_AGENT_FAMILY = 32
MAX_REQUEST_ID = 64

# An arbitrary constant that names the access log's advisory lock in PostgreSQL.
_ADVISORY_LOCK_KEY = 0x706F7274616C  # "portal"

# Built once: every recorded event runs these, and building a statement costs more than running it.
LOCK_LOG = select(func.pg_advisory_xact_lock(bindparam("key")))
LOCK_LOG_PARAMS = {"key": _ADVISORY_LOCK_KEY}
LAST_SEQ = select(func.max(AccessEvent.seq))
_EVENT_TABLE: Table = AccessEvent.__table__  # type: ignore[assignment]  # a declarative class maps one Table
INSERT_EVENT = insert(_EVENT_TABLE)
_EVENT_COLUMNS = tuple(column.key for column in _EVENT_TABLE.columns)
# The columns that make up the hashed event: all but the hash itself.
_HASHED_COLUMNS = tuple(column for column in _EVENT_COLUMNS if column != "leaf_hash")


@dataclass(frozen=True)
class Actor:
    """The acting party and its origin, reduced to what the access log keeps."""

    actor: str  # "staff:<uuid>", "token:<uuid>", "recipient:<share uuid>", "system"
    ip_prefix: str | None = None
    user_agent_family: str | None = None
    request_id: str | None = None


SYSTEM = Actor(actor="system")


def event_mapping(row: AccessEvent) -> dict[str, Any]:
    """Return the event as the mapping that is hashed, exported and verified."""
    return _hashed_mapping({key: getattr(row, key) for key in _HASHED_COLUMNS})


def _hashed_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    # The stored columns become the hashed mapping: the time as canonical text, the details as JSON.
    mapping = {key: values[key] for key in _HASHED_COLUMNS}
    mapping["time"] = format_time(values["time"])
    mapping["details"] = json.loads(values["details"])
    return mapping


async def record(
    db: AsyncSession,
    who: Actor,
    event_type: str,
    *,
    outcome: str = "success",
    share_id: Any = None,
    document_id: Any = None,
    patient_pseudonym: str | None = None,
    purpose: str | None = None,
    details: dict[str, str | int | bool | None] | None = None,
) -> AccessEvent:
    """Append one event to the access log within the caller's transaction."""
    check_event(event_type, outcome)
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(LOCK_LOG, LOCK_LOG_PARAMS)
    last_seq = await db.scalar(LAST_SEQ)

    values = new_event_values(
        (last_seq or 0) + 1,
        who,
        event_type,
        outcome=outcome,
        share_id=share_id,
        document_id=document_id,
        patient_pseudonym=patient_pseudonym,
        purpose=purpose,
        details=details,
    )
    # A plain INSERT instead of the session's unit of work writes the event at once, in this transaction,
    # for about a third less CPU. The returned row is a detached copy of what was written.
    await db.execute(INSERT_EVENT, values)
    return AccessEvent(**values)


def check_event(event_type: str, outcome: str) -> None:
    """Raise ValueError for an event type or outcome the access log does not know."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown access-log event type {event_type!r}; add it to EVENT_TYPES first")
    if outcome not in ("success", "failure"):
        raise ValueError(f"outcome must be 'success' or 'failure', not {outcome!r}")


def new_event_values(
    seq: int,
    who: Actor,
    event_type: str,
    *,
    outcome: str = "success",
    share_id: Any = None,
    document_id: Any = None,
    patient_pseudonym: str | None = None,
    purpose: str | None = None,
    details: dict[str, str | int | bool | None] | None = None,
) -> dict[str, Any]:
    """Return the parameters of ``INSERT_EVENT`` for the event numbered ``seq``, leaf hash included.

    The caller must hold the log's write lock from reading the last number until the row is inserted. A
    plain mapping, not an ORM object: building one costs more CPU than hashing the event.
    """
    check_event(event_type, outcome)
    values: dict[str, Any] = {
        "seq": seq,
        "time": utcnow(),
        "event_type": event_type,
        "outcome": outcome,
        "actor": who.actor,
        "share_id": _uuid_text(share_id),
        "document_id": _uuid_text(document_id),
        "patient_pseudonym": patient_pseudonym,
        "purpose": clip_text(purpose, MAX_PURPOSE),
        "ip_prefix": _canonical_prefix(who.ip_prefix),
        "user_agent_family": clip_text(who.user_agent_family, MAX_USER_AGENT_FAMILY),
        "request_id": clip_text(who.request_id, MAX_REQUEST_ID),
        "details": details_json(_clip_details(details or {})),
    }
    values["leaf_hash"] = leaf_hash(canonical_event_bytes(_hashed_mapping(values)))
    return values


def clip_text(value: str | None, limit: int) -> str | None:
    """Cut free text to `limit` characters and replace lone surrogates, which have no UTF-8 form."""
    if value is None:
        return None
    text = str(value)
    try:
        # UTF-8 rejects exactly the surrogates, and checking through the codec costs less than a loop here.
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(character) <= 0xDFFF else character for character in text)
    return text[:limit]


def _clip_details(details: dict[str, str | int | bool | None]) -> dict[str, str | int | bool | None]:
    # Keys come from code and stay strictly checked; text values may echo client input.
    clipped: dict[str, str | int | bool | None] = {}
    for key, value in details.items():
        clipped[key] = clip_text(value, MAX_DETAIL_TEXT) if isinstance(value, str) else value
    return clipped


def _uuid_text(value: Any) -> str | None:
    # The event schema accepts only the lowercase hyphenated form, whatever form the caller holds.
    if not value:
        return None
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


@functools.lru_cache(maxsize=4096)
def _canonical_prefix(value: str | None) -> str | None:
    # A prefix that is not a canonical network would fail validation, so the log keeps none instead. Clients
    # of one network share a prefix, so most lookups hit the cache.
    if not value:
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    return str(network)
