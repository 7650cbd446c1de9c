"""One-time form ids: a form whose response shows a secret once carries a random ``form_id`` hidden field.
A browser that reloads the response sends the form again, and gets an error message instead of a second
secret.

The id is counted in the throttle table under ``<scope>-form:<id>``, in a transaction of its own that
commits before the action runs, so two sends racing each other see each other's count. The count lives in
a fixed one-day window, so a second send after the window's end (midnight UTC) is not recognised. A failed
action releases the id, so the corrected form can be sent again. A request without a form id (an older
page, a script) runs the action without the check.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

from portal.core import Portal
from portal.security import throttle

FORM_ID_LIFETIME = dt.timedelta(days=1)


class FormSentTwice(Exception):
    """The form with this id was sent before within FORM_ID_LIFETIME."""


@contextlib.asynccontextmanager
async def once_per_form_id(portal: Portal, scope: str, form_id: str | None) -> AsyncIterator[None]:
    """Run the body once per form id; raise FormSentTwice on a repeated send.

    An exception from the body releases the id and propagates.
    """
    bucket = f"{scope}-form:{form_id[:64]}" if form_id else None
    if bucket:
        async with portal.transaction() as db:
            sent_before = await throttle.hit(db, bucket, FORM_ID_LIFETIME) > 1
        if sent_before:
            raise FormSentTwice(scope)

    try:
        yield
    except BaseException:
        if bucket:
            async with portal.transaction() as db:
                await throttle.forget(db, bucket)
        raise
