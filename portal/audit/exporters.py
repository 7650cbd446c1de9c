"""Streaming CSV and JSON Lines exports of access-log events.

Both exporters are generators: they hold one event at a time, so an export of any length needs
constant memory and can be sent as a streamed HTTP response. Every event is validated with the
schema of `portal.audit.canonical` first, so an export never contains a field the log cannot hold.

The JSON Lines output is the canonical form itself: each line, without its newline, is the input of
that event's Merkle leaf hash. The CSV output is for spreadsheets, not for verification.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from portal.audit.canonical import (
    EVENT_FIELDS,
    canonical_event_bytes,
    canonical_json,
    escape_control,
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
