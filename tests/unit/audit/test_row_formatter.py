"""The export's fast row formatter gives the same bytes and errors as the reference exporters, and adds
the lookup fields after the event's own without changing them."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from portal.audit.canonical import EVENT_FIELDS, EventInvalid, canonical_event_bytes, details_json, parse_time
from portal.audit.exporters import (
    EXPORT_FIELDS,
    LOOKUP_FIELDS,
    ExportLabels,
    RowFormatter,
    csv_rows,
    jsonl_lines,
    stored_event,
)

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


def labels_for(events: list[dict[str, Any]]) -> ExportLabels:
    """Return lookup values for some of the events' shares and actors, with the hard cases of a cell."""
    return ExportLabels(
        shares={events[0]["share_id"]: "S-7K3M9QXA"},
        actors={"system": "=cmd|' /C calc'!A0@clinic.test", events[1]["actor"]: "zoë\x1b@clinic.test"},
    )


@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgresql"])
def test_row_formatter_jsonl_lookups(make_event: EventFactory, sqlite: bool) -> None:
    events = varied_events(make_event)
    labels = labels_for(events)
    canonical = list(jsonl_lines(events))
    formatter = RowFormatter()

    for _pass in range(2):
        exported_text = formatter.jsonl(stored_rows(events, sqlite=sqlite), labels).decode("utf-8")
        # Split at newlines only: str.splitlines also splits at U+2028, which JSON leaves unescaped.
        lines = exported_text.split("\n")
        assert lines.pop() == ""
        assert len(lines) == len(events)
        for line, event, expected in zip(lines, events, canonical, strict=True):
            exported = json.loads(line)
            assert list(exported)[-2:] == list(LOOKUP_FIELDS)
            assert exported.pop("share_reference") == labels.shares.get(event["share_id"])
            assert exported.pop("actor_email") == labels.actors.get(event["actor"])
            assert exported == event
            assert canonical_event_bytes(exported) == expected[:-1].encode("utf-8")
            assert line.startswith(expected[:-2]), "the hashed fields come first, as in the canonical line"


@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgresql"])
def test_row_formatter_csv_lookups(make_event: EventFactory, sqlite: bool) -> None:
    events = varied_events(make_event)
    labels = labels_for(events)
    expected = list(csv.reader(io.StringIO("".join(csv_rows(events)))))
    formatter = RowFormatter()

    exported = formatter.csv(stored_rows(events, sqlite=sqlite), header=True, labels=labels)
    again = formatter.csv(stored_rows(events, sqlite=sqlite), header=False, labels=labels)
    parsed = list(csv.reader(io.StringIO(exported.decode("utf-8"))))
    assert parsed[1:] == list(csv.reader(io.StringIO(again.decode("utf-8"))))

    assert tuple(parsed[0]) == EXPORT_FIELDS
    assert [row[: len(EVENT_FIELDS)] for row in parsed] == expected, "the event's columns are unchanged"
    lookups = [row[len(EVENT_FIELDS) :] for row in parsed[1:]]
    assert lookups[0] == ["S-7K3M9QXA", ""]
    assert lookups[1] == ["", "zoë\\u001b@clinic.test"], "control characters are escaped"
    assert lookups[9] == ["", "'=cmd|' /C calc'!A0@clinic.test"], "a formula start is neutralised"
    assert all(row == ["", ""] for row in lookups[2:9] + lookups[10:])


def test_row_formatter_empty_csv_lookups() -> None:
    header = RowFormatter().csv([], header=True, labels=ExportLabels())

    assert header == (",".join(EXPORT_FIELDS) + "\r\n").encode()
