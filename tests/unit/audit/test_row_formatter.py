"""The export's fast row formatter gives the same bytes and errors as the reference exporters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portal.audit.canonical import EVENT_FIELDS, EventInvalid, details_json, parse_time
from portal.audit.exporters import RowFormatter, csv_rows, jsonl_lines, stored_event

from .conftest import EventFactory


def varied_events(make_event: EventFactory) -> list[dict[str, Any]]:
    """Return events with control characters, non-ASCII text, formula starts and empty optional fields."""
    return [
        make_event(1),
        make_event(2, purpose="Zweitmeinung «dringend» — Łódź, Ελλάδα, 日本", user_agent_family="Firefox"),
        make_event(3, purpose='line\nbreak\r\n\ttab \x00 nul \x1b esc \u202e rtl \u2028 sep \\ slash "q"'),
        make_event(4, purpose='=HYPERLINK("x")', request_id="+1-2", user_agent_family="@agent"),
        make_event(5, share_id=None, document_id=None, patient_pseudonym=None, ip_prefix=None, purpose=None),
        make_event(6, user_agent_family=None, request_id=None, details={}),
        make_event(7, ip_prefix="2001:db8:4::/64", outcome="failure", event_type="code.failed"),
        make_event(8, details={"note": "tab\there", "count": -3, "flag": True, "empty": None, "emoji": "😀"}),
        make_event(9, details={"reason": "=1+1", "zeta": 1, "alpha": "\u200b"}),
        make_event(10, actor="system", time="2025-12-31T23:59:59.999999Z"),
        make_event(11, time="2024-02-29T00:00:00.000000Z", purpose="x" * 200),
    ]


def stored_rows(events: list[dict[str, Any]], *, sqlite: bool) -> list[tuple[Any, ...]]:
    """Return the events as the database returns them: naive UTC times (or SQLite text), details as text."""
    rows = []
    for event in events:
        values = [event[name] for name in EVENT_FIELDS]
        moment = parse_time(event["time"]).replace(tzinfo=None)
        values[1] = moment.isoformat(sep=" ", timespec="microseconds") if sqlite else moment
        values[12] = details_json(event["details"])
        rows.append(tuple(values))
    return rows


@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgresql"])
def test_row_formatter_jsonl_identical(make_event: EventFactory, sqlite: bool) -> None:
    events = varied_events(make_event)
    expected = "".join(jsonl_lines(events)).encode("utf-8")
    formatter = RowFormatter()

    # The first pass validates every value in full; the second takes the remembered-value path.
    assert formatter.jsonl(stored_rows(events, sqlite=sqlite)) == expected
    assert formatter.jsonl(stored_rows(events, sqlite=sqlite)) == expected


@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgresql"])
def test_row_formatter_csv_identical(make_event: EventFactory, sqlite: bool) -> None:
    events = varied_events(make_event)
    expected = "".join(csv_rows(events)).encode("utf-8")
    header_length = len(expected.split(b"\r\n", 1)[0]) + 2
    formatter = RowFormatter()

    assert formatter.csv(stored_rows(events, sqlite=sqlite), header=True) == expected
    assert formatter.csv(stored_rows(events, sqlite=sqlite), header=False) == expected[header_length:]


def test_row_formatter_recanonicalises_details(make_event: EventFactory) -> None:
    event = make_event(1, details={"b": 1, "a": "x"})
    row = list(stored_rows([event], sqlite=True)[0])
    row[12] = json.dumps({"b": 1, "a": "x"}, indent=2)

    assert RowFormatter().jsonl([tuple(row)]) == "".join(jsonl_lines([event])).encode("utf-8")


@pytest.mark.parametrize(
    ("position", "value"),
    [
        (4, "=cmd|' /C calc'!A0"),
        (5, "NOT-A-UUID"),
        (9, "203.0.113.7/24"),
        (2, "Access.Viewed"),
        (8, "p" * 201),
        (12, '{"nested": {"a": 1}}'),
        (1, "not a time"),
    ],
    ids=["actor", "share-id", "ip-prefix", "event-type", "purpose-length", "details", "time"],
)
def test_row_formatter_invalid_row(make_event: EventFactory, position: int, value: Any) -> None:
    formatter = RowFormatter()
    valid = stored_rows([make_event(1)], sqlite=True)[0]
    formatter.jsonl([valid])
    row = list(valid)
    row[position] = value

    with pytest.raises(EventInvalid) as fast:
        formatter.jsonl([tuple(row)])
    with pytest.raises(EventInvalid):
        RowFormatter().csv([tuple(row)], header=False)
    if position != 1:
        with pytest.raises(EventInvalid) as reference:
            list(jsonl_lines([stored_event(tuple(row))]))
        assert str(fast.value) == str(reference.value)


def test_row_formatter_lone_surrogate(make_event: EventFactory) -> None:
    row = list(stored_rows([make_event(1)], sqlite=False)[0])
    row[8] = "broken \ud800 text"

    with pytest.raises(EventInvalid, match="purpose: contains a lone surrogate"):
        RowFormatter().jsonl([tuple(row)])


def test_stored_event_matches_recorded_form(make_event: EventFactory) -> None:
    event = make_event(3, details={"page": 2})
    for row in stored_rows([event], sqlite=True) + stored_rows([event], sqlite=False):
        assert stored_event(row) == event
