"""E-mail notices to a share's creator: the share was opened for the first time, or it locked."""

from portal.notifications.mailer import (
    NOTICE_EVENTS,
    ShareNotice,
    build_message,
    notify_share_event,
    send_message,
    wait_for_notices,
)

__all__ = [
    "NOTICE_EVENTS",
    "ShareNotice",
    "build_message",
    "notify_share_event",
    "send_message",
    "wait_for_notices",
]
