"""axe-core on every page of the portal, in English, German and French, at WCAG 2.2 AA.

axe-core is vendored under tests/browser/vendor/ (MPL-2.0, from the npm package). The portal's CSP allows
only same-origin scripts, so a ``<script>`` tag with axe's source would be refused. Playwright's
``add_init_script`` hands the source to Chromium through the DevTools protocol instead, which runs it in
every page before the page's own scripts and is not subject to the page's CSP. The pages keep their real
CSP (no ``bypass_csp``), so axe checks the page a visitor gets.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import test_recipient_pages as recipient
from tests.browser.conftest import ACTION_TIMEOUT_MS, CLINIC_NAME, PortalServer
from tests.browser.test_recipient_pages import BROWSER_LOCALES, LANGUAGES, SHOTS_DIR, Issuer, recipient_pages
from tests.conftest import PASSWORD
from tests.helpers import ADMIN, CLINICIAN, DPO

pytestmark = pytest.mark.browser

# The same server set-up as the recipient page tests: an admin account, an API token, one uploaded report.
page_server = recipient.page_server
portal_server = recipient.portal_server
issuer = recipient.issuer

AXE_SCRIPT = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@dataclass
class Findings:
    """axe violations per page, reported together so one run shows every problem."""

    language: str
    pages: list[str] = field(default_factory=list)
    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def check(self, page: Page, name: str) -> None:
        """Run axe on the page as it is now and keep its violations under ``name``."""
        expect(page.locator("html")).to_have_attribute("lang", self.language)
        result = page.evaluate(
            "async (options) => await axe.run(document, options)",
            {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]},
        )
        self.pages.append(name)
        if result["violations"]:
            self.violations[name] = result["violations"]

    def summary(self) -> str:
        lines = []
        for name, violations in self.violations.items():
            for violation in violations:
                targets = [" ".join(map(str, node["target"])) for node in violation["nodes"][:3]]
                rule = f"{violation['id']} ({violation['impact']})"
                lines.append(f"{name}: {rule} {violation['help']} at {targets}")
        return "\n".join(lines)


@pytest.fixture
def open_page(browser: Browser, portal_server: PortalServer) -> Iterator[Callable[[str], Page]]:
    """Return a function that opens a fresh context in a language, with axe loaded into every page."""
    contexts = []

    def open_one(language: str) -> Page:
        context = browser.new_context(base_url=portal_server.base_url, locale=BROWSER_LOCALES[language])
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.add_init_script(path=str(AXE_SCRIPT))
        contexts.append(context)
        return context.new_page()

    yield open_one
    for context in contexts:
        context.close()


def sign_in(page: Page, email: str) -> None:
    page.goto("/staff/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()
    assert "/staff/login" not in page.url, f"{email} could not sign in"


def check_recipient_pages(findings: Findings, page: Page, issuer: Issuer) -> None:
    for name, open_recipient_page in recipient_pages(issuer):
        open_recipient_page(page)
        findings.check(page, f"recipient {name}")


def check_clinician_pages(findings: Findings, page: Page, issuer: Issuer) -> None:
    page.goto("/staff/login")
    findings.check(page, "staff login")
    sign_in(page, CLINICIAN)
    findings.check(page, "dashboard")

    for path in ("/staff/shares/new", "/staff/shares/bulk", "/staff/totp"):
        page.goto(path)
        findings.check(page, path)

    page.goto(f"/staff/documents/{issuer.document_id}")
    findings.check(page, "document")
    page.locator("#recipient_name").fill("Zoë Łukasiewicz")
    page.locator("#purpose").fill("Follow-up after treatment")
    with page.expect_navigation():
        page.locator("form[action$='/shares'] button[type=submit]").click()
    findings.check(page, "share created")
    page.emulate_media(media="print")
    expect(page.locator(".slip")).to_be_visible()
    expect(page.locator(".site-header")).to_be_hidden()
    expect(page.locator(".notice.warning")).to_be_hidden()
    page.emulate_media(media="screen")

    share_link = page.locator("main a[href^='/staff/shares/']").first.get_attribute("href")
    page.goto(str(share_link))
    findings.check(page, "share")


def check_dpo_pages(findings: Findings, page: Page) -> None:
    sign_in(page, DPO)
    for path in ("/dpo/events", "/dpo/events/1", "/dpo/breach", "/dpo/disclosures", "/dpo/verify"):
        page.goto(path)
        findings.check(page, path)
    check_password_page(findings, page)


def check_password_page(findings: Findings, page: Page) -> None:
    """Open the password page from the navigation and send it with a wrong current password."""
    page.goto("/dpo/events")
    with page.expect_navigation():
        page.locator("nav.staff-nav a[href='/staff/password']").click()
    findings.check(page, "/staff/password")

    page.locator("#current_password").fill("not the password at all")
    page.locator("#password").fill("lantern orchard violin meadow")
    page.locator("#password_repeat").fill("lantern orchard violin meadow")
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page.locator("#current_password")).to_have_attribute("aria-invalid", "true")
    findings.check(page, "/staff/password with a wrong current password")


def check_admin_pages(findings: Findings, page: Page) -> None:
    sign_in(page, ADMIN)
    for path in ("/admin/staff", "/admin/tokens"):
        page.goto(path)
        findings.check(page, path)
        # Disabling an account or revoking a token needs a second click: its button shows once the disclosure opens.
        confirmation = page.locator("details.confirm").first
        expect(confirmation.locator("button.danger")).to_be_hidden()
        confirmation.locator("summary").click()
        expect(confirmation.locator("button.danger")).to_be_visible()
        findings.check(page, f"{path} with a confirmation open")

    invite_and_copy_link(findings, page)
    reset_with_link(findings, page, DPO)
    sign_in(page, ADMIN)
    disable_and_enable(findings, page, DPO)


def invite_and_copy_link(findings: Findings, page: Page) -> None:
    """Invite a staff member, copy the one-time link with its button, find the invitation listed, withdraw it."""
    email = f"invited-{uuid.uuid4().hex[:8]}@riverside.test"
    page.goto("/admin/staff")
    page.locator("#email").fill(email)
    with page.expect_navigation():
        page.locator("form[action='/admin/invitations'] button[type=submit]").click()
    link = page.get_by_test_id("invitation-link").inner_text().strip()
    assert "/staff/invitations/" in link

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    copy = page.locator("button[data-copy=invitation-link]")
    expect(copy).to_be_visible()
    copy.click()
    expect(page.locator("#invitation-link-status")).not_to_have_text("")
    assert page.evaluate("navigator.clipboard.readText()") == link
    findings.check(page, "invitation created, link copied")

    # Reloading the page sends the form again, which creates nothing, and the staff page explains why.
    page.reload()
    expect(page.locator(".error-summary a[href='#email']")).to_contain_text(email)
    expect(page.get_by_test_id("invitation-link")).to_have_count(0)
    findings.check(page, "/admin/staff after reloading the invitation page")

    page.goto("/admin/staff")
    row = page.get_by_test_id("open-invitations").locator("tbody tr", has_text=email)
    expect(row).to_have_count(1)
    findings.check(page, "/admin/staff with an open invitation")

    # Withdrawing needs a second click, then a focused status message confirms it.
    row.locator("[data-testid^=withdraw-] summary").click()
    findings.check(page, "/admin/staff with the withdraw confirmation open")
    with page.expect_navigation():
        row.locator("[data-testid^=withdraw-] button").click()
    message = page.locator("[data-testid=confirmation]")
    expect(message).to_contain_text(email)
    expect(message).to_be_focused()
    expect(page.get_by_test_id("open-invitations")).to_have_count(0)
    findings.check(page, "/admin/staff after withdrawing an invitation")

    # The withdrawn link leads staff to the administrator and the staff sign-in, not to an access code.
    page.goto(link)
    expect(page.locator("main")).to_contain_text(CLINIC_NAME)
    expect(page.locator("main a[href='/staff/login']")).to_have_count(1)
    expect(page.locator("main a[href='/access']")).to_have_count(0)
    findings.check(page, "withdrawn invitation link")


def confirm(findings: Findings, page: Page, disclosure: Locator, name: str) -> None:
    """Open a confirmation disclosure, check the page under ``name`` and send its form."""
    expect(disclosure.locator("button")).to_be_hidden()
    disclosure.locator("summary").click()
    expect(disclosure.locator("button")).to_be_visible()
    findings.check(page, name)
    with page.expect_navigation():
        disclosure.locator("button").click()


def reset_with_link(findings: Findings, page: Page, email: str) -> None:
    """Create a password reset link for ``email``, copy it, and set the same password again through it."""
    page.goto("/admin/staff")
    row = page.locator("section[aria-labelledby=list-heading] tbody tr", has_text=email)
    confirm(
        findings, page, row.locator("[data-testid^=reset-]"), "/admin/staff with the reset confirmation open"
    )
    link = page.get_by_test_id("reset-link").inner_text().strip()
    assert "/staff/password-reset/" in link

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("button[data-copy=reset-link]").click()
    expect(page.locator("#reset-link-status")).not_to_have_text("")
    assert page.evaluate("navigator.clipboard.readText()") == link
    findings.check(page, "password reset link created, link copied")

    page.goto("/admin/staff")
    expect(page.get_by_test_id("open-invitations").locator("tbody tr", has_text=email)).to_have_count(1)
    findings.check(page, "/admin/staff with an open reset link")

    page.goto(link)
    expect(page.locator("main")).to_contain_text(email)
    findings.check(page, "password reset page")
    page.locator("#password").fill(PASSWORD)
    page.locator("#password_repeat").fill(PASSWORD + " typo")
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()
    expect(page.locator(".error-summary")).to_be_focused()
    findings.check(page, "password reset page with an error")

    # The same password again, so the next language's run signs in as before.
    page.locator("#password").fill(PASSWORD)
    page.locator("#password_repeat").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()
    expect(page.get_by_test_id("reset-done")).to_be_visible()
    findings.check(page, "sign-in after a password reset")


def disable_and_enable(findings: Findings, page: Page, email: str) -> None:
    """Disable ``email``'s account and enable it again from the staff page, then sign in as that person."""
    page.goto("/admin/staff")
    row = page.locator("tbody tr", has_text=email)
    row.locator("[data-testid^=disable-] summary").click()
    with page.expect_navigation():
        row.locator("[data-testid^=disable-] button").click()
    # The message after the redirect is a status region that takes the focus, so a screen reader reads it.
    message = page.locator("[data-testid=confirmation]")
    expect(message).to_have_attribute("role", "status")
    expect(message).to_contain_text(email)
    expect(message).to_be_focused()
    findings.check(page, "/admin/staff after disabling")

    confirm(
        findings,
        page,
        row.locator("[data-testid^=enable-]"),
        "/admin/staff with the enable confirmation open",
    )
    expect(message).to_contain_text(email)
    expect(message).to_be_focused()
    expect(row.locator("[data-testid^=disable-]")).to_have_count(1)
    expect(row.locator("[data-testid^=enable-]")).to_have_count(0)
    findings.check(page, "/admin/staff after enabling")

    # The account signs in with the password it had before it was disabled.
    sign_in(page, email)


@pytest.mark.parametrize("language", LANGUAGES)
def test_axe_every_page(language: str, issuer: Issuer, open_page: Callable[[str], Page]) -> None:
    findings = Findings(language)

    check_recipient_pages(findings, open_page(language), issuer)
    check_clinician_pages(findings, open_page(language), issuer)
    check_dpo_pages(findings, open_page(language))
    check_admin_pages(findings, open_page(language))

    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    report = {"language": language, "pages": findings.pages, "violations": findings.violations}
    (SHOTS_DIR / f"axe-{language}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    assert len(findings.pages) >= 19
    assert not findings.violations, f"axe found WCAG 2.2 AA violations in {language}:\n{findings.summary()}"


def test_axe_loaded_under_csp(open_page: Callable[[str], Page]) -> None:
    page = open_page("en")
    page.goto("/access")
    csp = page.evaluate("async () => (await fetch('/access')).headers.get('content-security-policy')")
    assert re.search(r"script-src 'self'(;|$)", csp), f"the page keeps its strict CSP: {csp}"
    assert page.evaluate("() => typeof axe.run") == "function"

    # A control without a name must be found, or a clean result would prove nothing.
    page.evaluate("() => document.querySelector('main').append(document.createElement('button'))")
    result = page.evaluate(
        "async (options) => await axe.run('main > button:last-child', options)",
        {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]},
    )
    assert [violation["id"] for violation in result["violations"]] == ["button-name"]
