"""Share references and staff e-mail addresses for the ids that access-log events store.

An event stores a share id and an actor (`staff:<uuid>`, `token:<uuid>`, `recipient:<share id>`,
`system`), never a name. The DPO's pages and the exports look up the share reference printed on the slip
and the staff member's e-mail address when they show or write an event. These values are not part of the
event: no leaf hash, checkpoint or bundle covers them, and a share or account row that does not exist
(deleted, or never created) gives no value.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Uuid, any_, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import InstrumentedAttribute

from portal.audit.exporters import MAX_REMEMBERED_VALUES, ExportLabels
from portal.models import ApiToken, Share, StaffUser

AnySelect = Select[*tuple[Any, ...]]
AnyRow = Row[*tuple[Any, ...]]
# Runs one SELECT and returns all its rows: a session's execute, or an export's page reader.
ReadRows = Callable[[AnySelect], Awaitable[Sequence[AnyRow]]]


@dataclass(frozen=True)
class IdNames:
    """The rows found for a set of ids, keyed by the ids' text as events store them."""

    share_references: dict[str, str]  # share id -> reference
    staff_emails: dict[str, str]  # staff id -> e-mail address
    token_owners: dict[str, str]  # API token id -> staff id of its owner


async def find_names(
    read: ReadRows, dialect: str, share_ids: Iterable[str], staff_ids: Iterable[str], token_ids: Iterable[str]
) -> IdNames:
    """Look up share references, token owners and staff e-mail addresses, one query per kind of id.

    ``dialect`` is the database's SQLAlchemy dialect name. Ids that are not UUIDs or have no row are
    left out of the result. A kind with no ids sends no query.
    """
    share_keys = _uuids(share_ids)
    token_keys = _uuids(token_ids)
    staff_keys = set(_uuids(staff_ids))

    references: dict[str, str] = {}
    if share_keys:
        rows = await read(select(Share.id, Share.reference).where(_one_of(Share.id, share_keys, dialect)))
        references = {str(share_id): reference for share_id, reference in rows}

    owners: dict[str, str] = {}
    if token_keys:
        rows = await read(
            select(ApiToken.id, ApiToken.user_id).where(_one_of(ApiToken.id, token_keys, dialect))
        )
        owners = {str(token_id): str(user_id) for token_id, user_id in rows}
        staff_keys.update(uuid.UUID(user_id) for user_id in owners.values())

    emails: dict[str, str] = {}
    if staff_keys:
        rows = await read(
            select(StaffUser.id, StaffUser.email).where(_one_of(StaffUser.id, list(staff_keys), dialect))
        )
        emails = {str(user_id): email for user_id, email in rows}

    return IdNames(share_references=references, staff_emails=emails, token_owners=owners)


def _one_of(
    column: InstrumentedAttribute[uuid.UUID], keys: list[uuid.UUID], dialect: str
) -> ColumnElement[bool]:
    # An export looks up to 5,000 ids at once. On PostgreSQL one array parameter replaces that many IN
    # placeholders, whose client-side parsing in psycopg 3.3 took most of such a query's time.
    if dialect == "postgresql":
        return column == any_(bindparam(None, keys, type_=postgresql.ARRAY(Uuid())))
    return column.in_(keys)


class ExportLookup:
    """Look up the values of `LOOKUP_FIELDS` for the pages of one export, one batch of queries per page.

    Values found (or not found) earlier in the export are remembered, so a share or staff member that
    appears on many pages is queried once. The memory stays bounded: past `MAX_REMEMBERED_VALUES`
    entries the remembered values are dropped and queried again when they recur.
    """

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._references: dict[str, str | None] = {}
        self._emails: dict[str, str | None] = {}

    async def labels(self, rows: Sequence[Sequence[Any]], read: ReadRows) -> ExportLabels:
        """Return the share references and staff e-mail addresses for one page of stored rows.

        The rows have the layout of `portal.audit.exporters.RowFormatter`: the actor at index 4 and the
        share id at index 5. A `staff:` actor gets its account's address, a `token:` actor the address of
        the token's owner, and every other actor none.
        """
        references, emails = self._references, self._emails
        new_shares = {row[5] for row in rows if row[5] not in references}
        new_shares.discard(None)
        new_actors = {row[4] for row in rows if row[4] not in emails}
        if new_shares or new_actors:
            names = await find_names(
                read,
                self._dialect,
                new_shares,
                {actor[6:] for actor in new_actors if actor.startswith("staff:")},
                {actor[6:] for actor in new_actors if actor.startswith("token:")},
            )
            for share_id in new_shares:
                references[share_id] = names.share_references.get(share_id)
            for actor in new_actors:
                emails[actor] = _email_of(actor, names)

        # The page keeps these dictionaries: later pages only add to them, or start new ones when full.
        if len(references) > MAX_REMEMBERED_VALUES:
            self._references = {}
        if len(emails) > MAX_REMEMBERED_VALUES:
            self._emails = {}
        return ExportLabels(shares=references, actors=emails)


def _email_of(actor: str, names: IdNames) -> str | None:
    kind, _separator, value = actor.partition(":")
    if kind == "token":
        value = names.token_owners.get(value, "")
    elif kind != "staff":
        return None
    return names.staff_emails.get(value)


def _uuids(values: Iterable[str]) -> list[uuid.UUID]:
    # Actor ids are free-form in the event schema, so an id that is not a UUID has no row to find.
    result = []
    for value in values:
        try:
            result.append(uuid.UUID(value))
        except ValueError:
            continue
    return result
