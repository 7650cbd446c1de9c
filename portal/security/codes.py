"""Access codes: generation, normalisation and the typo check.

A code is 20 Crockford Base32 characters printed in five groups of four, for example
``K7M2-9QDX-4HTV-B8NR-W3EA``:

- characters 1-5: the locator, public, finds the share so failures count per share;
- characters 6-19: the secret, 14 characters = 70 bits from :mod:`secrets`;
- character 20: a Luhn mod 32 check character over the first 19, which catches every single mistyped
  character and most swaps of neighbours before an attempt is spent.

Crockford's alphabet has no I, L, O or U; on entry I and L read as 1 and O as 0, case and separators
are ignored.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LOCATOR_LENGTH = 5
SECRET_LENGTH = 14
CODE_LENGTH = LOCATOR_LENGTH + SECRET_LENGTH + 1
SECRET_BITS = SECRET_LENGTH * 5

_VALUE = {character: index for index, character in enumerate(ALPHABET)}
_ENTRY_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
_SEPARATORS = str.maketrans("", "", " -\u2010\u2011\u2012\u2013\u2014\t\r\n.")


class CodeFormatError(ValueError):
    """The entered text cannot be an access code (wrong length, characters or check character)."""


def check_character(body: str) -> str:
    # Luhn mod N with N = 32: double every second value from the right, fold, sum.
    total = 0
    factor = 2
    for character in reversed(body):
        addend = factor * _VALUE[character]
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def generate_code() -> str:
    """Return a new code in canonical form (20 characters, no separators)."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(LOCATOR_LENGTH + SECRET_LENGTH))
    return body + check_character(body)


def generate_locator() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LOCATOR_LENGTH))


def with_locator(locator: str) -> str:
    """Return a new canonical code that starts with ``locator`` (used when a code is reissued)."""
    body = locator + "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    return body + check_character(body)


def normalise(entered: str) -> str:
    """Turn what a person typed into the canonical code, or raise :class:`CodeFormatError`."""
    text = entered.upper().translate(_SEPARATORS).translate(_ENTRY_ALIASES)
    if len(text) != CODE_LENGTH or any(character not in _VALUE for character in text):
        raise CodeFormatError("wrong length or characters")
    if check_character(text[:-1]) != text[-1]:
        raise CodeFormatError("check character does not match")
    return text


def locator_of(code: str) -> str:
    return code[:LOCATOR_LENGTH]


def display(code: str) -> str:
    """Return the printed form: capitals in groups of four joined by dashes (also the PDF password)."""
    return "-".join(code[index : index + 4] for index in range(0, len(code), 4))
