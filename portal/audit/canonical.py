"""Canonical bytes of an access-log event, the input of its Merkle leaf hash.

An event is a mapping with exactly the keys of `EVENT_FIELDS`. `canonical_event_bytes` validates it and
serialises it as JSON with sorted keys, no insignificant whitespace and UTF-8 text. Within the value
ranges accepted here (ASCII keys, integers of at most 2**53 - 1, no floats) the output is also the
RFC 8785 JSON Canonicalization Scheme form, so other languages can reproduce the leaf hashes.

Validation is strict for the fields the server generates (sequence number, time, identifiers). Free
text that a client may influence (purpose, user-agent family, request id, detail values) is checked
only for type and length, so a hostile header cannot make the log write fail. JSON escapes control
characters in free text, and `escape_control` makes them visible for screens and CSV.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from portal.audit.merkle import leaf_hash

EVENT_FIELDS: tuple[str, ...] = (
    "seq",
    "time",
    "event_type",
    "outcome",
    "actor",
    "share_id",
    "document_id",
    "patient_pseudonym",
    "purpose",
    "ip_prefix",
    "user_agent_family",
    "request_id",
    "details",
)
OUTCOMES = frozenset({"success", "failure"})
_FIELD_SET = frozenset(EVENT_FIELDS)

# The largest integer exact in IEEE 754 double precision, which many JSON parsers use for all numbers.
MAX_JSON_INTEGER = 2**53 - 1

# Lengths match the columns of the access_event table.
_MAX_LENGTHS = {
    "event_type": 64,
    "actor": 80,
    "patient_pseudonym": 64,
    "purpose": 200,
    "ip_prefix": 64,
    "user_agent_family": 32,
    "request_id": 64,
}
# NOTE: guessed limits that keep events small. Raise them if a detail needs more.
MAX_DETAIL_ENTRIES = 32
MAX_DETAIL_TEXT = 256

_TIME_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_EVENT_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_ACTOR_PATTERN = re.compile(r"system|[a-z][a-z_]{0,31}:[A-Za-z0-9._-]{1,64}")
# Pseudonyms are lowercase base32 HMAC output. The alphabet has no 0, 1, 8, 9, hyphen or capital
# letter, so most clinic references in clear (e.g. "PAT-0018") are rejected.
_PSEUDONYM_PATTERN = re.compile(r"[a-z2-7]{16,64}")
_UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DETAIL_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# Unicode categories shown as escapes: controls, format characters (bidirectional overrides,
# zero-width characters), surrogates, and the line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class EventInvalid(ValueError):
    """An access-log event does not match the event schema.

    The message names the field and the rule. It repeats the value only for fields that cannot carry
    identifying data (sequence number, time, event type, outcome).
    """


def canonical_event_bytes(event: Mapping[str, Any]) -> bytes:
    """Validate an event and serialise it as canonical JSON in UTF-8.

    Raises:
        EventInvalid: a key is missing or unknown, or a value breaks the event schema.
    """
    validate_event(event)
    plain = event if isinstance(event, dict) else {name: event[name] for name in EVENT_FIELDS}
    return _encode_utf8(_ENCODER.encode(plain), "event")


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    """Return the Merkle leaf hash of an event: SHA-256(0x00 || canonical bytes)."""
    return leaf_hash(canonical_event_bytes(event))


def details_json(details: Mapping[str, Any]) -> str:
    """Return the canonical JSON text of a details mapping, for storage in a text column.

    Raises:
        EventInvalid: a key or value breaks the details rules.
    """
    _check_details(details)
    text = _ENCODER.encode(dict(details))
    _encode_utf8(text, "details")
    return text


def canonical_json(value: Any) -> str:
    """Serialise an already validated value (an event or its details) as canonical JSON text."""
    return _ENCODER.encode(value)


def format_time(moment: dt.datetime) -> str:
    """Format an aware datetime as the event time: UTC, RFC 3339, microseconds and "Z".

    Raises:
        EventInvalid: the datetime is naive, so its offset from UTC is unknown.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventInvalid("time: naive datetime; pass an aware datetime, e.g. datetime.now(UTC)")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """Parse an event time written by `format_time` into an aware UTC datetime.

    Raises:
        EventInvalid: the text is not UTC RFC 3339 with six fractional digits and "Z".
    """
    if not isinstance(text, str) or not _TIME_PATTERN.fullmatch(text):
        raise EventInvalid(
            f"time: {text!r} is not UTC RFC 3339 with microseconds, e.g. 2025-01-31T08:15:00.000000Z"
        )
    # fromisoformat (Python 3.11+) reads the "Z" suffix and rejects impossible dates and times.
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise EventInvalid(f"time: {text!r} is not a valid calendar date and time ({error})") from None


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise EventInvalid unless the event has exactly the schema fields with valid values."""
    if not isinstance(event, Mapping):
        raise EventInvalid(f"event: expected a mapping, got {type(event).__name__}")

    if event.keys() != _FIELD_SET:
        unknown = sorted(str(key) for key in event if key not in _FIELD_SET)
        if unknown:
            raise EventInvalid(f"event: unknown keys {unknown}; an event has only {list(EVENT_FIELDS)}")
        missing = [name for name in EVENT_FIELDS if name not in event]
        raise EventInvalid(f"event: missing keys {missing}; pass None for an empty optional field")

    _check_seq(event["seq"])
    parse_time(event["time"])
    _check_pattern(event, "event_type", _EVENT_TYPE_PATTERN, optional=False, show_value=True)
    if event["outcome"] not in OUTCOMES:
        raise EventInvalid(f"outcome: {event['outcome']!r} is not one of {sorted(OUTCOMES)}")
    _check_pattern(event, "actor", _ACTOR_PATTERN, optional=False, show_value=False)
    _check_uuid(event, "share_id")
    _check_uuid(event, "document_id")
    _check_pattern(event, "patient_pseudonym", _PSEUDONYM_PATTERN, optional=True, show_value=False)
    _check_text(event, "purpose")
    _check_ip_prefix(event["ip_prefix"])
    _check_text(event, "user_agent_family")
    _check_text(event, "request_id")
    _check_details(event["details"])


def escape_control(text: str) -> str:
    """Make invisible and line-breaking characters visible, for screens and CSV cells.

    Newline, carriage return and tab become \\n, \\r and \\t. Other characters in the Unicode
    categories Cc, Cf, Cs, Zl and Zp (controls, bidirectional overrides, zero-width characters,
    surrogates, line separators) become \\uXXXX, or \\UXXXXXXXX above U+FFFF. A backslash becomes
    two backslashes, so the escaped text maps back to exactly one original.
    """
    pattern = _escape_pattern()
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape_match, text)


def _encode_utf8(text: str, name: str) -> bytes:
    # A lone surrogate cannot be written as UTF-8, and JSON parsers disagree about it.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    raise EventInvalid(
        f"{_surrogate_field(name, text)}: contains a lone surrogate, which has no UTF-8 encoding"
    )


def _surrogate_field(name: str, text: str) -> str:
    # Runs only on the error path, to name the field that contains the surrogate.
    document = json.loads(text)
    prefix = "" if name == "event" else f"{name}."
    for key, value in document.items():
        inner = value.items() if isinstance(value, dict) else [("", value)]
        for detail_key, item in inner:
            if isinstance(item, str) and _has_surrogate(item):
                return prefix + (f"{key}.{detail_key}" if detail_key else key)
    return name


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(character) <= 0xDFFF for character in text)


def _check_seq(value: Any) -> None:
    # bool is a subclass of int, and True would serialise as "true", not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventInvalid(f"seq: expected an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_JSON_INTEGER:
        raise EventInvalid(f"seq: {value} is outside 1..{MAX_JSON_INTEGER}")


def _check_pattern(
    event: Mapping[str, Any], name: str, pattern: re.Pattern[str], *, optional: bool, show_value: bool
) -> None:
    value = event[name]
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise EventInvalid(f"{name}: expected a string, got {type(value).__name__}")

    limit = _MAX_LENGTHS[name]
    value_text = f"{value!r} " if show_value else ""
    if len(value) > limit or not pattern.fullmatch(value):
        raise EventInvalid(
            f"{name}: value {value_text}does not match {pattern.pattern!r} within {limit} characters"
        )


def _check_uuid(event: Mapping[str, Any], name: str) -> None:
    value = event[name]
    if value is None:
        return
    if not isinstance(value, str):
        raise EventInvalid(f"{name}: expected a UUID string or None, got {type(value).__name__}")

    # Only the lowercase hyphenated form that str(uuid.UUID(...)) writes, so one id always gives the
    # same bytes.
    if not _UUID_PATTERN.fullmatch(value):
        raise EventInvalid(f"{name}: {value!r} is not a lowercase hyphenated UUID; pass str(uuid)")


def _check_text(event: Mapping[str, Any], name: str) -> None:
    value = event[name]
    if value is None:
        return
    if not isinstance(value, str):
        raise EventInvalid(f"{name}: expected a string or None, got {type(value).__name__}")

    limit = _MAX_LENGTHS[name]
    if len(value) > limit:
        raise EventInvalid(f"{name}: {len(value)} characters, at most {limit}; shorten it before logging")


def _check_ip_prefix(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise EventInvalid(f"ip_prefix: expected a string or None, got {type(value).__name__}")

    if not _is_canonical_network(value):
        raise EventInvalid(
            f"ip_prefix: {value!r} is not a network in canonical form with host bits clear, "
            "e.g. 203.0.113.0/24"
        )


@functools.lru_cache(maxsize=4096)
def _is_canonical_network(value: str) -> bool:
    # A network in its compressed form with host bits clear, e.g. 203.0.113.0/24 or 2001:db8::/64.
    # Cached because a log contains few distinct prefixes and parsing one costs several microseconds.
    try:
        return str(ipaddress.ip_network(value, strict=True)) == value
    except ValueError:
        return False


def _check_details(details: Any) -> None:
    if not isinstance(details, Mapping):
        raise EventInvalid(f"details: expected a mapping, got {type(details).__name__}; use {{}} for none")
    if len(details) > MAX_DETAIL_ENTRIES:
        raise EventInvalid(f"details: {len(details)} entries, at most {MAX_DETAIL_ENTRIES}")

    for key, value in details.items():
        if not isinstance(key, str) or not _DETAIL_KEY_PATTERN.fullmatch(key):
            raise EventInvalid(f"details: key {key!r} does not match {_DETAIL_KEY_PATTERN.pattern!r}")
        _check_detail_value(key, value)


def _check_detail_value(key: str, value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_JSON_INTEGER <= value <= MAX_JSON_INTEGER:
            raise EventInvalid(f"details.{key}: integer outside ±{MAX_JSON_INTEGER}")
        return
    if isinstance(value, str):
        if len(value) > MAX_DETAIL_TEXT:
            raise EventInvalid(f"details.{key}: {len(value)} characters, at most {MAX_DETAIL_TEXT}")
        return
    raise EventInvalid(f"details.{key}: expected str, int, bool or None, got {type(value).__name__}")


@functools.cache
def _escape_pattern() -> re.Pattern[str]:
    # Built on first use from the running Python's Unicode database (about 0.2 s), so the set
    # follows Unicode updates instead of a hand-kept list.
    ranges: list[str] = [re.escape("\\")]
    start = previous = -2
    for code_point in range(0x110000):
        if unicodedata.category(chr(code_point)) not in _ESCAPED_CATEGORIES:
            continue
        if code_point != previous + 1:
            if start >= 0:
                ranges.append(_char_range(start, previous))
            start = code_point
        previous = code_point
    ranges.append(_char_range(start, previous))
    return re.compile("[" + "".join(ranges) + "]")


def _char_range(first: int, last: int) -> str:
    if first == last:
        return f"\\U{first:08x}"
    return f"\\U{first:08x}-\\U{last:08x}"


def _escape_match(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED_ESCAPES.get(character)
    if named is not None:
        return named
    code_point = ord(character)
    if code_point <= 0xFFFF:
        return f"\\u{code_point:04x}"
    return f"\\U{code_point:08x}"
