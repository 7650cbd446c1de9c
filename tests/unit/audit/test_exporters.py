"""CSV and JSON Lines exports: golden files, formula neutralisation, streaming."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portal.audit.canonical import EVENT_FIELDS, EventInvalid, canonical_event_bytes
from portal.audit.exporters import csv_rows, jsonl_lines, neutralise_formula

GOLDEN = Path(__file__).parent / "golden"


def golden_events() -> list[dict[str, Any]]:
    """Return events whose free-text fields start like formulas or hold newlines and accents."""
    base: dict[str, Any] = {
        "time": "2025-02-03T10:00:00.000000Z",
        "event_type": "access.download.completed",
        "outcome": "success",
        "actor": "recipient:0c9d8e7f-6a5b-4c3d-8e1f-2a3b4c5d6e7f",
        "share_id": "0c9d8e7f-6a5b-4c3d-8e1f-2a3b4c5d6e7f",
        "document_id": "3f0b8a44-2d6e-4f7a-8d8e-0a4c1b2e3d4f",
        "patient_pseudonym": "k7x2mqplw3zb4rtyvnc5hjaedg",
        "purpose": "follow-up care",
        "ip_prefix": "203.0.113.0/24",
        "user_agent_family": "Firefox",
        "request_id": "req-0001",
        "details": {},
    }
    return [
        {**base, "seq": 1, "purpose": '=HYPERLINK("http://attacker.invalid","open")'},
        {**base, "seq": 2, "user_agent_family": "+Mobile Safari", "outcome": "failure"},
        {**base, "seq": 3, "request_id": "-2+3", "details": {"reason": "@SUM(A1:A9)", "attempt": 3}},
        {**base, "seq": 4, "purpose": "first line\nsecond line\r\n\tindented", "ip_prefix": None},
        {
            **base,
            "seq": 5,
            "event_type": "share.created",
            "actor": "staff:5b0e7c1a-8f3d-4e2b-9c6a-1d2e3f4a5b6c",
            "purpose": "Zweitmeinung Kardiologie, Überweisung «dringend» — naïve façade",
            "ip_prefix": "2001:db8:4::/64",
            "user_agent_family": None,
            "details": {"profile": "gp", "dob_required": True, "note": None},
        },
    ]


def test_jsonl_golden_file() -> None:
    expected = (GOLDEN / "events.jsonl").read_bytes().decode("utf-8")

    assert "".join(jsonl_lines(golden_events())) == expected


def test_csv_golden_file() -> None:
    with (GOLDEN / "events.csv").open(encoding="utf-8", newline="") as handle:
        expected = handle.read()

    assert "".join(csv_rows(golden_events())) == expected


def test_jsonl_lines_are_canonical() -> None:
    events = golden_events()
    lines = list(jsonl_lines(events))

    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        assert line.endswith("\n")
        assert line[:-1].encode() == canonical_event_bytes(event)
        assert json.loads(line) == event


def test_csv_one_line_per_event() -> None:
    rows = list(csv_rows(golden_events()))

    assert rows[0] == ",".join(EVENT_FIELDS) + "\r\n"
    assert len(rows) == 1 + len(golden_events())
    for row in rows:
        assert row.endswith("\r\n")
        assert "\n" not in row[:-2]
        assert "\r" not in row[:-2]


def test_csv_neutralises_formulas() -> None:
    parsed = list(csv.reader(io.StringIO("".join(csv_rows(golden_events())))))
    header = parsed[0]
    cells = [dict(zip(header, row, strict=True)) for row in parsed[1:]]

    assert cells[0]["purpose"] == '\'=HYPERLINK("http://attacker.invalid","open")'
    assert cells[1]["user_agent_family"] == "'+Mobile Safari"
    assert cells[2]["request_id"] == "'-2+3"
    assert cells[3]["purpose"] == "first line\\nsecond line\\r\\n\\tindented"
    assert cells[3]["ip_prefix"] == ""
    assert cells[4]["details"] == '{"dob_required":true,"note":null,"profile":"gp"}'
    for row in cells:
        for name, value in row.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (row["seq"], name)


def test_csv_neutralises_detail_cell(make_event: Any) -> None:
    # A details object always starts with "{", so formulas inside it cannot start its cell; the
    # cell is still checked like any other.
    rows = list(csv_rows([make_event(1, details={"reason": "=1+1"})]))

    assert '"{""reason"":""=1+1""}"' in rows[1]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\0x", "'\0x"),
        ("a=1", "a=1"),
        ("", ""),
        ("'quoted", "'quoted"),
    ],
)
def test_neutralise_formula(cell: str, expected: str) -> None:
    assert neutralise_formula(cell) == expected


def test_exports_stream_lazily(make_event: Any) -> None:
    consumed: list[int] = []

    def source() -> Iterator[dict[str, Any]]:
        for seq in range(1, 1_000_000):
            consumed.append(seq)
            yield make_event(seq)

    lines = jsonl_lines(source())
    next(lines)
    next(lines)
    assert consumed == [1, 2]

    rows = csv_rows(source())
    next(rows)
    next(rows)
    assert consumed == [1, 2, 1]


def test_exports_reject_invalid_event(make_event: Any) -> None:
    events = [make_event(1), make_event(2, patient_name="x")]

    with pytest.raises(EventInvalid, match="patient_name"):
        list(jsonl_lines(events))
    with pytest.raises(EventInvalid, match="patient_name"):
        list(csv_rows(events))
