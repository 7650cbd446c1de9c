"""Streaming CSV and JSON Lines exports of access-log events.

Both exporters are generators: they hold one event at a time, so an export of any length needs
constant memory and can be sent as a streamed HTTP response. Every event is validated with the
schema of `portal.audit.canonical` first, so an export never contains a field the log cannot hold.

`jsonl_lines` writes the canonical form itself: each line, without its newline, is the input of that
event's Merkle leaf hash. The portal's exports (`RowFormatter` with `ExportLabels`) add the fields of
`LOOKUP_FIELDS` after the hashed ones: values read from the share and staff tables when the export runs,
which no leaf hash covers. A verifier removes them and re-encodes the rest as canonical JSON. The CSV output
is for spreadsheets, not for verification.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from portal.audit.canonical import (
    EVENT_FIELDS,
    MAX_JSON_INTEGER,
    EventInvalid,
    canonical_event_bytes,
    canonical_json,
    details_json,
    escape_control,
    format_time,
    validate_event,
)

# Spreadsheets read a cell that starts with one of these as a formula (OWASP "CSV Injection";
# OWASP ASVS 5.0 requirement 1.2.10 adds the NUL character).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0")

# Fields whose value a client or a staff member can choose. Validation restricts every other field to
# patterns (digits, lowercase words, UUIDs, network prefixes) that contain no control character and
# cannot start like a formula, so only these cells need escaping and neutralising.
FREE_TEXT_FIELDS = frozenset({"purpose", "user_agent_family", "request_id", "details"})
_FREE_TEXT_POSITIONS = tuple(
    position for position, name in enumerate(EVENT_FIELDS) if name in FREE_TEXT_FIELDS
)

# Fields an export adds after the event's own: the reference of the share in share_id and the e-mail
# address of the staff member behind the actor, looked up when the export runs (`portal.audit.lookups`).
# They are not part of the event, so no leaf hash covers them, and a later export may show another
# value or none (a share or account row that no longer exists gives an empty value).
LOOKUP_FIELDS: tuple[str, ...] = ("share_reference", "actor_email")
EXPORT_FIELDS: tuple[str, ...] = EVENT_FIELDS + LOOKUP_FIELDS


@dataclass(frozen=True)
class ExportLabels:
    """The lookup values for one page of stored rows. An id without an entry, or with None, gets an empty
    value. Entries for ids that are not on the page do no harm."""

    shares: Mapping[str, str | None] = field(default_factory=dict)  # share id -> share reference
    actors: Mapping[str, str | None] = field(default_factory=dict)  # actor -> staff e-mail address


def jsonl_lines(events: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Yield each event as one line of canonical JSON, ending in a newline.

    Raises:
        EventInvalid: an event breaks the schema; lines already yielded stay valid.
    """
    for event in events:
        yield canonical_event_bytes(event).decode("utf-8") + "\n"


def csv_rows(events: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Yield a header line, then one CSV line per event (RFC 4180, CRLF line ends).

    Columns follow `EVENT_FIELDS`. None becomes an empty cell, booleans in details become true and
    false, and details is one cell of canonical JSON. Control and invisible characters are escaped
    with `escape_control`, so every event is exactly one physical line. A cell that would start like a
    formula gets a leading apostrophe.

    Raises:
        EventInvalid: an event breaks the schema; lines already yielded stay valid.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    writer.writerow(EVENT_FIELDS)
    yield _take(buffer)

    for event in events:
        validate_event(event)
        # The csv module writes None as an empty cell and an int in decimal.
        row = [event[name] for name in EVENT_FIELDS]
        for position in _FREE_TEXT_POSITIONS:
            if row[position] is not None:
                row[position] = _free_text_cell(row[position])
        writer.writerow(row)
        yield _take(buffer)


def neutralise_formula(cell: str) -> str:
    """Prefix an apostrophe to a cell that a spreadsheet would otherwise evaluate as a formula."""
    if cell.startswith(FORMULA_PREFIXES):
        return "'" + cell
    return cell


def _free_text_cell(value: Any) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return neutralise_formula(escape_control(text))


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


# Fast formatting of stored rows
#
# An export reads tens of thousands of events per second, and validating every field of every event
# costs more than reading it. Stored rows were validated when they were recorded, yet the exports
# still check each one: a value that passed the full check once in this export (a share id, an
# actor, a network prefix) is remembered and only looked up for later rows, and a row with any value
# not seen before goes through `canonical_event_bytes` itself. Both paths give the same bytes, and an
# invalid row raises the same `EventInvalid`.

# Free-text column limits, as `portal.audit.canonical` validates them.
_FREE_TEXT_LIMITS = ((8, 200), (10, 32), (11, 64))  # purpose, user_agent_family, request_id
# A value cache larger than this is emptied, so an export of any length keeps bounded memory.
MAX_REMEMBERED_VALUES = 65_536

StoredRow = Sequence[Any]


class RowFormatter:
    """Format stored access-log rows as canonical JSON Lines or as CSV text, a batch at a time.

    A stored row holds the values of `EVENT_FIELDS` in that order, as `portal.audit.query` reads them:
    the time as a naive UTC datetime or the SQLite text of one, and details as the stored JSON text.
    One formatter serves one export; it remembers the values it has validated.

    Given `ExportLabels`, each line or row also carries the `LOOKUP_FIELDS`: in JSON Lines as two more
    keys after the canonical ones (null when there is no value), in CSV as two more columns at the end
    (empty when there is no value). Without them the output matches `jsonl_lines` and `csv_rows`.
    """

    def __init__(self) -> None:
        self._valid: tuple[set[Any], ...] = tuple(set() for _ in range(5))

    def jsonl(self, rows: Sequence[StoredRow], labels: ExportLabels | None = None) -> bytes:
        """Return one JSON line per row in UTF-8, each ending in a newline.

        Without ``labels`` each line is the event's canonical JSON; with them the lookup fields follow.

        Raises:
            EventInvalid: a row breaks the event schema.
        """
        text = "".join([self._json_line(row, labels) for row in rows])
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        # A lone surrogate in free text: the full path names the event and field that holds it.
        return "".join([self._slow_json_line(row, labels) for row in rows]).encode("utf-8")

    def csv(self, rows: Iterable[StoredRow], *, header: bool, labels: ExportLabels | None = None) -> bytes:
        """Return the CSV lines of the rows in UTF-8, with the header line first when ``header`` is true.

        With ``labels`` the header and every row end with the lookup columns.

        Raises:
            EventInvalid: a row breaks the event schema.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        if header:
            writer.writerow(EVENT_FIELDS if labels is None else EXPORT_FIELDS)
        writer.writerows([self._csv_cells(row, labels) for row in rows])
        return buffer.getvalue().encode("utf-8")

    def _json_line(self, row: StoredRow, labels: ExportLabels | None) -> str:
        time = self._checked_time(row)
        details = _stored_details(row[12])
        if time is None or details is None or not self._known(row):
            return self._slow_json_line(row, labels)

        (
            seq,
            _,
            event_type,
            outcome,
            actor,
            share_id,
            document_id,
            pseudonym,
            purpose,
            prefix,
            agent,
            request_id,
            _,
        ) = row
        end = "}\n" if labels is None else _json_lookups(share_id, actor, labels)
        # Keys in sorted order, as canonical JSON writes them. The strict fields match patterns with no
        # character that JSON escapes, so only the free-text fields go through the string encoder.
        return (
            f'{{"actor":"{actor}","details":{details[0]},"document_id":{_quoted(document_id)},'
            f'"event_type":"{event_type}","ip_prefix":{_quoted(prefix)},"outcome":"{outcome}",'
            f'"patient_pseudonym":{_quoted(pseudonym)},"purpose":{_json_text(purpose)},'
            f'"request_id":{_json_text(request_id)},"seq":{seq},"share_id":{_quoted(share_id)},'
            f'"time":"{time}","user_agent_family":{_json_text(agent)}{end}'
        )

    def _csv_cells(self, row: StoredRow, labels: ExportLabels | None) -> list[Any]:
        time = self._checked_time(row)
        details = _stored_details(row[12])
        if time is None or details is None or not self._known(row):
            event = self._slow_event(row)
            validate_event(event)
            self._remember(row)
            time = event["time"]
            details = ("", _free_text_cell(event["details"]))

        cells = list(row)
        cells[1] = time
        cells[12] = details[1]
        for position in (8, 10, 11):
            if cells[position] is not None:
                cells[position] = neutralise_formula(escape_control(cells[position]))
        if labels is not None:
            reference = labels.shares.get(row[5])
            email = labels.actors.get(row[4])
            cells.append(None if reference is None else _csv_lookup(reference))
            cells.append(None if email is None else _csv_lookup(email))
        return cells

    def _checked_time(self, row: StoredRow) -> str | None:
        # The event time in its RFC 3339 form, or None when only the full check can tell.
        value = row[1]
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return None
        if not isinstance(value, dt.datetime) or value.tzinfo is not None or value.year < 1000:
            return None
        return value.isoformat(timespec="microseconds") + "Z"

    def _known(self, row: StoredRow) -> bool:
        # True when every strictly validated value passed the full check earlier in this export.
        seq = row[0]
        if type(seq) is not int or not 1 <= seq <= MAX_JSON_INTEGER:
            return False
        for position, limit in _FREE_TEXT_LIMITS:
            text = row[position]
            if text is not None and (type(text) is not str or len(text) > limit):
                return False

        kinds, ids, actors, pseudonyms, prefixes = self._valid
        return (
            (row[2], row[3]) in kinds
            and row[4] in actors
            and row[5] in ids
            and row[6] in ids
            and row[7] in pseudonyms
            and row[9] in prefixes
        )

    def _slow_json_line(self, row: StoredRow, labels: ExportLabels | None) -> str:
        line = canonical_event_bytes(self._slow_event(row)).decode("utf-8")
        self._remember(row)
        if labels is None:
            return line + "\n"
        # Canonical JSON of an object ends with its closing brace, which the lookup fields go before.
        return line[:-1] + _json_lookups(row[5], row[4], labels)

    def _slow_event(self, row: StoredRow) -> dict[str, Any]:
        return stored_event(row)

    def _remember(self, row: StoredRow) -> None:
        # Called only after the full check passed, so every value here is valid.
        kinds, ids, actors, pseudonyms, prefixes = self._valid
        for values, value in (
            (kinds, (row[2], row[3])),
            (actors, row[4]),
            (ids, row[5]),
            (ids, row[6]),
            (pseudonyms, row[7]),
            (prefixes, row[9]),
        ):
            if len(values) >= MAX_REMEMBERED_VALUES:
                values.clear()
            values.add(value)


def stored_event(row: StoredRow) -> dict[str, Any]:
    """Return a stored row (see `RowFormatter`) as the event mapping that is hashed and exported.

    Raises:
        EventInvalid: the stored time is not a timestamp.
        ValueError: the stored details are not JSON.
    """
    event = dict(zip(EVENT_FIELDS, row, strict=True))
    event["time"] = _event_time(row[1])
    event["details"] = json.loads(row[12])
    return event


def _json_lookups(share_id: str | None, actor: str, labels: ExportLabels) -> str:
    # The lookup fields and the closing brace, after the canonical fields of a JSON line.
    reference = _json_text(labels.shares.get(share_id))  # type: ignore[arg-type]  # None finds nothing
    email = _json_text(labels.actors.get(actor))
    return f',"share_reference":{reference},"actor_email":{email}}}\n'


def _csv_lookup(value: str) -> str:
    # An e-mail address may start with "=" or "-" and hold control characters, so lookup values are
    # escaped and neutralised like free text. Most need neither: str.isprintable is false for every
    # character that `escape_control` escapes except the backslash.
    if value.isprintable() and "\\" not in value and not value.startswith(FORMULA_PREFIXES):
        return value
    return neutralise_formula(escape_control(value))


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _event_time(value: Any) -> str:
    # The full path: SQLite returns the stored text, PostgreSQL a naive datetime, both in UTC.
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise EventInvalid(f"time: stored value {value[:40]!r} is not a timestamp") from None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return format_time(value)


@functools.lru_cache(maxsize=4096)
def _stored_details(text: str) -> tuple[str, str] | None:
    # Most events share a few details values ({} above all), so each distinct text is checked and
    # re-encoded once: the canonical JSON text and the CSV cell, or None when the text is invalid.
    try:
        details = json.loads(text)
        canonical = details_json(details)
    except (ValueError, TypeError):
        # EventInvalid is a ValueError; the full path raises it again with the event's context.
        return None
    return canonical, _free_text_cell(details)
