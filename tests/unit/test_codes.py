"""Access code format: randomness, normalisation and the typo check."""

from __future__ import annotations

from collections import Counter

import pytest

from portal.security import codes


def test_codes_unique_and_uniform() -> None:
    generated = [codes.generate_code() for _ in range(100_000)]
    assert len(set(generated)) == len(generated)
    assert codes.SECRET_BITS >= 60

    # Each secret position should see each of the 32 symbols about 100000/32 = 3125 times.
    for position in range(codes.LOCATOR_LENGTH, codes.LOCATOR_LENGTH + codes.SECRET_LENGTH):
        counts = Counter(code[position] for code in generated)
        assert len(counts) == 32
        assert min(counts.values()) > 2800, position
        assert max(counts.values()) < 3450, position


def test_alphabet_excludes_ambiguous_letters() -> None:
    for letter in "ILOU":
        assert letter not in codes.ALPHABET


def test_display_groups_of_four() -> None:
    code = codes.generate_code()
    printed = codes.display(code)
    assert len(printed.split("-")) == 5
    assert all(len(group) == 4 for group in printed.split("-"))
    assert printed == printed.upper()


@pytest.mark.parametrize(
    "transform", [str.lower, lambda text: text.replace("-", " "), lambda text: text.replace("-", "")]
)
def test_normalise_accepts_variants(transform: object) -> None:
    code = codes.generate_code()
    assert codes.normalise(transform(codes.display(code))) == code  # type: ignore[operator]


def test_normalise_reads_ambiguous_letters() -> None:
    body = "1" * 5 + "0" * 14
    code = codes.with_locator("11111")
    typed = code.replace("1", "I").replace("0", "O")
    assert codes.normalise(typed) == code
    assert body


def test_check_character_catches_single_substitution() -> None:
    code = codes.generate_code()
    for position in range(codes.CODE_LENGTH):
        for symbol in codes.ALPHABET:
            if symbol == code[position]:
                continue
            mistyped = code[:position] + symbol + code[position + 1 :]
            with pytest.raises(codes.CodeFormatError):
                codes.normalise(mistyped)


def test_check_character_catches_most_swaps() -> None:
    caught = total = 0
    for _ in range(200):
        code = codes.generate_code()
        for position in range(codes.CODE_LENGTH - 1):
            if code[position] == code[position + 1]:
                continue
            swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
            total += 1
            try:
                codes.normalise(swapped)
            except codes.CodeFormatError:
                caught += 1
    assert caught / total > 0.9


@pytest.mark.parametrize(
    "entered", ["", "ABC", "K7M2-9QDX-4HTV-B8NR-W3E", "K7M2-9QDX-4HTV-B8NR-W3E!", "x" * 64]
)
def test_normalise_rejects_malformed(entered: str) -> None:
    with pytest.raises(codes.CodeFormatError):
        codes.normalise(entered)
