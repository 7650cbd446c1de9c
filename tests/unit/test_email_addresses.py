"""Staff e-mail addresses as administrators type or paste them."""

from __future__ import annotations

import pytest

from portal.errors import InvalidInput
from portal.staff.service import normalise_email


def test_address_trimmed_and_lowered() -> None:
    assert normalise_email("  A.Berg@Clinic.Example ") == "a.berg@clinic.example"


@pytest.mark.parametrize("pasted", ["Dr. A <a.b@clinic.example>", "<a.b@clinic.example>"])
def test_display_name_rejected(pasted: str) -> None:
    with pytest.raises(InvalidInput) as rejected:
        normalise_email(pasted)
    assert "Enter only the address" in rejected.value.message
    assert pasted in rejected.value.message
    assert rejected.value.field == "email"


def test_missing_at_rejected() -> None:
    with pytest.raises(InvalidInput) as rejected:
        normalise_email("a.b.clinic.example")
    assert "is not an e-mail address" in rejected.value.message
