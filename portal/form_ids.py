"""One-time form ids for forms whose response shows a secret once: share codes, invitation links, API tokens.

Such a page is the response to the POST, so a browser that reloads it sends the form again. Each of these
forms carries a hidden ``form_id``, drawn fresh whenever the page is rendered (the template global
``new_form_id``). The first send of an id counts it in the throttle table. A later send of the same id
creates nothing and gets the form's own error instead. A send whose action fails releases its id, so
the corrected form can be sent again.

A request without a ``form_id`` (API clients, pages rendered before the field existed) is not guarded
and creates as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from portal.core import Portal
from portal.errors import InvalidInput
from portal.security import throttle

# The counter's window. The check adds up every window of the id, so an id stays spent after the window
# ends (at midnight UTC) until ``portal purge`` deletes counters older than two days.
FORM_ID_WINDOW = dt.timedelta(days=1)
# new_form_id() draws 22 characters. A longer id is cut so that the bucket fits its column.
_MAX_FORM_ID_LENGTH = 64


class FormResent(InvalidInput):
    """The form with this id was sent before, so its action did not run again."""


@asynccontextmanager
async def sent_once(
    portal: Portal, form_id: str | None, bucket_prefix: str, message: str, field: str
) -> AsyncIterator[None]:
    """Run the block for the first send of ``form_id`` only.

    Raises:
        FormResent: with ``message`` on ``field`` when the id was sent before. The block does not run then.
    """
    if not form_id:
        yield
        return

    bucket = f"{bucket_prefix}:{form_id[:_MAX_FORM_ID_LENGTH]}"
    async with portal.transaction() as db:
        await throttle.hit(db, bucket, FORM_ID_WINDOW)
        sent_before = await throttle.total(db, bucket) > 1
    if sent_before:
        raise FormResent(message, field=field)

    try:
        yield
    except BaseException:
        async with portal.transaction() as db:
            await throttle.forget(db, bucket)
        raise
