"""Canonical event bytes: stable output, strict schema, escaped control characters."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from portal.audit.canonical import (
    EVENT_FIELDS,
    EventInvalid,
    canonical_event_bytes,
    details_json,
    escape_control,
    event_leaf_hash,
    format_time,
    parse_time,
)

EventFactory = Callable[..., dict[str, Any]]

GOLDEN_EVENT: dict[str, Any] = {
    "seq": 42,
    "time": "2025-01-31T08:15:00.123456Z",
    "event_type": "share.created",
    "outcome": "success",
    "actor": "staff:5b0e7c1a-8f3d-4e2b-9c6a-1d2e3f4a5b6c",
    "share_id": "0c9d8e7f-6a5b-4c3d-8e1f-2a3b4c5d6e7f",
    "document_id": None,
    "patient_pseudonym": "k7x2mqplw3zb4rtyvnc5hjaedg",
    "purpose": "Zweitmeinung\tÜberweisung\n",
    "ip_prefix": "2001:db8:4::/64",
    "user_agent_family": None,
    "request_id": "req-0042",
    "details": {"profile": "gp", "pages": 12, "dob_required": True, "note": None},
}
# Written by hand from the rules (sorted keys, no spaces, raw UTF-8, JSON escapes for controls), not
# produced by the code under test.
GOLDEN_BYTES = (
    '{"actor":"staff:5b0e7c1a-8f3d-4e2b-9c6a-1d2e3f4a5b6c",'
    '"details":{"dob_required":true,"note":null,"pages":12,"profile":"gp"},'
    '"document_id":null,"event_type":"share.created","ip_prefix":"2001:db8:4::/64",'
    '"outcome":"success","patient_pseudonym":"k7x2mqplw3zb4rtyvnc5hjaedg",'
    '"purpose":"Zweitmeinung\\t\u00dcberweisung\\n","request_id":"req-0042","seq":42,'
    '"share_id":"0c9d8e7f-6a5b-4c3d-8e1f-2a3b4c5d6e7f","time":"2025-01-31T08:15:00.123456Z",'
    '"user_agent_family":null}'
).encode()


def test_canonical_golden_bytes() -> None:
    assert canonical_event_bytes(GOLDEN_EVENT) == GOLDEN_BYTES


def test_canonical_ignores_key_order() -> None:
    reordered = dict(reversed(list(GOLDEN_EVENT.items())))
    reordered["details"] = dict(reversed(list(GOLDEN_EVENT["details"].items())))

    assert canonical_event_bytes(reordered) == GOLDEN_BYTES
    assert canonical_event_bytes(MappingProxyType(GOLDEN_EVENT)) == GOLDEN_BYTES


def test_leaf_hash_of_golden_event() -> None:
    assert event_leaf_hash(GOLDEN_EVENT) == hashlib.sha256(b"\x00" + GOLDEN_BYTES).digest()


def test_canonical_parses_back() -> None:
    assert json.loads(canonical_event_bytes(GOLDEN_EVENT)) == GOLDEN_EVENT


def test_canonical_escapes_controls(make_event: EventFactory) -> None:
    event = make_event(1, purpose="a\x00b\x1fc\rd\u2028e", request_id="line\nbreak")
    text = canonical_event_bytes(event).decode()

    assert '"purpose":"a\\u0000b\\u001fc\\rd\u2028e"' in text
    assert '"request_id":"line\\nbreak"' in text
    assert not any(ord(character) < 0x20 for character in text)


def test_canonical_rejects_unknown_key(make_event: EventFactory) -> None:
    event = make_event(1, patient_name="anything")

    with pytest.raises(EventInvalid, match=r"unknown keys \['patient_name'\]"):
        canonical_event_bytes(event)


def test_canonical_rejects_missing_key(make_event: EventFactory) -> None:
    event = make_event(1)
    del event["purpose"]

    with pytest.raises(EventInvalid, match=r"missing keys \['purpose'\]"):
        canonical_event_bytes(event)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 0),
        ("seq", True),
        ("seq", "1"),
        ("seq", 2**53),
        ("time", "2025-01-31T08:15:00Z"),
        ("time", "2025-01-31T08:15:00.123456+00:00"),
        ("time", "2025-01-31 08:15:00.123456Z"),
        ("time", "2025-02-30T08:15:00.123456Z"),
        ("time", "2025-01-31T24:00:00.000000Z"),
        ("time", "\uff12025-01-31T08:15:00.123456Z"),  # a fullwidth digit
        ("event_type", "Share.Created"),
        ("event_type", "share created"),
        ("event_type", ""),
        ("outcome", "ok"),
        ("actor", "Dr Jane Doe"),
        ("actor", ""),
        ("share_id", "0C9D8E7F-6A5B-4C3D-8E1F-2A3B4C5D6E7F"),
        ("share_id", "0c9d8e7f6a5b4c3d8e1f2a3b4c5d6e7f"),
        ("document_id", 17),
        ("patient_pseudonym", "PAT-000123-SMITH"),
        ("patient_pseudonym", "k7x2"),
        ("purpose", "x" * 201),
        ("purpose", 5),
        ("ip_prefix", "203.0.113.7/24"),
        ("ip_prefix", "203.0.113.7"),
        ("ip_prefix", "2001:0db8::/64"),
        ("user_agent_family", "x" * 33),
        ("request_id", "bad\ud800"),
        ("details", None),
        ("details", {"Bad-Key": 1}),
        ("details", {"ratio": 0.5}),
        ("details", {"nested": {"a": 1}}),
        ("details", {"big": 2**53}),
        ("details", {"text": "x" * 257}),
        ("details", {f"k{i}": i for i in range(33)}),
    ],
)
def test_canonical_rejects_invalid_value(make_event: EventFactory, field: str, value: Any) -> None:
    event = make_event(1)
    event[field] = value

    with pytest.raises(EventInvalid, match=field):
        canonical_event_bytes(event)


def test_invalid_pseudonym_message_hides_value(make_event: EventFactory) -> None:
    event = make_event(1, patient_pseudonym="PAT-000123-SMITH")

    with pytest.raises(EventInvalid) as raised:
        canonical_event_bytes(event)
    assert "SMITH" not in str(raised.value)


def test_canonical_accepts_empty_optionals(make_event: EventFactory) -> None:
    optional = ["share_id", "document_id", "patient_pseudonym", "purpose", "ip_prefix"]
    optional += ["user_agent_family", "request_id"]
    event = make_event(1, actor="system", details={}, **dict.fromkeys(optional))

    assert json.loads(canonical_event_bytes(event)) == event
    assert set(event) == set(EVENT_FIELDS)


def test_details_json_is_canonical() -> None:
    assert details_json({"b": 1, "a": "x\ny"}) == '{"a":"x\\ny","b":1}'


def test_format_time_converts_to_utc() -> None:
    moment = dt.datetime(2025, 1, 31, 9, 15, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))

    assert format_time(moment) == "2025-01-31T08:15:00.000005Z"
    assert parse_time("2025-01-31T08:15:00.000005Z") == moment


def test_format_time_rejects_naive() -> None:
    with pytest.raises(EventInvalid, match="naive"):
        format_time(dt.datetime(2025, 1, 31, 8, 15))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, Zoë Ørsted", "plain text, Zoë Ørsted"),
        ("two\nlines\r\n", "two\\nlines\\r\\n"),
        ("tab\there", "tab\\there"),
        ("nul\x00bell\x07del\x7f", "nul\\u0000bell\\u0007del\\u007f"),
        ("c1\x85\x9b", "c1\\u0085\\u009b"),
        ("bidi \u202eevil\u202c", "bidi \\u202eevil\\u202c"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("back\\slash\\n", "back\\\\slash\\\\n"),
        ("", ""),
    ],
)
def test_escape_control(text: str, expected: str) -> None:
    assert escape_control(text) == expected
