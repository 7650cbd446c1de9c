"""Keyed pseudonyms of patient references."""

from __future__ import annotations

import re

import pytest

from portal.crypto.pseudonym import pseudonymise

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_pseudonym_stable_per_key() -> None:
    assert pseudonymise(KEY, "P-10442") == pseudonymise(KEY, "P-10442")


def test_pseudonym_differs_between_keys() -> None:
    assert pseudonymise(KEY, "P-10442") != pseudonymise(OTHER_KEY, "P-10442")


def test_pseudonym_differs_between_references() -> None:
    assert pseudonymise(KEY, "P-10442") != pseudonymise(KEY, "P-10443")
    assert pseudonymise(KEY, "ab12") != pseudonymise(KEY, "AB12")


def test_pseudonym_format() -> None:
    value = pseudonymise(KEY, "P-10442")

    assert re.fullmatch(r"[a-z2-7]{26}", value)
    assert "10442" not in value


def test_pseudonym_normalises_reference() -> None:
    composed = "Zo\u00eb-7"
    decomposed = "Zoe\u0308-7"

    assert pseudonymise(KEY, composed) == pseudonymise(KEY, decomposed)
    assert pseudonymise(KEY, " P-10442\n") == pseudonymise(KEY, "P-10442")


@pytest.mark.parametrize(("key", "reference"), [(KEY[:16], "P-1"), (KEY, ""), (KEY, "  ")])
def test_pseudonym_invalid_input(key: bytes, reference: str) -> None:
    with pytest.raises(ValueError):
        pseudonymise(key, reference)
