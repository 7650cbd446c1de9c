"""Staff password rules after NIST SP 800-63B section 5.1.1.2: length and a blocklist, no composition rules.

A password must have 12 to 256 characters (Unicode code points) and must not contain the local part of the
account's own e-mail address. It is refused as guessable when, compared case-insensitively, it

- is in the bundled list of 10,000 common passwords, or is one with digits or symbols added at either end
  ("Password123!", "iloveyou1234"): few entries of the list have 12 characters, so the list alone hardly
  applies at this length;
- repeats one character or a pattern ("aaaaaaaaaaaa", "abcabcabcabc");
- is made of runs along a keyboard row or column, the alphabet or the digits ("qwertyuiop12", "123456789012",
  "1qaz2wsx3edc"), forwards or backwards, on QWERTY, QWERTZ and AZERTY keyboards.

No rule requires digits, symbols or mixed case, and passwords do not expire.

What this module does not do: it does not ask an online breach corpus, and it does not normalise Unicode,
so a password typed with a different composition of the same accented letter does not match its hash.
"""

from __future__ import annotations

import functools
from pathlib import Path

from portal.errors import InvalidInput
from portal.i18n import _

MIN_LENGTH = 12
MAX_LENGTH = 256
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"

# Local parts shorter than this ("jo", "ab1") would reject too many good passwords by accident.
_MIN_CONTEXT_WORD = 4

# Keys and characters in the order people run a finger or count along them. Each is read forwards and
# backwards and may wrap round ("890123"). A run needs at least _MIN_RUN characters, so a passphrase of
# ordinary words ("def", "rty" inside a word) does not split into runs: a space or any other letter breaks it.
_SEQUENCES = (
    "1234567890",
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    # QWERTY, QWERTZ and AZERTY letter rows, and the German digit row.
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertzuiopü",
    "asdfghjklöä",
    "yxcvbnm",
    "azertyuiop",
    "qsdfghjklm",
    "wxcvbn",
    "1234567890ß",
    # Columns of a QWERTY keyboard, top to bottom.
    "1qaz",
    "2wsx",
    "3edc",
    "4rfv",
    "5tgb",
    "6yhn",
    "7ujm",
    "8ik,",
    "9ol.",
    "0p;/",
)
_RUN_TEXTS = tuple(text for sequence in _SEQUENCES for text in (sequence * 2, sequence[::-1] * 2))
_MIN_RUN = 3


@functools.cache
def common_passwords() -> frozenset[str]:
    """Return the bundled common passwords, lowercase; the file is read once per process."""
    with COMMON_PASSWORDS_FILE.open(encoding="utf-8") as handle:
        return frozenset(line.strip().lower() for line in handle if line.strip())


def check_password(password: str, email: str | None = None) -> None:
    """Raise InvalidInput (field ``password``) naming the rule that ``password`` breaks."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            _(
                "The password is too short. Use at least {count} characters; a few unrelated words work well."
            ).format(count=MIN_LENGTH),
            field="password",
        )

    if len(password) > MAX_LENGTH:
        raise InvalidInput(
            _("The password is too long. Use at most {count} characters.").format(count=MAX_LENGTH),
            field="password",
        )

    lowered = password.lower()
    core = _core(lowered)
    if lowered in common_passwords():
        raise InvalidInput(
            _(
                "This password is on the list of commonly used passwords, which attackers try first. "
                "Choose another."
            ),
            field="password",
        )
    if core in common_passwords():
        raise InvalidInput(
            _(
                "This password is one of the commonly used passwords with digits or symbols added at the start "
                "or end, which attackers try first. Choose another; a few unrelated words work well."
            ),
            field="password",
        )
    if _repeats(lowered) or (len(core) >= _MIN_RUN and _repeats(core)):
        raise InvalidInput(
            _(
                "This password repeats one character or a pattern, which attackers try first. "
                "Choose another; a few unrelated words work well."
            ),
            field="password",
        )
    if _made_of_runs(lowered) or _made_of_runs(core):
        raise InvalidInput(
            _(
                "This password is a run of neighbouring keys or consecutive letters or digits, such as qwerty or "
                "123456, which attackers try first. Choose another; a few unrelated words work well."
            ),
            field="password",
        )

    # The local part "anna.berg" is also found as "annaberg" or "anna_berg": dots, dashes and underscores
    # do not count on either side. Spaces do, so "spin for mango" does not hide "info".
    local_part = (email or "").split("@", 1)[0].lower()
    lowered = password.lower()
    if (len(local_part) >= _MIN_CONTEXT_WORD and local_part in lowered) or (
        len(_joined(local_part)) >= _MIN_CONTEXT_WORD and _joined(local_part) in _joined(lowered)
    ):
        raise InvalidInput(
            _(
                "The password contains the part of your e-mail address before the @, which attackers try "
                "first. Choose another."
            ),
            field="password",
        )


def _joined(text: str) -> str:
    return text.replace(".", "").replace("-", "").replace("_", "")


def _core(lowered: str) -> str:
    """Return ``lowered`` without the digits, symbols and spaces at its start and end ("password" for "password123!")."""
    start, end = 0, len(lowered)
    while start < end and not lowered[start].isalpha():
        start += 1
    while end > start and not lowered[end - 1].isalpha():
        end -= 1
    return lowered[start:end]


def _repeats(text: str) -> bool:
    """Return whether ``text`` is one unit of at most half its length repeated, the last copy maybe cut short.

    A passphrase typed twice counts too: it is as easy to guess as the passphrase once.
    """
    for size in range(1, len(text) // 2 + 1):
        unit = text[:size]
        if (unit * (len(text) // size + 1)).startswith(text):
            return True
    return False


def _is_run(text: str) -> bool:
    return any(text in run for run in _RUN_TEXTS)


def _made_of_runs(text: str) -> bool:
    """Return whether ``text`` splits into runs of at least _MIN_RUN characters along one of the sequences.

    Every prefix of a run is a run, so each reachable position extends its run until it breaks; that takes
    linear work per position instead of trying every split.
    """
    if not text:
        return False
    reachable = [False] * (len(text) + 1)
    reachable[0] = True
    for start in range(len(text)):
        if not reachable[start]:
            continue
        end = start + 2
        while end <= len(text) and _is_run(text[start:end]):
            if end - start >= _MIN_RUN:
                reachable[end] = True
            end += 1
    return reachable[len(text)]
