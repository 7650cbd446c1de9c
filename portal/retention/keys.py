"""Key rotation: a new primary KEK, every data key re-wrapped under it, and retirement of old KEKs.

Portal processes that are running keep the key ring they loaded at start, so they go on wrapping new data
keys under the previous primary KEK until they restart. ``retire_kek`` therefore counts the data keys that
still use a KEK and rejects the retirement while any remain; ``rewrap_data_keys`` moves them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update

from portal.audit.recorder import SYSTEM, Actor, record
from portal.core import Portal
from portal.crypto.errors import KeyUnavailable, WrappedKeyInvalid
from portal.errors import PortalError
from portal.models import DataKey

REWRAP_BATCH = 500


class KeyFileUnavailable(PortalError):
    """The key ring was loaded from the environment, so there is no key file to change."""

    status_code = 409
    code = "key_file_unavailable"


class KekStillInUse(PortalError):
    status_code = 409
    code = "kek_in_use"


@dataclass(frozen=True)
class Rewrap:
    """Data keys moved to the primary KEK, and those that could not be unwrapped."""

    kek_id: str
    rewrapped: int
    unreadable: int


async def rotate_keys(portal: Portal, who: Actor = SYSTEM) -> Rewrap:
    """Add a new primary KEK to the key file, re-wrap every data key under it, record ``key.rotated``.

    Raises:
        KeyFileUnavailable: the key ring comes from ``PORTAL_KEK`` rather than a file.
    """
    key_file = _key_file(portal)
    previous = portal.keyring.primary_kek_id
    kek_id = await asyncio.to_thread(portal.keyring.rotate, key_file)

    result = await rewrap_data_keys(portal)
    async with portal.transaction() as db:
        await record(
            db,
            who,
            "key.rotated",
            details={
                "kek_id": kek_id,
                "previous_kek_id": previous,
                "rewrapped": result.rewrapped,
                "unreadable": result.unreadable,
            },
        )
    return result


async def rewrap_data_keys(portal: Portal) -> Rewrap:
    """Re-wrap every data key not under the primary KEK, ``REWRAP_BATCH`` rows per transaction.

    A data key that cannot be unwrapped (its KEK is retired or unknown, or the row is damaged) is left as
    it is and counted as unreadable, because its blob was unreadable before.
    """
    keyring = portal.keyring
    primary = keyring.primary_kek_id
    rewrapped = unreadable = 0
    after = ""

    while True:
        async with portal.transaction() as db:
            rows = list(
                (
                    await db.execute(
                        select(DataKey.blob_id, DataKey.kek_id, DataKey.wrapped_key)
                        .where(DataKey.kek_id != primary, DataKey.blob_id > after)
                        .order_by(DataKey.blob_id)
                        .limit(REWRAP_BATCH)
                    )
                ).all()
            )
            for row in rows:
                try:
                    kek_id, wrapped = keyring.rewrap(row.kek_id, row.wrapped_key)
                except (KeyUnavailable, WrappedKeyInvalid):
                    unreadable += 1
                    continue
                # The condition skips a key shredded or re-wrapped by another process since the select.
                changed = await db.execute(
                    update(DataKey)
                    .where(DataKey.blob_id == row.blob_id, DataKey.kek_id == row.kek_id)
                    .values(kek_id=kek_id, wrapped_key=wrapped)
                    .returning(DataKey.blob_id)
                )
                rewrapped += len(changed.all())
        if len(rows) < REWRAP_BATCH:
            return Rewrap(kek_id=primary, rewrapped=rewrapped, unreadable=unreadable)
        after = rows[-1].blob_id


async def data_keys_under(portal: Portal, kek_id: str) -> int:
    """Return how many data keys are wrapped under ``kek_id``."""
    async with portal.transaction() as db:
        count = await db.scalar(select(func.count()).select_from(DataKey).where(DataKey.kek_id == kek_id))
    return int(count or 0)


async def retire_kek(portal: Portal, kek_id: str) -> None:
    """Delete a KEK's key material from the key file, once no data key uses it.

    Raises:
        KekStillInUse: data keys are still wrapped under ``kek_id``.
        KeyFileUnavailable: the key ring comes from ``PORTAL_KEK`` rather than a file.
        KeyUnavailable: the id is unknown or retired already.
        KeyRingError: the id is the primary KEK.
    """
    key_file = _key_file(portal)
    remaining = await data_keys_under(portal, kek_id)
    if remaining:
        raise KekStillInUse(
            f"KEK {kek_id!r} still wraps {remaining} data key(s), which retiring it would make unreadable. "
            "Restart every portal process so it loads the new primary KEK, run 'portal keys rewrap', then "
            "retire again."
        )
    await asyncio.to_thread(portal.keyring.retire, key_file, kek_id)
    async with portal.transaction() as db:
        await record(db, SYSTEM, "key.retired", details={"kek_id": kek_id})


def _key_file(portal: Portal) -> Path:
    settings = portal.settings
    if settings.kek_env:
        raise KeyFileUnavailable(
            "The key ring comes from PORTAL_KEK, which this command cannot change. Rotate a copy of the key "
            "file with PORTAL_KEK_FILE pointing at it, then update PORTAL_KEK with the new content."
        )
    return Path(settings.kek_file)
