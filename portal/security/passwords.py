"""Staff password rules after NIST SP 800-63B section 5.1.1.2: length and a blocklist, no composition rules.

A password must have 12 to 256 characters (Unicode code points), must not appear in the bundled list of
10,000 common passwords (compared case-insensitively), and must not contain the local part of the account's
own e-mail address. No rule requires digits, symbols or mixed case, and passwords do not expire.

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

    if password.lower() in common_passwords():
        raise InvalidInput(
            _(
                "This password is on the list of commonly used passwords, which attackers try first. "
                "Choose another."
            ),
            field="password",
        )

    local_part = (email or "").split("@", 1)[0].lower()
    if len(local_part) >= _MIN_CONTEXT_WORD and local_part in password.lower():
        raise InvalidInput(
            _(
                "The password contains the part of your e-mail address before the @, which attackers try "
                "first. Choose another."
            ),
            field="password",
        )
