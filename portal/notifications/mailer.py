"""Sending share notices by SMTP, after the action's commit and outside the recipient's request.

A notice names the share reference and the event only: no patient reference, recipient name, document
title or code, because e-mail crosses systems the clinic does not control. Sending runs in a detached task
and smtplib runs in a worker thread, so a slow or failing mail relay never delays or fails the request that
caused the notice. Failures are logged with the share reference and the error type, without the message
text, which may echo addresses.

This module does not retry: a notice lost to a relay outage stays lost, and the dashboard still shows the
state. Mail goes over plain SMTP to the configured relay, which is expected to be the clinic's own.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import anyio
from sqlalchemy import select

from portal.config import Settings
from portal.core import Portal
from portal.models import Share, StaffUser, utcnow

log = logging.getLogger(__name__)

NOTICE_EVENTS = {
    "opened": "was opened",
    "locked": "locked after too many failed attempts",
}
SMTP_TIMEOUT_S = 10.0
_POLL_S = 0.02

# Detached tasks are kept here until they finish, because the event loop holds only weak references.
_pending: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class ShareNotice:
    """The content and address of one notice: the creator's address, the share reference and the event."""

    to: str
    reference: str
    event: str  # a key of NOTICE_EVENTS


def build_message(settings: Settings, notice: ShareNotice) -> EmailMessage:
    """Build the e-mail for one notice; it carries the share reference and the event, nothing else."""
    happened = NOTICE_EVENTS[notice.event]
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = notice.to
    message["Subject"] = f"Share {notice.reference} {happened}"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rsplit("@", 1)[-1])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Share {notice.reference} {happened} at {utcnow():%Y-%m-%d %H:%M} UTC.\n\n"
        f"Sign in to the portal to see its status: {settings.public_url}/staff\n"
    )
    return message


def send_message(settings: Settings, message: EmailMessage) -> None:
    """Send one message through the configured relay; blocking, so callers run it in a thread."""
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_S) as connection:
        connection.send_message(message)


def notify_share_event(portal: Portal, share_id: uuid.UUID, event: str) -> None:
    """Start sending the notice for ``event`` on a share in the background, and return at once.

    Call it after the transaction that recorded the event has committed. It does nothing when
    notifications are off (PORTAL_NOTIFY_EMAILS=false).
    """
    if event not in NOTICE_EVENTS:
        raise ValueError(f"unknown notice event {event!r}; use one of {sorted(NOTICE_EVENTS)}")
    if not portal.settings.notify_emails:
        return

    task = asyncio.get_running_loop().create_task(_deliver(portal, share_id, event))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def wait_for_notices(limit_s: float = 2 * SMTP_TIMEOUT_S) -> None:
    """Wait until the notices started so far are sent or have failed, e.g. before shutdown or in tests.

    It polls instead of awaiting the tasks, because a test client may run the app, and so the tasks, on
    another thread's event loop, and a task finishing there would not wake this loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while any(not task.done() for task in set(_pending)) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)


async def _deliver(portal: Portal, share_id: uuid.UUID, event: str) -> None:
    reference = "unknown"
    try:
        notice = await _notice_for(portal, share_id, event)
        if notice is None:
            return
        reference = notice.reference
        message = build_message(portal.settings, notice)
        await anyio.to_thread.run_sync(send_message, portal.settings, message)
        log.info("share notice sent", extra={"share_reference": reference, "event": event})
    except Exception as error:  # A notice must never break anything, so every failure is logged instead.
        log.warning(
            "share notice failed",
            extra={"share_reference": reference, "event": event, "error_type": type(error).__name__},
        )


async def _notice_for(portal: Portal, share_id: uuid.UUID, event: str) -> ShareNotice | None:
    async with portal.transaction() as db:
        row = (
            await db.execute(
                select(Share.reference, StaffUser.email, StaffUser.disabled_at)
                .join(StaffUser, StaffUser.id == Share.created_by)
                .where(Share.id == share_id)
            )
        ).one_or_none()
    if row is None or row.disabled_at is not None:
        return None
    return ShareNotice(to=row.email, reference=row.reference, event=event)
