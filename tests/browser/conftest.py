"""Browser-test harness: a real portal server on loopback and Debian's Chromium driven by playwright.

The sync playwright API runs its own event loop, so browser tests are plain ``def`` functions. With
``asyncio_mode = auto`` an ``async def`` test would already run inside a loop, where the sync API raises.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, sync_playwright

from portal.config import REPOSITORY_ROOT
from tests.conftest import PASSWORD
from tests.helpers import CLINICIAN, DPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT_DIR = REPOSITORY_ROOT / "test-output" / "browser"

CLINIC_NAME = "Riverside Dermatology"
CLINIC_CONTACT = "+44 20 7946 0000"
STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
ACTION_TIMEOUT_MS = 15_000

# Console text that Chromium prints for a Content Security Policy violation.
CSP_PATTERN = re.compile(r"Content Security Policy|Refused to")

# Chromium requests /favicon.ico from every origin by itself. The portal serves no icon, so that 404 is
# expected, but a missing stylesheet, script or page image still counts as a problem.
FAVICON_MISSING = re.compile(r"status of 404 .*\[https?://[^/]+/favicon\.ico\]$")


@dataclass(frozen=True)
class PortalServer:
    """A portal process serving on 127.0.0.1, with its environment and log file."""

    base_url: str
    env: dict[str, str]
    log_path: Path


@dataclass
class Visitor:
    """One person's browser context: its own cookies and storage, one page, and what the console printed.

    Attributes:
        allowed_errors: patterns of console errors the test expects, e.g. the 400 status of a rejected form.
    """

    name: str
    context: BrowserContext
    page: Page
    shots: Screenshots
    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    allowed_errors: list[re.Pattern[str]] = field(default_factory=lambda: [FAVICON_MISSING])

    def shot(self, step: str) -> Path:
        """Save a full-page screenshot of the current page for this step."""
        return self.shots.take(self.page, f"{self.name}-{step}")

    def console_problems(self) -> list[str]:
        """Return CSP violations, uncaught JavaScript errors and unexpected console errors."""
        problems = [f"page error: {text}" for text in self.page_errors]
        for line in self.console:
            kind, _, text = line.partition(": ")
            if CSP_PATTERN.search(text):
                problems.append(f"CSP violation: {text}")
            elif kind == "error" and not any(pattern.search(text) for pattern in self.allowed_errors):
                problems.append(f"console error: {text}")
        return problems

    def assert_console_clean(self) -> None:
        problems = self.console_problems()
        assert not problems, f"{self.name}'s browser console reported problems:\n" + "\n".join(problems)

    def _on_console(self, message: ConsoleMessage) -> None:
        source = message.location.get("url") or "unknown source"
        self.console.append(f"{message.type}: {message.text} [{source}]")


@dataclass
class Screenshots:
    """Numbered full-page screenshots of one test, in its own folder under test-output/browser/."""

    folder: Path
    count: int = 0

    def take(self, page: Page, label: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def _free_port() -> int:
    # The server binds the port a moment after this socket closes. Another process could take it in
    # between, but on a test machine that is rare enough to accept.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_env(data_dir: Path, base_url: str) -> dict[str, str]:
    # Inherited PORTAL_* variables (a PostgreSQL URL, a key, debug mode) would change what is tested.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        {
            "PORTAL_DATA_DIR": str(data_dir),
            "PORTAL_DATABASE_URL": f"sqlite:///{data_dir / 'portal.db'}",
            "PORTAL_PUBLIC_URL": base_url,
            "PORTAL_CLINIC_NAME": CLINIC_NAME,
            "PORTAL_CLINIC_CONTACT": CLINIC_CONTACT,
        }
    )
    return env


def _add_staff(env: dict[str, str], email: str, role: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portal.cli", "users", "add", email, "--role", role, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"portal users add {email} failed ({result.returncode}):\n{result.stderr}"


def _log_tail(log_path: Path, lines: int = 30) -> str:
    return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    # An empty ProxyHandler keeps http_proxy settings from routing loopback requests elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"The portal exited with {process.returncode} during start-up. Log:\n{_log_tail(log_path)}"
            )
        try:
            with opener.open(f"{base_url}/access", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(
        f"The portal did not answer GET /access within {STARTUP_TIMEOUT_S:.0f} s. Log:\n{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)


@pytest.fixture(scope="module")
def portal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortalServer]:
    """Start ``portal serve`` on a free loopback port with a clinician and a DPO account, on SQLite."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = _server_env(tmp_path_factory.mktemp("portal") / "data", base_url)

    # The accounts exist before the server starts, as an operator would create them.
    _add_staff(env, CLINICIAN, "clinician")
    _add_staff(env, DPO, "dpo")

    log_path = OUTPUT_DIR / "server.log"
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
        yield PortalServer(base_url=base_url, env=env, log_path=log_path)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Launch Debian's Chromium headless, and fail (not skip) when it is missing, because CI installs it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing. Install Debian's Chromium with `apt-get install chromium`.")

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    folder = OUTPUT_DIR / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Screenshots(folder)


@pytest.fixture
def open_visitor(
    browser: Browser, portal_server: PortalServer, screenshots: Screenshots
) -> Iterator[Callable[[str], Visitor]]:
    """Return a function that opens a fresh browser context (no shared cookies or storage) per person."""
    visitors: list[Visitor] = []

    def open_one(name: str) -> Visitor:
        context = browser.new_context(base_url=portal_server.base_url, accept_downloads=True, locale="en-GB")
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.new_page()
        visitor = Visitor(name=name, context=context, page=page, shots=screenshots)
        page.on("console", visitor._on_console)
        page.on("pageerror", lambda error: visitor.page_errors.append(str(error)))
        visitors.append(visitor)
        return visitor

    yield open_one

    for visitor in visitors:
        # A context whose browser crashed cannot be closed, and the test has failed by then anyway.
        with contextlib.suppress(Error):
            visitor.context.close()


__all__ = ["CLINIC_NAME", "PortalServer", "Visitor"]
