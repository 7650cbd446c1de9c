"""The recipient's pages in English, German and French: language choice, phone widths, print, keyboard.

Screenshots at 360x740 and 1280x800 land in test-output/browser/i18n/ as <language>-<page>-<size>.png.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import APIRequestContext, Browser, BrowserContext, Locator, Page, expect

from portal.config import REPOSITORY_ROOT
from portal.security import codes
from tests.browser.conftest import (
    ACTION_TIMEOUT_MS,
    CLI_TIMEOUT_S,
    CLINIC_CONTACT,
    CLINIC_NAME,
    OUTPUT_DIR,
    PortalServer,
    _add_staff,
    _free_port,
    _server_env,
    _stop,
    _wait_until_serving,
)
from tests.conftest import CORPUS_DIR, PASSWORD
from tests.helpers import ADMIN, CLINICIAN, DPO

pytestmark = pytest.mark.browser

LANGUAGES = ("en", "de", "fr")
BROWSER_LOCALES = {"en": "en-GB", "de": "de-DE", "fr": "fr-FR"}
SCREENSHOT_SIZES = ({"width": 360, "height": 740}, {"width": 1280, "height": 800})
NARROWEST = {"width": 320, "height": 640}
MIN_TARGET_PX = 44
MAX_TABS = 30

SHOTS_DIR = OUTPUT_DIR / "i18n"
REPORT_PDF = CORPUS_DIR / "rotate-mixed-90-180-270-six-pages.pdf"
REPORT_PAGES = 6
BIRTH_DATE = "1950-12-31"

# Each page's main heading in each language: proof that the page was rendered in that language.
HEADINGS = {
    "code-entry": {"en": "Open your report", "de": "Ihren Bericht öffnen", "fr": "Ouvrir votre compte rendu"},
    "share": {
        "en": f"Your report from {CLINIC_NAME}",
        "de": f"Ihr Bericht von {CLINIC_NAME}",
        "fr": f"Votre compte rendu transmis par {CLINIC_NAME}",
    },
    "error-not-found": {"en": "Page not found", "de": "Seite nicht gefunden", "fr": "Page introuvable"},
    "error-unavailable": {"en": "No longer available", "de": "Nicht mehr verfügbar", "fr": "Plus disponible"},
}

# Chromium logs a console error for every page that arrives with an error status, as these pages do.
ERROR_STATUS = re.compile(r"Failed to load resource: the server responded with a status of (400|404|410)")
CSP_VIOLATION = re.compile(r"Content Security Policy|Refused to")

# Controls that must be at least 44 by 44 CSS pixels. Links inside running text are exempt (WCAG 2.5.8).
TOUCH_TARGETS = (
    "button, input:not([type=hidden]), summary, .button, .language-switcher a, .links a, .skip-link"
)


def _start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "portal.cli", *args],
        env=env,
        cwd=REPOSITORY_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_cli(process: subprocess.Popen[str], stdin: str = "") -> str:
    """Wait for a CLI process and return its output; fail the test with its stderr if it failed."""
    stdout, stderr = process.communicate(stdin, timeout=CLI_TIMEOUT_S)
    assert process.returncode == 0, f"{' '.join(map(str, process.args))} failed:\n{stderr[-2000:]}"
    return stdout


def _prepare_accounts(env: dict[str, str]) -> str:
    """Create the clinician, DPO and admin accounts and a clinician API token; return the token.

    The first command creates the database and key file; the others run side by side, since each costs
    a few seconds of start-up and password hashing.
    """
    _add_staff(env, CLINICIAN, "clinician")
    others = [
        (_start_cli(env, "users", "add", DPO, "--role", "dpo", "--password-stdin"), PASSWORD + "\n"),
        (_start_cli(env, "users", "add", ADMIN, "--role", "admin", "--password-stdin"), PASSWORD + "\n"),
        (_start_cli(env, "tokens", "create", "--user", CLINICIAN, "--label", "page tests"), ""),
    ]
    outputs = [_finish_cli(process, stdin) for process, stdin in others]
    return outputs[-1].strip().splitlines()[-1]


@dataclass(frozen=True)
class PageServer:
    """The portal process for these tests and a clinician's API token on it."""

    server: PortalServer
    token: str


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    """Start ``portal serve`` as the shared fixture does, with an admin too and a looser flood limit.

    These tests redeem codes from 127.0.0.1 a dozen times a minute; the default limit of 10 per address
    is flood control that other tests cover.
    """
    policies = tmp_path_factory.mktemp("policies")
    shutil.copytree(REPOSITORY_ROOT / "policies", policies, dirs_exist_ok=True)
    security = policies / "security.toml"
    text = security.read_text(encoding="utf-8")
    security.write_text(re.sub(r"attempts_per_ip_per_minute = \d+", "attempts_per_ip_per_minute = 200", text))

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = _server_env(tmp_path_factory.mktemp("portal") / "data", base_url)
    env["PORTAL_POLICY_DIR"] = str(policies)
    token = _prepare_accounts(env)

    log_path = OUTPUT_DIR / "server-i18n.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "portal.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_serving(process, base_url, log_path)
        yield PageServer(PortalServer(base_url=base_url, env=env, log_path=log_path), token)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def portal_server(page_server: PageServer) -> PortalServer:
    return page_server.server


@dataclass
class Issuer:
    """Creates shares of one uploaded report through the JSON API, as a clinic system would."""

    api: APIRequestContext
    document_id: str

    def share(self, profile: str = "patient") -> str:
        """Create a share and return its access code as printed."""
        body = {
            "document_ids": [self.document_id],
            "profile": profile,
            "recipient_name": "Zoë Łukasiewicz",
            "purpose": "Follow-up after treatment",
        }
        if profile == "patient_dob":
            body["date_of_birth"] = BIRTH_DATE
        answer = self.api.post("/api/v1/shares", data=body)
        assert answer.status == 201, f"POST /api/v1/shares answered {answer.status}: {answer.text()[:300]}"
        return str(answer.json()["access_code"])


@pytest.fixture(scope="module")
def issuer(browser: Browser, page_server: PageServer) -> Iterator[Issuer]:
    """Upload the six-page report once with the clinician's API token."""
    portal_server, token = page_server.server, page_server.token
    context = browser.new_context(
        base_url=portal_server.base_url, extra_http_headers={"Authorization": f"Bearer {token}"}
    )
    try:
        answer = context.request.post(
            "/api/v1/documents",
            multipart={
                "file": {
                    "name": "report.pdf",
                    "mimeType": "application/pdf",
                    "buffer": REPORT_PDF.read_bytes(),
                },
                "title": "Wound healing progress",
                "patient_ref": "PAT-0042",
                "report_date": "2026-11-30",
            },
        )
        assert answer.status == 201, f"POST /api/v1/documents answered {answer.status}: {answer.text()[:300]}"
        yield Issuer(api=context.request, document_id=str(answer.json()["id"]))
    finally:
        context.close()


@dataclass
class Reader:
    """A recipient's browser context in one language, with what its console printed."""

    language: str
    context: BrowserContext
    page: Page
    console: list[str]

    def problems(self) -> list[str]:
        """Return CSP violations and console errors other than the expected error statuses."""
        found = []
        for line in self.console:
            unexpected_error = line.startswith("error:") and not ERROR_STATUS.search(line)
            if CSP_VIOLATION.search(line) or (unexpected_error and "favicon.ico" not in line):
                found.append(line)
        return found


@pytest.fixture
def open_reader(browser: Browser, portal_server: PortalServer) -> Iterator[Callable[[str], Reader]]:
    """Return a function that opens a fresh context whose browser asks for the given language."""
    readers: list[Reader] = []

    def open_one(language: str) -> Reader:
        context = browser.new_context(
            base_url=portal_server.base_url, locale=BROWSER_LOCALES[language], accept_downloads=True
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.new_page()
        reader = Reader(language, context, page, [])
        page.on("console", lambda message: reader.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: reader.console.append(f"error: page error {error}"))
        readers.append(reader)
        return reader

    yield open_one
    for reader in readers:
        reader.context.close()


def submit_code(page: Page, code: str, date_of_birth: str | None = None) -> None:
    page.goto("/access")
    page.locator("#code").fill(code)
    if date_of_birth is not None:
        page.locator("#date_of_birth").fill(date_of_birth)
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()


def recipient_pages(issuer: Issuer) -> list[tuple[str, Callable[[Page], None]]]:
    """Return each recipient page's name and the steps that open it; the share page comes last."""

    def code_entry(page: Page) -> None:
        page.goto("/access")

    def code_entry_error(page: Page) -> None:
        submit_code(page, codes.display(codes.generate_code()))
        expect(page.locator(".error-summary")).to_be_focused()

    def code_entry_birth_date(page: Page) -> None:
        submit_code(page, issuer.share("patient_dob"))
        expect(page.get_by_test_id("birth-date-prompt")).to_be_visible()
        expect(page.locator("#date_of_birth")).to_be_focused()

    def error_unavailable(page: Page) -> None:
        page.goto("/access/share")

    def error_not_found(page: Page) -> None:
        page.goto("/no-such-page")

    def share(page: Page) -> None:
        submit_code(page, issuer.share("patient"))
        expect(page).to_have_url(re.compile(r"/access/share$"))

    return [
        ("code-entry", code_entry),
        ("code-entry-error", code_entry_error),
        ("code-entry-birth-date", code_entry_birth_date),
        ("error-unavailable", error_unavailable),
        ("error-not-found", error_not_found),
        ("share", share),
    ]


def horizontal_overflow(page: Page) -> int:
    """Return by how many CSS pixels the document is wider than the viewport."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


def small_targets(page: Page) -> list[str]:
    """Return the visible controls smaller than 44 by 44 CSS pixels."""
    return list(
        page.evaluate(
            """([selector, minimum]) => Array.from(document.querySelectorAll(selector))
                .filter(element => element.getClientRects().length > 0)
                .map(element => [element, element.getBoundingClientRect()])
                .filter(([element, box]) => box.width < minimum || box.height < minimum)
                .map(([element, box]) => `${element.outerHTML.slice(0, 80)} (${box.width}x${box.height})`)""",
            [TOUCH_TARGETS, MIN_TARGET_PX],
        )
    )


def focused_description(page: Page) -> str:
    return str(
        page.evaluate(
            """() => {
                const element = document.activeElement;
                if (!element) return '';
                const text = (element.textContent || '').trim().slice(0, 40);
                return `${element.tagName.toLowerCase()}#${element.id}:${text}`;
            }"""
        )
    )


def tab_to(page: Page, matches: Callable[[Page], bool]) -> list[str]:
    """Press Tab until ``matches`` holds; return the focus order seen. Fails after MAX_TABS presses."""
    seen = []
    for _press in range(MAX_TABS):
        page.keyboard.press("Tab")
        seen.append(focused_description(page))
        if matches(page):
            return seen
    pytest.fail(f"Tab never reached the target; focus went through: {seen}")


def is_focused(selector: str) -> Callable[[Page], bool]:
    return lambda page: bool(page.evaluate("selector => document.activeElement?.matches(selector)", selector))


@pytest.mark.parametrize("language", LANGUAGES)
def test_recipient_pages_in_language(
    language: str, issuer: Issuer, open_reader: Callable[[str], Reader]
) -> None:
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    reader = open_reader(language)
    page = reader.page

    for name, open_page in recipient_pages(issuer):
        page.set_viewport_size(NARROWEST)
        open_page(page)
        expect(page.locator("html")).to_have_attribute("lang", language)
        heading = HEADINGS.get(name.removesuffix("-error").removesuffix("-birth-date"))
        if heading:
            expect(page.get_by_role("heading", level=1)).to_have_text(heading[language])
        assert horizontal_overflow(page) <= 0, f"{language} {name} scrolls sideways at 320 px"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= NARROWEST["width"]
        assert small_targets(page) == [], f"{language} {name} has controls under 44 px"

        for size in SCREENSHOT_SIZES:
            page.set_viewport_size(size)
            path = SHOTS_DIR / f"{language}-{name}-{size['width']}x{size['height']}.png"
            page.screenshot(path=str(path), full_page=True)

    assert reader.problems() == [], f"{language}: the console reported problems"


def test_share_page_content(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    reader = open_reader("de")
    page = reader.page
    page.set_viewport_size(SCREENSHOT_SIZES[0])
    submit_code(page, issuer.share("patient"))
    summary = page.locator(".summary")

    # The patient's code works once: a phone shows that in its first screen, with the session's end.
    spent = page.get_by_test_id("code-spent")
    expect(spent).to_be_in_viewport()
    expect(spent).to_contain_text(
        "Wenn Sie ihn auf dieser Website noch einmal eingeben, öffnet er den Bericht nicht mehr."
    )
    expect(spent).to_contain_text(re.compile(r"spätestens aber am \d+\. \w+ \d{4} um \d\d:\d\d Uhr UTC\."))
    expect(spent).to_contain_text("laden Sie ihn jetzt herunter, bevor Sie „Beenden“ wählen.")
    expect(summary).not_to_contain_text("Verfügbar bis")
    expect(summary).to_contain_text(
        re.compile(r"Sitzung endetspätestens am \d+\. \w+ \d{4} um \d\d:\d\d Uhr UTC")
    )

    expect(summary).to_contain_text("Wound healing progress, 30. November 2026")
    expect(summary).to_contain_text(f"Freigegeben von{CLINIC_NAME}")
    expect(summary).to_contain_text("Zoë Łukasiewicz")
    expect(page.locator("#download-heading + p")).to_contain_text("genau so ein, wie er auf dem Brief steht")
    expect(page.get_by_role("link", name="Bericht herunterladen (PDF)")).to_be_visible()
    images = page.get_by_role("img", name=re.compile(rf"^Seite \d von {REPORT_PAGES}$"))
    expect(images).to_have_count(REPORT_PAGES)
    expect(page.locator("main")).to_contain_text(CLINIC_CONTACT)


def test_language_switcher_sets_cookie(open_reader: Callable[[str], Reader]) -> None:
    reader = open_reader("en")
    page = reader.page
    page.goto("/access")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    switcher = page.get_by_role("navigation", name="Language")
    expect(switcher.get_by_role("link", name="English")).to_have_attribute("aria-current", "true")

    switcher.get_by_role("link", name="Français").click()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS["code-entry"]["fr"])
    cookie = next(cookie for cookie in reader.context.cookies() if cookie["name"] == "portal-lang")
    assert cookie["value"] == "fr"
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"

    # The cookie outlasts the page: a later visit stays French although the browser asks for English.
    page.goto("/no-such-page")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS["error-not-found"]["fr"])
    french = page.get_by_role("navigation", name="Langue").get_by_role("link", name="Français")
    expect(french).to_have_attribute("aria-current", "true")


def test_share_page_prints_cleanly(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    reader = open_reader("en")
    page = reader.page
    submit_code(page, issuer.share("patient"))
    page.emulate_media(media="print")

    for hidden in (".site-header", ".site-footer", ".language-switcher", "form", "a.button", ".skip-link"):
        for element in page.locator(hidden).all():
            expect(element).to_be_hidden()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.locator(".summary")).to_be_visible()
    expect(page.locator(".pages img").first).to_be_visible()
    assert page.evaluate("() => getComputedStyle(document.querySelector('.pages li')).breakInside") == "avoid"

    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    pdf = page.pdf(path=str(SHOTS_DIR / "en-share-print.pdf"), format="A4")
    assert pdf.startswith(b"%PDF")


def test_recipient_flow_by_keyboard(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    code = issuer.share("patient")
    reader = open_reader("en")
    page = reader.page
    page.goto("/access")

    # The skip link comes first and moves focus to the main content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    order = tab_to(page, is_focused("#code"))
    assert not any("language" in step.lower() for step in order), "focus goes from main straight to the form"
    page.keyboard.type(code.lower().replace("-", ""))
    page.keyboard.press("Enter")
    page.wait_for_url("**/access/share")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS["share"]["en"])

    tab_to(page, is_focused("a[href='/access/download']"))
    with page.expect_download() as started:
        page.keyboard.press("Enter")
    assert started.value.failure() is None

    page.keyboard.press("Shift+Tab")
    tab_to(page, is_focused("form[action='/access/end'] button"))
    page.keyboard.press("Enter")
    # The patient's code opens the report once, so the confirmation does not suggest entering it again.
    page.wait_for_url("**/access?finished=spent")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS["code-entry"]["en"])
    expect(page.get_by_test_id("finished")).to_contain_text("cannot open the report again")
    assert reader.problems() == []


def test_birth_date_flow_by_keyboard(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    code = issuer.share("patient_dob")
    reader = open_reader("de")
    page = reader.page
    page.goto("/access")

    tab_to(page, is_focused("#code"))
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    page.wait_for_load_state()

    # The next step requests the date of birth without error styling, with the cursor in its field.
    expect(page.get_by_test_id("birth-date-prompt")).to_be_visible()
    expect(page.locator(".error-summary")).to_have_count(0)
    expect(page.locator("#date_of_birth")).to_be_focused()
    assert not page.title().startswith("Fehler")
    page.keyboard.type("31.12.1950")
    page.keyboard.press("Enter")
    page.wait_for_url("**/access/share")
    expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS["share"]["de"])


def share_page_with_count(issuer: Issuer, open_reader: Callable[[str], Reader]) -> tuple[Reader, Locator]:
    """Open a patient share's page in English; return the reader and its download count (three left).

    The patient's code works once, so the count is for this session.
    """
    reader = open_reader("en")
    submit_code(reader.page, issuer.share("patient"))
    count = reader.page.locator("#downloads-left")
    expect(count).to_have_text("3 downloads left in this session.")
    return reader, count


def test_download_count_updates_in_place(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    reader, count = share_page_with_count(issuer, open_reader)
    page = reader.page

    for left in ("2 downloads left in this session.", "1 download left in this session."):
        with page.expect_download() as started:
            page.locator("#download-link").click()
        assert started.value.failure() is None
        expect(count).to_have_text(left)

    # The last download removes the button, so the page offers nothing the server would reject.
    with page.expect_download() as started:
        page.locator("#download-link").click()
    assert started.value.failure() is None
    expect(count).to_have_text("The download limit is reached. Contact the clinic if you need another copy.")
    expect(page.locator("#download-link")).to_have_count(0)
    assert reader.problems() == []


def test_download_at_limit_opens_page(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    reader, count = share_page_with_count(issuer, open_reader)
    stale = reader.context.new_page()
    stale.goto("/access/share")

    for _ in range(3):
        with reader.page.expect_download() as started:
            reader.page.locator("#download-link").click()
        assert started.value.failure() is None
    expect(count).to_have_text("The download limit is reached. Contact the clinic if you need another copy.")

    # A page opened before the limit still shows the link. Its refusal opens as a page, not as a saved file.
    downloads: list[object] = []
    stale.on("download", lambda download: downloads.append(download))
    with stale.expect_navigation():
        stale.locator("#download-link").click()
    expect(stale.locator("main")).to_contain_text("The download limit for this report is reached.")
    assert downloads == []


def test_download_count_after_session_ends(issuer: Issuer, open_reader: Callable[[str], Reader]) -> None:
    reader, count = share_page_with_count(issuer, open_reader)
    page = reader.page

    # The session ends elsewhere (here its cookie is cleared), and the next reload of the count shows why.
    reader.context.clear_cookies()
    page.evaluate("() => document.body.dispatchEvent(new CustomEvent('download-started'))")
    expect(count).to_contain_text("Your session has ended:")
    expect(page.locator("#download-link")).to_have_count(0)
    assert reader.problems() == []
