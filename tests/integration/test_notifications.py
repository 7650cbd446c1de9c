"""E-mail notices to a share's creator, delivered to a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.app import create_app
from portal.config import ConfigError, Settings
from portal.notifications import notify_share_event, wait_for_notices
from portal.security import codes
from tests.conftest import BASE_URL, make_settings
from tests.helpers import CLINICIAN, issue_share, portal_of, redeem

RECIPIENT = "Zoë Łukasiewicz"
PATIENT_REF = "PAT-0042"
DELIVERY_TIMEOUT_S = 5.0


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.accept_delay_s = 0.0  # a slow relay, for tests of what waits for delivery

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.accept_delay_s)
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def notify_settings(tmp_path: Path, database_url: str, port: int) -> Settings:
    return make_settings(
        tmp_path / "data",
        database_url,
        PORTAL_NOTIFY_EMAILS="true",
        PORTAL_SMTP_HOST="127.0.0.1",
        PORTAL_SMTP_PORT=str(port),
        PORTAL_SMTP_FROM="portal@riverside.test",
    )


@pytest.fixture
async def notifying_client(
    tmp_path: Path, database_url: str, smtp_server: tuple[Inbox, int]
) -> AsyncIterator[tuple[Litestar, AsyncTestClient[Litestar]]]:
    app = create_app(notify_settings(tmp_path, database_url, smtp_server[1]), pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        yield app, client


async def received(inbox: Inbox, count: int) -> list[tuple[list[str], Message]]:
    await wait_for_notices()
    for _attempt in range(50):
        if len(inbox.messages) >= count:
            break
        await asyncio.sleep(DELIVERY_TIMEOUT_S / 50)
    return [(to, message_from_bytes(raw)) for to, raw in inbox.messages]


async def test_opened_notice_names_reference_only(
    notifying_client: tuple[Litestar, AsyncTestClient[Litestar]], smtp_server: tuple[Inbox, int]
) -> None:
    app, client = notifying_client
    _headers, share = await issue_share(app, client, recipient_name=RECIPIENT)
    code = share["access_code"]
    opened = await redeem(client, code)
    assert str(opened.url).endswith("/access/share")

    # The redemption itself sends the notice, after its transaction commits.
    messages = await received(smtp_server[0], 1)
    assert len(messages) == 1
    to, message = messages[0]
    assert to == [CLINICIAN]
    assert message["Subject"] == f"Share {share['reference']} was opened"

    raw = smtp_server[0].messages[0][1].decode("utf-8", "replace")
    for secret in (RECIPIENT, "Łukasiewicz", code, codes.normalise(code), PATIENT_REF, "Wound healing"):
        assert secret not in raw, f"the notice carries {secret!r}"


async def test_locked_notice_sent(
    notifying_client: tuple[Litestar, AsyncTestClient[Litestar]], smtp_server: tuple[Inbox, int]
) -> None:
    app, client = notifying_client
    _headers, share = await issue_share(app, client)
    locator = codes.locator_of(codes.normalise(share["access_code"]))
    for _attempt in range(5):
        assert (await redeem(client, codes.display(codes.with_locator(locator)))).status_code == 400

    # The fifth failure locks the share and sends the notice, once.
    messages = await received(smtp_server[0], 1)
    assert [message["Subject"] for _to, message in messages] == [
        f"Share {share['reference']} locked after too many failed attempts"
    ]


async def test_relay_down_is_logged_only(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(notify_settings(tmp_path, database_url, free_port()), pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        _headers, share = await issue_share(app, client, recipient_name=RECIPIENT)
        with caplog.at_level(logging.WARNING, logger="portal.notifications.mailer"):
            notify_share_event(portal_of(app), uuid.UUID(share["id"]), "opened")
            await wait_for_notices()
        assert (await client.get("/access")).status_code == 200

    failures = [record for record in caplog.records if record.getMessage() == "share notice failed"]
    assert len(failures) == 1
    assert failures[0].__dict__["error_type"] == "ConnectionRefusedError"
    assert RECIPIENT not in caplog.text


async def test_off_by_default(
    app: Litestar, client: AsyncTestClient[Litestar], smtp_server: tuple[Inbox, int]
) -> None:
    _headers, share = await issue_share(app, client)
    notify_share_event(portal_of(app), uuid.UUID(share["id"]), "opened")
    await wait_for_notices()
    assert smtp_server[0].messages == []


def test_settings_fail_closed(tmp_path: Path) -> None:
    base = {
        "PORTAL_DATA_DIR": str(tmp_path),
        "PORTAL_NOTIFY_EMAILS": "true",
        "PORTAL_SMTP_FROM": "portal@x.test",
    }
    with pytest.raises(ConfigError, match="PORTAL_SMTP_HOST"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="PORTAL_SMTP_FROM"):
        Settings.from_env({**base, "PORTAL_SMTP_HOST": "127.0.0.1", "PORTAL_SMTP_FROM": "Portal <p@x.test>"})
    with pytest.raises(ConfigError, match="PORTAL_SMTP_PORT"):
        Settings.from_env({**base, "PORTAL_SMTP_HOST": "127.0.0.1", "PORTAL_SMTP_PORT": "0"})
    with pytest.raises(ConfigError, match="PORTAL_NOTIFY_EMAILS"):
        Settings.from_env({"PORTAL_DATA_DIR": str(tmp_path), "PORTAL_NOTIFY_EMAILS": "yes"})


async def test_shutdown_sends_pending_notice(
    tmp_path: Path, database_url: str, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    inbox.accept_delay_s = 1.0
    app = create_app(notify_settings(tmp_path, database_url, port), pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as client:
        _headers, share = await issue_share(app, client)
        # The first opening of the code starts the "opened" notice in the background.
        assert (await redeem(client, share["access_code"])).status_code == 200
    # Leaving the client shuts the app down, which waits for the slow relay instead of dropping the notice.
    assert len(inbox.messages) == 1
