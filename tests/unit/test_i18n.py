"""Translations: every template string is marked, recipient strings are complete in German and French,
the compiled catalogues match their sources, and the request's language is chosen as documented."""

from __future__ import annotations

import gettext
import io
import re
import string
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader

from portal import i18n
from portal.audit.recorder import EVENT_TYPES
from portal.config import REPOSITORY_ROOT
from portal.i18n import language_var
from portal.labels import EVENT_LABELS, detail_items, event_label, outcome_label, role_label
from portal.pdf.pipeline import DEFAULT_FOOTER
from portal.policies import SHIPPED_PROFILE_TEXTS, load_policies, profile_label

TEMPLATE_DIR = REPOSITORY_ROOT / "templates"
TRANSLATED_LANGUAGES = [code for code in i18n.SUPPORTED_LANGUAGES if code != i18n.DEFAULT_LANGUAGE]
EXTRACT_TIMEOUT_S = 60

# Sources whose messages a recipient can see, so each must be translated completely.
RECIPIENT_SOURCES = (
    "templates/access/",
    "templates/errors/",
    "templates/base.html",
    "templates/_macros.html",
    "portal/access/",
    "portal/shares/slip.py",
    "portal/app.py",
)

# Text that stays the same in every language, so it needs no marking. The second entry is the attribute
# text that the `described` macro writes into the tag that calls it.
UNMARKED_ALLOWED = {"UTC", 'aria-describedby=" " aria-invalid="true"'}

# Attributes whose values a person reads or hears.
READABLE_ATTRIBUTES = {
    "alt",
    "title",
    "placeholder",
    "aria-label",
    "aria-description",
    "aria-roledescription",
}
BUTTON_INPUT_TYPES = {"submit", "button", "reset"}

# Stands in for each {{ }} and {% %} so the HTML around them parses as one document.
PLACEHOLDER = "\x00"
LETTER = re.compile(r"[^\W\d_]")


class _TextCollector(HTMLParser):
    """Collect the text nodes and readable attribute values of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            readable = name in READABLE_ATTRIBUTES
            if tag == "input" and name == "value" and values.get("type") in BUTTON_INPUT_TYPES:
                readable = True
            if readable and value:
                self.texts.append(value)


def unmarked_text(source: str) -> list[str]:
    """Return the template's literal text outside {{ }} and {% %} that contains letters."""
    environment = Environment(
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True, autoescape=True
    )
    parts = []
    for _line, token, value in environment.lex(source):
        if token == "data":
            parts.append(value)
        elif token in ("variable_begin", "block_begin"):
            parts.append(PLACEHOLDER)

    collector = _TextCollector()
    collector.feed("".join(parts))
    collector.close()

    found = []
    for text in collector.texts:
        words = " ".join(text.replace(PLACEHOLDER, " ").split())
        if LETTER.search(words) and words not in UNMARKED_ALLOWED:
            found.append(words)
    return found


def templates() -> Iterator[Path]:
    yield from sorted(TEMPLATE_DIR.rglob("*.html"))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """Extract every message of the sources into a temporary .pot with the project's babel.cfg."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "-k",
            "gettext_noop",
            "--no-wrap",
            "-o",
            str(pot),
            ".",
        ],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=EXTRACT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"pybabel extract failed:\n{result.stderr[-2000:]}"
    with pot.open("rb") as handle:
        return read_po(handle)


def catalogue(language: str) -> Catalog:
    with (i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def recipient_messages(template: Catalog) -> list[str | tuple[str, ...]]:
    return [
        message.id
        for message in template
        if message.id and any(path.startswith(RECIPIENT_SOURCES) for path, _line in message.locations)
    ]


def format_fields(text: str) -> set[str]:
    """Return the str.format fields ({name}) and %-mapping keys (%(name)s) a message uses."""
    fields = {name for _literal, name, _spec, _conversion in string.Formatter().parse(text) if name}
    return fields | set(re.findall(r"%\((\w+)\)", text))


@pytest.mark.parametrize("path", list(templates()), ids=lambda path: str(path.relative_to(TEMPLATE_DIR)))
def test_template_text_marked(path: Path) -> None:
    found = unmarked_text(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name} has text outside {{{{ _() }}}}: {found}"


def test_unmarked_text_detected() -> None:
    source = '<p>Hello</p><img alt="Scan"><p>{{ _("Marked") }}</p><input type="submit" value="Send"> ·'
    assert unmarked_text(source) == ["Hello", "Scan", "Send"]


def test_recipient_sources_extracted(extracted: Catalog) -> None:
    messages = recipient_messages(extracted)
    # A typo in RECIPIENT_SOURCES would make the completeness test pass on nothing.
    assert len(messages) > 80
    assert "Open your report" in messages
    assert "Reference: {reference}" in messages, "the slip's text is extracted"
    denial = [message for message in messages if str(message).startswith("This code cannot be used")]
    assert denial, "the generic denial is marked"


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_recipient_strings_translated(extracted: Catalog, language: str) -> None:
    translations = catalogue(language)
    missing = []
    for message_id in recipient_messages(extracted):
        message = translations.get(message_id)
        strings = message.string if message is not None else ""
        forms = strings if isinstance(strings, tuple) else (strings,)
        if message is None or message.fuzzy or not all(forms):
            missing.append(message_id)
    assert not missing, f"{len(missing)} recipient messages lack a {language} translation: {missing[:10]}"


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_translation_placeholders_match(language: str) -> None:
    for message in catalogue(language):
        if not message.id or not message.string:
            continue
        sources = message.id if isinstance(message.id, tuple) else (message.id,)
        targets = message.string if isinstance(message.string, tuple) else (message.string,)
        expected = set().union(*(format_fields(text) for text in sources))
        # A plural's singular may spell its count out ("once") instead of using the count's placeholder.
        optional = format_fields(sources[-1]) - format_fields(sources[0])
        for target in filter(None, targets):
            fields = format_fields(target)
            assert expected - optional <= fields <= expected, f"{language}: {message.id!r} -> {target!r}"


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_compiled_catalogue_current(language: str) -> None:
    # Compares content, not modification times, which a git checkout does not keep.
    folder = i18n.LOCALE_DIR / language / "LC_MESSAGES"
    buffer = io.BytesIO()
    write_mo(buffer, catalogue(language))
    buffer.seek(0)
    expected = gettext.GNUTranslations(buffer)

    with (folder / "messages.mo").open("rb") as handle:
        committed = gettext.GNUTranslations(handle)
    assert committed._catalog == expected._catalog, f"run `make i18n`: {folder / 'messages.mo'} is stale"  # type: ignore[attr-defined]


@pytest.mark.parametrize("language", TRANSLATED_LANGUAGES)
def test_gettext_uses_language(language: str) -> None:
    token = i18n.language_var.set(language)
    try:
        translated = i18n.gettext("Open your report")
        plural = i18n.ngettext("%(num)d download left.", "%(num)d downloads left.", 2)
    finally:
        i18n.language_var.reset(token)
    assert translated != "Open your report"
    assert plural != "%(num)d downloads left."
    assert i18n.gettext("Open your report") == "Open your report", "the default language is English"


def test_switcher_lists_supported_languages() -> None:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR), extensions=["jinja2.ext.i18n"], autoescape=True
    )
    environment.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    environment.globals["current_language"] = lambda: "de"
    html = environment.get_template("_macros.html").module.language_switcher()  # type: ignore[attr-defined]

    links = re.findall(r'<a href="\?lang=(\w+)" lang="\1" hreflang="\1"[^>]*>([^<]+)</a>', str(html))
    assert dict(links) == i18n.LANGUAGE_NAMES
    assert list(i18n.LANGUAGE_NAMES) == list(i18n.SUPPORTED_LANGUAGES)
    assert re.search(r'lang="de"[^>]*aria-current="true"', str(html))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7", "fr"),
        ("en-GB,en;q=0.9,de;q=0.8", "en"),
        ("it,de;q=0.5", "de"),
        ("it,es", "en"),
        ("de;q=0,fr;q=0.1", "fr"),
        ("de;q=abc,fr;q=0.2", "fr"),
        ("*", "en"),
        ("x" * 10_000, "en"),
    ],
)
def test_negotiate_language_header(header: str | None, expected: str) -> None:
    assert i18n.negotiate_language(header) == expected


def scope(query: bytes = b"", method: str = "GET", **headers: str) -> dict[str, object]:
    return {
        "type": "http",
        "method": method,
        "query_string": query,
        "headers": [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()],
    }


def test_language_of_cookie_beats_header() -> None:
    assert i18n.language_of(scope(cookie="a=1; portal-lang=fr", accept_language="de")) == "fr"
    assert i18n.language_of(scope(cookie="portal-lang=xx", accept_language="de")) == "de"
    assert i18n.language_of(scope(accept_language="de")) == "de"


def test_language_of_query_beats_cookie() -> None:
    assert i18n.language_of(scope(b"lang=de", cookie="portal-lang=fr")) == "de"
    assert i18n.language_of(scope(b"lang=de", method="POST", cookie="portal-lang=fr")) == "fr"
    assert i18n.language_of(scope(b"lang=zz", cookie="portal-lang=fr")) == "fr"


async def test_middleware_stores_choice() -> None:
    seen: list[str] = []
    sent: list[dict[str, object]] = []

    async def app(_scope: object, _receive: object, send: object) -> None:
        seen.append(i18n.language_var.get())
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    middleware = i18n.LanguageMiddleware(app)  # type: ignore[arg-type]
    await middleware(scope(b"lang=fr", accept_language="de"), receive, send)  # type: ignore[arg-type]
    await middleware(scope(accept_language="de"), receive, send)  # type: ignore[arg-type]

    assert seen == ["fr", "de"]
    cookie = dict(sent[0]["headers"])[b"set-cookie"].decode()  # type: ignore[call-overload]
    assert cookie.startswith("portal-lang=fr;")
    assert "Secure" in cookie
    assert "SameSite=Lax" in cookie
    assert b"set-cookie" not in dict(sent[1]["headers"]), "no cookie without a choice"  # type: ignore[call-overload]
    assert i18n.language_var.get() == i18n.DEFAULT_LANGUAGE, "the language is reset after the request"


def test_shipped_profile_texts_match_policies() -> None:
    policies = load_policies(REPOSITORY_ROOT / "policies")
    texts = {text for profile in policies.profiles.values() for text in (profile.label, profile.description)}
    assert texts == set(SHIPPED_PROFILE_TEXTS), "profiles.toml and SHIPPED_PROFILE_TEXTS list the same texts"


def test_profile_labels_translated() -> None:
    policies = load_policies(REPOSITORY_ROOT / "policies")
    token = language_var.set("de")
    try:
        assert profile_label(policies, "referrer") == "Überweisende Hausarztpraxis"
        assert profile_label(policies, "removed_profile") == "removed_profile"
    finally:
        language_var.reset(token)


def test_every_event_type_has_a_label() -> None:
    assert set(EVENT_LABELS) == set(EVENT_TYPES)


def test_labels_translated() -> None:
    token = language_var.set("fr")
    try:
        assert event_label("access.download.completed") == "Téléchargement terminé"
        assert role_label("dpo") == "Délégué à la protection des données"
        assert outcome_label("failure") == "Échec"
        assert event_label("unknown.type") == "unknown.type"
    finally:
        language_var.reset(token)


def test_detail_items_name_keys_and_keep_values() -> None:
    details = (
        '{"expires":"2026-12-19T10:14:15.371056+00:00","failed_attempts":3,"new_key":"x",'
        '"reason":"wrong_code","second_factor":true,"via":null}'
    )
    assert detail_items(details) == [
        ("expires", "2026-12-19 10:14:15 UTC"),
        ("failed attempts", "3"),
        ("new_key", "x"),
        ("reason", "wrong code"),
        ("second factor", "yes"),
        ("via", "\u2013"),
    ]
    token = language_var.set("de")
    try:
        assert detail_items('{"reason":"locked","second_factor":false}') == [
            ("Grund", "Freigabe gesperrt"),
            ("zweiter Faktor", "nein"),
        ]
    finally:
        language_var.reset(token)
    # A reason without a name and a value the log cannot hold are shown as they are.
    assert detail_items('{"reason":"new_reason"}') == [("reason", "new_reason")]
    assert detail_items("not json") == [("", "not json")]


@pytest.mark.parametrize("language", i18n.SUPPORTED_LANGUAGES)
def test_copy_footer_translations_format(language: str) -> None:
    with i18n.using_language(language):
        footer = i18n.gettext(DEFAULT_FOOTER).format(name="Zoë Ł", date="2026-12-05", reference="S-7K3M9QXA")
    assert "Zoë Ł" in footer
    assert "2026-12-05" in footer
    assert "S-7K3M9QXA" in footer
    assert "{" not in footer


def test_using_language_restores_previous() -> None:
    token = language_var.set("de")
    try:
        with i18n.using_language("fr"):
            assert language_var.get() == "fr"
        with i18n.using_language("xx"):
            assert language_var.get() == i18n.DEFAULT_LANGUAGE
        assert language_var.get() == "de"
    finally:
        language_var.reset(token)
