"""Every detail key and fixed detail value that the code records has a name for the DPO's pages.

The keys and fixed values are read from the source: the dictionaries passed as an event's ``details``, the
reason codes that sign-in, redemption and the PDF checks return, and the erasure reasons. A new key or
code without a name fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from portal.audit.query import EventFilter
from portal.i18n import language_var
from portal.labels import DETAIL_LABELS, REASON_LABELS, ROLE_LABELS, VALUE_LABELS, detail_items
from portal.retention.erasure import ERASURE_REASONS, RETENTION_REASON
from portal.retention.purge import PurgeReport
from portal.staff.service import ROLES

PORTAL_DIR = Path(__file__).resolve().parents[2] / "portal"

# Functions whose string results are stored as the ``reason`` detail.
REASON_FUNCTIONS = {"throttle_reason", "_unavailable_reason", "_accept_totp", "_accept_recovery_code"}


def _trees() -> Iterator[ast.Module]:
    for path in sorted(PORTAL_DIR.rglob("*.py")):
        if "migrations" not in path.parts:
            yield ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _details_dicts() -> Iterator[ast.Dict]:
    """Yield the dict literals that become an event's details."""
    for tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "details" and isinstance(keyword.value, ast.Dict):
                        yield keyword.value
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                named = any(isinstance(target, ast.Name) and target.id == "details" for target in targets)
                if named and isinstance(node.value, ast.Dict):
                    yield node.value
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "details"
                        and isinstance(value, ast.Dict)
                    ):
                        yield value


def _recorded_pairs() -> list[tuple[str, object]]:
    """Return (key, constant value or None) for every key of every details literal in the source."""
    pairs = []
    for mapping in _details_dicts():
        for key, value in zip(mapping.keys, mapping.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                constant = value.value if isinstance(value, ast.Constant) else None
                pairs.append((key.value, constant))
    return pairs


def _is_code(value: object) -> bool:
    """Return whether ``value`` looks like a stored code: lowercase words joined by underscores."""
    return isinstance(value, str) and re.fullmatch(r"[a-z]+(_[a-z]+)*", value) is not None


def _returned_reasons() -> set[str]:
    reasons = set()
    for tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in REASON_FUNCTIONS:
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Constant) and _is_code(inner.value):
                        reasons.add(inner.value)
    return reasons


def _pdf_rejection_codes() -> set[str]:
    codes = set()
    for tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "PdfRejected" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
                    codes.add(first.value)
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    is_code = isinstance(key, ast.Constant) and key.value == "code"
                    if (
                        is_code
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                        and value.value
                    ):
                        codes.add(value.value)
    return codes


def test_source_scan_finds_details() -> None:
    keys = {key for key, _value in _recorded_pairs()}
    assert {"reason", "step", "invitation_id", "replaced", "stage", "bytes"} <= keys
    assert {"wrong_code", "replayed", "throttled_account", "awaiting_approval"} <= _returned_reasons()
    assert {"not_pdf", "timeout", "internal_error"} <= _pdf_rejection_codes()


def test_recorded_keys_named() -> None:
    keys = {key for key, _value in _recorded_pairs()}
    # Two events spread a mapping into their details: exports their filters, purges their counts.
    every_filter = EventFilter(
        share_id="x",
        share_reference="x",
        event_type="x",
        ip_prefix="x",
        since=dt.datetime.now(dt.UTC),
        until=dt.datetime.now(dt.UTC),
        patient_ref="x",
        recipient="x",
    )
    keys |= set(every_filter.as_dict()) | {field.name for field in dataclasses.fields(PurgeReport)}
    assert sorted(keys - set(DETAIL_LABELS)) == []


def test_recorded_constants_named() -> None:
    unnamed = [
        (key, value)
        for key, value in _recorded_pairs()
        if isinstance(value, str) and value not in VALUE_LABELS.get(key, {})
    ]
    assert unnamed == []


def test_reason_codes_named() -> None:
    reasons = _returned_reasons() | _pdf_rejection_codes() | set(ERASURE_REASONS) | {RETENTION_REASON}
    assert sorted(reasons - set(REASON_LABELS)) == []


def test_roles_named() -> None:
    assert set(ROLES) == set(ROLE_LABELS)


@pytest.mark.parametrize("language", ["de", "fr"])
def test_labels_translated(language: str) -> None:
    catalog_path = PORTAL_DIR / "locale" / language / "LC_MESSAGES" / "messages.po"
    with catalog_path.open("rb") as file:
        catalog = read_po(file)
    names = set(DETAIL_LABELS.values())
    names |= {name for labels in VALUE_LABELS.values() for name in labels.values()} - {"CSV", "JSON Lines"}
    untranslated = sorted(
        name for name in names if not (message := catalog.get(name)) or not message.string or message.fuzzy
    )
    assert untranslated == []


def test_detail_items_name_values() -> None:
    details = (
        '{"invitation_id":"0b6f0d5e-0000-4000-8000-000000000000","profile":"referrer","replaced":1,'
        '"role":"clinician","second_factor":"none","stage":"activated","step":"password"}'
    )
    token = language_var.set("de")
    try:
        items = detail_items(details, lambda name: {"referrer": "Überweisende Hausarztpraxis"}[name])
    finally:
        language_var.reset(token)
    assert items == [
        ("Einladung", "0b6f0d5e-0000-4000-8000-000000000000"),
        ("Empfängertyp", "Überweisende Hausarztpraxis"),
        ("beendete frühere Einladungen", "1"),
        ("Rolle", "Klinisches Personal"),
        ("zweiter Faktor", "nicht eingerichtet"),
        ("Stufe", "Einladung angenommen"),
        ("Schritt", "Passwort"),
    ]
