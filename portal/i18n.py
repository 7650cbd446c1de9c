"""The translation layer: gettext catalogues chosen per request.

Templates use ``{% trans %}`` and ``_()`` through Jinja2's i18n extension; Python code uses ``_`` from
here. Both read the request's language from a context variable, so one Jinja2 environment serves all
languages. Catalogues live in portal/locale/<lang>/LC_MESSAGES/messages.mo (compiled with Babel and
committed, so running the portal needs no compile step); a language without a catalogue falls back to the
English source strings.

The request's language comes from, in this order: a ``lang`` query parameter on a GET (the language
switcher's links, which also store the choice in the ``portal-lang`` cookie), the ``portal-lang`` cookie,
the Accept-Language header, and English. ``LanguageMiddleware`` applies it around the whole application,
so error pages rendered by exception handlers and 404s for unknown paths are translated too.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import gettext as gettext_module
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from litestar.types import ASGIApp, Message, Receive, Scope, Send

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en", "de", "fr")

# Each language named in itself, because a reader looks for the name of the language they can read.
LANGUAGE_NAMES = {"en": "English", "de": "Deutsch", "fr": "Français"}

LANGUAGE_COOKIE = "portal-lang"
LANGUAGE_PARAMETER = "lang"
LANGUAGE_COOKIE_MAX_AGE_S = 365 * 24 * 3600

# A header longer than this is cut before parsing, so a hostile Accept-Language costs bounded work.
MAX_HEADER_CHARS = 1000
MAX_LANGUAGE_RANGES = 20

language_var: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=DEFAULT_LANGUAGE)


@cache
def _translations(language: str) -> gettext_module.NullTranslations:
    return gettext_module.translation("messages", localedir=LOCALE_DIR, languages=[language], fallback=True)


def gettext(message: str) -> str:
    return _translations(language_var.get()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translations(language_var.get()).ngettext(singular, plural, count)


def gettext_noop(message: str) -> str:
    """Mark a module-level message for extraction; translate it with ``_()`` when a request uses it."""
    return message


_ = gettext
N_ = gettext_noop


@contextlib.contextmanager
def using_language(language: str) -> Iterator[None]:
    """Translate into ``language`` inside the block, such as the text printed for a recipient."""
    token = language_var.set(supported(language) or DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        language_var.reset(token)


def negotiate_language(accept_language: str | None) -> str:
    """Pick the best supported language from an Accept-Language header (RFC 9110, section 12.5.4)."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    weighted: list[tuple[float, int, str]] = []
    ranges = accept_language[:MAX_HEADER_CHARS].split(",")[:MAX_LANGUAGE_RANGES]
    for position, part in enumerate(ranges):
        tag, _separator, parameters = part.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                quality = 0.0
        # The position breaks ties, so equal weights keep the browser's order.
        weighted.append((quality, -position, tag.strip().lower().split("-")[0]))

    for quality, _position, language in sorted(weighted, reverse=True):
        if quality > 0 and language in SUPPORTED_LANGUAGES:
            return language
    return DEFAULT_LANGUAGE


def supported(language: str | None) -> str | None:
    """Return the language code if the portal has it, else None."""
    value = (language or "").strip().lower()
    return value if value in SUPPORTED_LANGUAGES else None


def _cookie_value(cookie_header: str, name: str) -> str | None:
    for pair in cookie_header.split(";"):
        key, _separator, value = pair.strip().partition("=")
        if key == name:
            return value.strip().strip('"')
    return None


def requested_language(scope: Scope) -> str | None:
    """Return the language a GET asks for through the ``lang`` query parameter, if supported."""
    if scope.get("method") not in ("GET", "HEAD"):
        return None
    query = bytes(scope.get("query_string", b"")).decode("latin-1")[:MAX_HEADER_CHARS]
    for key, value in parse_qsl(query):
        if key == LANGUAGE_PARAMETER:
            return supported(value)
    return None


def language_of(scope: Scope) -> str:
    """Return the language for a request: query parameter, then cookie, then Accept-Language."""
    chosen = requested_language(scope)
    if chosen:
        return chosen

    headers = {bytes(name).lower(): bytes(value) for name, value in scope.get("headers", [])}
    cookie = _cookie_value(headers.get(b"cookie", b"").decode("latin-1")[:4096], LANGUAGE_COOKIE)
    return supported(cookie) or negotiate_language(headers.get(b"accept-language", b"").decode("latin-1"))


def language_cookie_header(language: str) -> tuple[bytes, bytes]:
    """Return the Set-Cookie header that stores a language choice for a year.

    The value is a preference, not a secret, so the cookie may be sent on top-level navigation from other
    sites (SameSite=Lax) and needs no signature: an unknown value is ignored.
    """
    attributes = f"Path=/; Max-Age={LANGUAGE_COOKIE_MAX_AGE_S}; Secure; HttpOnly; SameSite=Lax"
    value = f"{LANGUAGE_COOKIE}={language}; {attributes}"
    return b"set-cookie", value.encode("ascii")


class LanguageMiddleware:
    """Set the request's language for everything inside it, and store a choice made through ``?lang=``.

    Wrap the whole ASGI handler with it (outside Litestar's router and exception handlers): route
    middleware is not applied to unknown paths, and exception handlers render after route middleware
    has returned.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        language = language_of(scope)
        chosen = requested_language(scope)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and chosen:
                message["headers"] = [*message.get("headers", []), language_cookie_header(chosen)]
            await send(message)

        token = language_var.set(language)
        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            language_var.reset(token)


def clinic_time_text(moment: dt.datetime, timezone: str) -> str:
    """Format a time in the clinic's time zone, with the zone's abbreviation (2026-12-31 23:59 CET)."""
    local = moment.astimezone(ZoneInfo(timezone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


MONTH_NAMES = (
    N_("January"),
    N_("February"),
    N_("March"),
    N_("April"),
    N_("May"),
    N_("June"),
    N_("July"),
    N_("August"),
    N_("September"),
    N_("October"),
    N_("November"),
    N_("December"),
)


def long_date_text(day: dt.date) -> str:
    """Format a date as recipients read it, in the current language (31 December 2026)."""
    month = gettext(MONTH_NAMES[day.month - 1])
    return gettext("%(day)s %(month)s %(year)s") % {"day": day.day, "month": month, "year": day.year}


def recipient_time_text(moment: dt.datetime, timezone: str) -> str:
    """Format a time for recipients, in the clinic's time zone (31 December 2026 at 23:59 CET)."""
    local = moment.astimezone(ZoneInfo(timezone))
    return gettext("%(date)s at %(time)s %(zone)s") % {
        "date": long_date_text(local),
        "time": f"{local:%H:%M}",
        "zone": local.tzname(),
    }
