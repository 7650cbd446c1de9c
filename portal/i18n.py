"""The translation layer: gettext catalogues chosen per request.

Templates use ``{% trans %}`` and ``_()`` through Jinja2's i18n extension; Python code uses ``_`` from
here. Both read the request's language from a context variable, so one Jinja2 environment serves all
languages. Catalogues live in portal/locale/<lang>/LC_MESSAGES/messages.mo (compiled with Babel); a
language without a catalogue falls back to the English source strings.
"""

from __future__ import annotations

import contextvars
import gettext as gettext_module
from functools import cache
from pathlib import Path

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en",)

language_var: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=DEFAULT_LANGUAGE)


@cache
def _translations(language: str) -> gettext_module.NullTranslations:
    return gettext_module.translation("messages", localedir=LOCALE_DIR, languages=[language], fallback=True)


def gettext(message: str) -> str:
    return _translations(language_var.get()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translations(language_var.get()).ngettext(singular, plural, count)


_ = gettext


def negotiate_language(accept_language: str | None) -> str:
    """Pick the best supported language from an Accept-Language header."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    weighted: list[tuple[float, str]] = []
    for part in accept_language.split(",")[:20]:
        tag, _separator, parameters = part.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                quality = 0.0
        weighted.append((quality, tag.strip().lower().split("-")[0]))
    for _quality, language in sorted(weighted, reverse=True):
        if language in SUPPORTED_LANGUAGES:
            return language
    return DEFAULT_LANGUAGE
