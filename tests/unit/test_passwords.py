"""Staff password rules: length, the common list also with digits or symbols added, repeats and key runs."""

from __future__ import annotations

import pytest

from portal.errors import InvalidInput
from portal.security.passwords import check_password
from tests.conftest import PASSWORD

COMMON = "commonly used passwords with digits or symbols added"
REPEATS = "repeats one character or a pattern"
RUN = "run of neighbouring keys or consecutive letters or digits"


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("password1234", COMMON),
        ("password12345", COMMON),
        ("Password123!", COMMON),
        ("iloveyou1234", COMMON),
        ("qwertyuiop12", COMMON),
        ("!!!!dragon!!!!", COMMON),
        ("2024 Sunshine!", COMMON),
        ("aaaaaaaaaaaa", REPEATS),
        ("abcabcabcabc", REPEATS),
        ("xyxyxyxyxyxy", REPEATS),
        ("1999aaaaaaaaaa", REPEATS),
        ("123456789012", RUN),
        ("987654321098", RUN),
        ("abcdefghijkl", RUN),
        ("qwertzuiop12", RUN),
        ("qwertyasdfgh", RUN),
        ("lkjhgfdsa;98", RUN),
        ("2wsx3edc4rfv", RUN),
        ("yxcvbnm,.-12", RUN),
        ("azertyuiopqsdf", RUN),
        ("0p;/9ol.8ik,", RUN),
    ],
)
def test_guessable_passwords_refused(password: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_password(password)
    assert rule in refused.value.message
    assert "Choose another" in refused.value.message
    assert refused.value.field == "password"


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,
        "lantern orchard violin meadow",
        "lantern orchard violin meadow 7",
        "yet another fine passphrase",
        "another fine passphrase",
        "something else entirely",
        "a long enough passphrase",
        "load test passphrase, long enough",
        "a long passphrase of your own",
        "Tr0ub4dor&3xyz",
        "violin-meadow-2024",
        # Digits and symbols alone are no run when they are not in order.
        "8271 9384 5502",
        "92817465019283",
    ],
)
def test_good_passwords_accepted(password: str) -> None:
    check_password(password, "clinician@riverside.test")


def test_exact_common_password_keeps_its_message() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_password("qwerty123456")
    assert "on the list of commonly used passwords" in refused.value.message


@pytest.mark.parametrize("password", ["annaberg-lantern-77", "anna.berg lantern 77", "ANNA_BERG orchard 1"])
def test_local_part_without_dots_refused(password: str) -> None:
    with pytest.raises(InvalidInput, match="part of your e-mail address before the @"):
        check_password(password, "anna.berg@clinic.example")


def test_local_part_words_apart_accepted() -> None:
    check_password("anna went to berg lantern", "anna.berg@clinic.example")
    check_password("spin for mango orchard", "info@clinic.example")
