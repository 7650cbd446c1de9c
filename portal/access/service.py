"""Redeeming access codes and serving the recipient's copy.

A code is spent by one conditional UPDATE, so concurrent redemptions of one code give one winner on
SQLite and PostgreSQL alike. Failed attempts count per share in the database, and the share locks at the
policy's limit. Every refusal looks the same to the recipient: unknown, wrong, expired, revoked, locked and
used-up codes raise the same AccessDenied after the same argon2 work. A share that asks for the date of birth
has its own refusal text, which names both checks and never says which one failed; every refusal of such a
share reads the same too.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from portal.access import batched
from portal.access.statements import (
    COUNT_DOWNLOAD,
    COUNT_FAILURE,
    DOWNLOAD_COMPLETED,
    DOWNLOAD_GIVEN_BACK,
    SHARE_BY_LOCATOR,
    SPEND_ONE,
    ShareToDownload,
    ShareToRedeem,
    share_to_redeem,
)
from portal.audit.recorder import Actor, record
from portal.core import Portal
from portal.errors import (
    AccessDenied,
    CodeMistyped,
    Forbidden,
    InvalidInput,
    SecondFactorNeeded,
    ShareUnavailable,
    TooManyRequests,
    UnprocessableInput,
)
from portal.i18n import N_, _
from portal.models import AuthSession, Share, utcnow
from portal.notifications import notify_share_event
from portal.pgbatch import BatchPool
from portal.security import codes, throttle
from portal.security.client import ip_prefix
from portal.security.hashing import CODE_HASHER, verify_secret
from portal.security.sessions import (
    load_session,
    needs_touch,
    session_id_hash,
    session_live,
    start_session,
)

FLOOD_WINDOW = dt.timedelta(minutes=1)

GENERIC_DENIAL = N_(
    "This code cannot be used. Check that you typed it exactly as printed. If it still does not work, it may "
    "have expired or been used already: contact the clinic that gave it to you."
)
# A share that asks for the date of birth is refused with this text instead, whichever check failed. Whether a
# share asks for it depends on the public locator alone, and the page has asked for it already.
BIRTH_DATE_DENIAL = N_(
    "The access code or the date of birth does not match. Check both against the letter from your clinic. "
    "If they still do not work, the code may have expired or been used already: contact the clinic that gave "
    "it to you."
)


def _denial(share: ShareToRedeem | None) -> AccessDenied:
    """Return the refusal for ``share``; every refusal of one share reads the same, whatever failed."""
    text = BIRTH_DATE_DENIAL if share is not None and share.second_factor_hash else GENERIC_DENIAL
    return AccessDenied(_(text), field="code")


@dataclass(frozen=True)
class Redemption:
    share: ShareToRedeem
    session_id: str


def _recipient(share_id: uuid.UUID | None, who: Actor) -> Actor:
    actor = f"recipient:{share_id}" if share_id else "recipient:unknown"
    return Actor(actor, who.ip_prefix, who.user_agent_family, who.request_id)


def parse_date_of_birth(text: str) -> str:
    """Normalise a typed date of birth to YYYY-MM-DD.

    Accepts YYYY-MM-DD, DD.MM.YYYY, DD/MM/YYYY and eight digits as DDMMYYYY, which a phone's number pad
    types. Eight digits that make no plausible DDMMYYYY date are read as YYYYMMDD; no string of eight digits
    is a plausible date both ways, because a plausible year puts 19 or 20 where the month would be.
    """
    typed = text.strip()
    candidates = [typed]
    for separator in (".", "/"):
        parts = typed.split(separator)
        if len(parts) == 3 and len(parts[2]) == 4:
            candidates = [f"{parts[2]}-{parts[1].zfill(2)}-{parts[0].zfill(2)}"]
            break
    if _EIGHT_DIGITS.fullmatch(typed):
        candidates = [f"{typed[4:]}-{typed[2:4]}-{typed[:2]}", typed]
    parsed = None
    for candidate in candidates:
        try:
            parsed = dt.date.fromisoformat(candidate)
        except ValueError:
            continue
        if _plausible(parsed):
            break
    if parsed is None:
        raise InvalidInput(
            _(
                "'{value}' is not a date. Enter the date of birth as day, month and year, for example "
                "31.12.1950 or 31121950."
            ).format(value=typed[:20]),
            field="date_of_birth",
        )
    if not _plausible(parsed):
        raise InvalidInput(_("The date of birth is not plausible. Check the year."), field="date_of_birth")
    return parsed.isoformat()


def parse_api_date_of_birth(text: str) -> str:
    """Normalise a date of birth sent to the API, which accepts YYYY-MM-DD only.

    Systems that send dates with the month first would otherwise create shares that the patient cannot open,
    so the API takes no day-first or digits-only form either.
    """
    typed = text.strip()
    try:
        if not _ISO_DATE.fullmatch(typed):
            raise ValueError(typed)
        parsed = dt.date.fromisoformat(typed)
    except ValueError:
        raise UnprocessableInput(
            _(
                "date_of_birth '{value}' is not a date in the form YYYY-MM-DD. Send it as, for example, 1950-12-31."
            ).format(value=typed[:20]),
            field="date_of_birth",
        ) from None
    if not _plausible(parsed):
        raise UnprocessableInput(
            _("date_of_birth '{value}' is not plausible. Send a date from 1900-01-01 up to today.").format(
                value=typed[:20]
            ),
            field="date_of_birth",
        )
    return parsed.isoformat()


_EIGHT_DIGITS = re.compile("[0-9]{8}")
_ISO_DATE = re.compile("[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _plausible(date: dt.date) -> bool:
    return dt.date(1900, 1, 1) <= date <= dt.date.today()


async def _find_share(
    portal: Portal, locator: str, client_address: str | None
) -> tuple[int, ShareToRedeem | None]:
    """Count this attempt against the client's address across all processes and read the share.

    Addresses count per IPv4 /32 and IPv6 /64; without an address nothing is counted and 0 is returned.
    The counter's name is an HMAC of the prefix, as for sign-in, so the table stores no client address.
    """
    prefix = ip_prefix(client_address, 32, 64)
    bucket = throttle.keyed_bucket("code", prefix, portal.keyring.secret("session")) if prefix else None
    window = throttle.window_start(utcnow(), FLOOD_WINDOW)
    if portal.batches is not None:
        return await batched.find_share(portal.batches, locator, bucket, window)
    async with portal.transaction() as db:
        attempts = await throttle.hit(db, bucket, FLOOD_WINDOW) if bucket is not None else 0
        share = share_to_redeem((await db.execute(SHARE_BY_LOCATOR, {"locator": locator})).mappings().first())
    return attempts, share


async def redeem(
    portal: Portal,
    who: Actor,
    entered: str,
    previous_session_id: str | None,
    *,
    date_of_birth: str | None = None,
    client_address: str | None = None,
) -> Redemption:
    """Spend one redemption of a code and start a fresh recipient session.

    A share whose profile asks for the date of birth is told apart by its public locator alone, before any
    secret is checked, so asking for the date reveals nothing about the secret part of the code.
    """
    if not entered.strip():
        raise CodeMistyped(
            _("Enter the access code from the letter or slip that the clinic gave you. No attempt was used up."),
            field="code",
        )
    try:
        code = codes.normalise(entered[:64])
    except codes.CodeFormatError:
        raise CodeMistyped(
            _(
                "This code is not quite right. Check each character against the letter from your clinic: "
                "the code has 20 characters in five groups. No attempt was used up."
            ),
            field="code",
        ) from None

    # The flood counter commits even when the attempt is refused: TooManyRequests is raised after the commit.
    attempts, share = await _find_share(portal, codes.locator_of(code), client_address)
    if attempts > portal.policies.security.attempts_per_ip_per_minute:
        raise TooManyRequests(_("Too many attempts from your connection. Wait one minute, then try again."))

    birth_date = parse_date_of_birth(date_of_birth) if date_of_birth and date_of_birth.strip() else None
    if share is not None and share.second_factor_hash and birth_date is None:
        raise SecondFactorNeeded(
            _("Enter your date of birth as well. The clinic asked for it to protect this report."),
            field="date_of_birth",
        )

    matches = await verify_secret(CODE_HASHER, share.code_hash if share else None, code)
    if share is not None and share.second_factor_hash:
        # Both checks always run, so a wrong date and a wrong code cost the same time and look the same.
        birth_matches = await verify_secret(CODE_HASHER, share.second_factor_hash, birth_date or "")
        matches = matches and birth_matches

    if share is None or not matches:
        await _count_failure(portal, who, share)
        raise _denial(share)

    return await _spend(portal, who, share, code, previous_session_id)


async def _spend(
    portal: Portal, who: Actor, share: ShareToRedeem, code_text: str, previous_session_id: str | None
) -> Redemption:
    policy = portal.policies.security
    now = utcnow()
    recipient = _recipient(share.id, who)
    session_options: dict[str, Any] = {
        "kind": "recipient",
        "subject_id": share.id,
        "idle": dt.timedelta(minutes=policy.recipient_idle_minutes),
        "absolute": dt.timedelta(minutes=policy.recipient_absolute_minutes),
        "ip_prefix": who.ip_prefix,
        "secret": codes.display(code_text) if share.copy_password_is_code else None,
    }
    events = batched.SpendEvents(
        redeemed={"event_type": "code.redeemed", "share_id": share.id, "purpose": share.purpose},
        failed={
            "event_type": "code.failed",
            "outcome": "failure",
            "share_id": share.id,
            "purpose": share.purpose,
            "details": {"reason": _unavailable_reason(share, now)},
        },
    )
    session_id: str | None = None
    if portal.batches is not None:
        spent, session_id = await batched.spend(
            portal.batches,
            recipient,
            share,
            now,
            batched.SessionRequest(previous_session_id, session_options),
            events,
        )
    else:
        async with portal.transaction() as db:
            spent = await db.scalar(
                SPEND_ONE, {"share_id": share.id, "expected_hash": share.code_hash, "now": now}
            )
            if spent is None:
                await record(db, recipient, **events.failed)
            else:
                session_id = await start_session(db, previous_id=previous_session_id, **session_options)
                await record(db, recipient, **events.redeemed)
    if spent is None or session_id is None:
        raise _denial(share)

    # After the commit: the first opening of this code tells the clinician, without delaying the recipient.
    if spent == 1:
        notify_share_event(portal, share.id, "opened")
    return Redemption(share=share, session_id=session_id)


def _unavailable_reason(share: ShareToRedeem, now: dt.datetime) -> str:
    if share.revoked_at is not None:
        return "revoked"
    if share.approval_required and share.approved_at is None:
        return "awaiting_approval"
    if share.not_before is not None and share.not_before > now:
        return "not_yet_open"
    if share.locked_at is not None:
        return "locked"
    if share.expires_at <= now:
        return "expired"
    return "used"


async def _count_failure(portal: Portal, who: Actor, share: ShareToRedeem | None) -> None:
    """Count a failed attempt against its share and record it.

    An unknown locator runs the same UPDATE against an id that matches nothing, so unknown and wrong codes do
    the same database work and take the same time.
    """
    limit = portal.policies.security.max_failed_attempts
    now = utcnow()
    share_id = share.id if share else uuid.uuid4()
    just_locked = False
    async with portal.transaction() as db:
        result = await db.execute(COUNT_FAILURE, {"share_id": share_id, "limit": limit, "now": now})
        counted = result.one_or_none()
        if share is None:
            await record(
                db, _recipient(None, who), "code.failed", outcome="failure", details={"reason": "unknown"}
            )
            return
        if counted is None:
            await record(
                db,
                _recipient(share.id, who),
                "code.failed",
                outcome="failure",
                share_id=share.id,
                purpose=share.purpose,
                details={"reason": "locked"},
            )
            return

        failures, locked_at = counted
        recipient = _recipient(share.id, who)
        await record(
            db,
            recipient,
            "code.failed",
            outcome="failure",
            share_id=share.id,
            purpose=share.purpose,
            details={"reason": "wrong_code", "failed_attempts": failures},
        )
        if failures == limit and locked_at is not None:
            await record(
                db, recipient, "code.locked", outcome="failure", share_id=share.id, purpose=share.purpose
            )
            just_locked = True

    if just_locked:
        notify_share_event(portal, share.id, "locked")


SESSION_ENDED = N_(
    "Your session has ended: it timed out, you closed the report, or the clinic withdrew it. "
    "If your access code can be used again, enter it; if not, ask the clinic for a new code."
)
REPORT_GONE = N_("This report is no longer available. Contact the clinic if you still need it.")


async def recipient_share(
    portal: Portal, db: AsyncSession, raw_session_id: str | None
) -> tuple[AuthSession, Share]:
    """Return the session and its share, or raise ShareUnavailable if either is no longer valid.

    Checked on every request, so revocation and expiry apply to sessions that are already open.
    """
    session = await load_session(db, kind="recipient", raw_id=raw_session_id)
    share = await db.get(Share, session.subject_id) if session else None
    if session is None or share is None:
        raise ShareUnavailable(_(SESSION_ENDED))
    if share.revoked_at is not None or share.expires_at <= utcnow():
        raise ShareUnavailable(_(REPORT_GONE))
    return session, share


def _check_download_allowed(allow_download: bool, copy_blob_id: str | None) -> str:
    """Return the copy's blob id, or raise Forbidden when the share allows viewing only."""
    if not allow_download or copy_blob_id is None:
        # The session is still valid and only this action is not, so the page is "Not allowed", not "gone".
        raise Forbidden(_("This report can be viewed but not downloaded."), code="download_not_allowed")
    return copy_blob_id


def _download_limit_reached() -> ShareUnavailable:
    return ShareUnavailable(
        _("The download limit for this report is reached. Contact the clinic if you need another copy."),
        code="download_limit_reached",
    )


def _download_started(share: ShareToDownload) -> dict[str, Any]:
    return {"event_type": "access.download.started", "share_id": share.id, "purpose": share.purpose}


async def start_download(
    portal: Portal, who: Actor, raw_session_id: str | None
) -> tuple[ShareToDownload, bytes]:
    """Count a download and record its start; return the share and the copy's data key."""
    if portal.batches is not None:
        return await _start_download_batched(portal, portal.batches, who, raw_session_id)

    async with portal.transaction() as db:
        _session, row = await recipient_share(portal, db, raw_session_id)
        blob_id = _check_download_allowed(row.allow_download, row.copy_blob_id)
        share = ShareToDownload(row.id, row.reference, row.purpose, blob_id)
        if await db.scalar(COUNT_DOWNLOAD, {"share_id": share.id}) is None:
            raise _download_limit_reached()
        data_key = await portal.blobs.data_key(db, blob_id)
        await record(db, _recipient(share.id, who), **_download_started(share))
    return share, data_key


async def _start_download_batched(
    portal: Portal, pool: BatchPool, who: Actor, raw_session_id: str | None
) -> tuple[ShareToDownload, bytes]:
    """Run ``start_download`` on PostgreSQL: the checks of ``recipient_share``, in order, on one read."""
    id_hash = session_id_hash(raw_session_id)
    row = await batched.read_download(pool, id_hash) if id_hash is not None else None
    now = utcnow()
    if (
        row is None
        or row["kind"] != "recipient"
        or not session_live(row["last_seen_at"], row["session_expires_at"], row["idle_seconds"], now)
        or row["id"] is None
    ):
        # The ORM path deletes a timed-out session and then rolls back with the refusal, so neither writes.
        raise ShareUnavailable(_(SESSION_ENDED))
    if row["revoked_at"] is not None or row["expires_at"] <= now:
        raise ShareUnavailable(_(REPORT_GONE))
    blob_id = _check_download_allowed(row["allow_download"], row["copy_blob_id"])
    share = ShareToDownload(row["id"], row["reference"], row["purpose"], blob_id)
    # Unwrapped before counting, so a copy without its key is rejected uncounted, as the ORM path rolls back.
    data_key = portal.blobs.unwrap_data_key(blob_id, row["kek_id"], row["wrapped_key"])

    touch = {"session_hash": id_hash, "now": now} if needs_touch(row["last_seen_at"], now) else None
    recipient = _recipient(share.id, who)
    if not await batched.count_download(pool, recipient, share.id, touch, _download_started(share)):
        raise _download_limit_reached()
    return share, data_key


async def finish_download(
    portal: Portal,
    who: Actor,
    share: ShareToDownload,
    completed: bool,
    sent_bytes: int,
    reason: str | None = None,
) -> None:
    """Record how a download ended; one cut short by a damaged stored copy is given back to the recipient."""
    details: dict[str, str | int | bool | None] = {"bytes": sent_bytes}
    if reason is not None:
        details["reason"] = reason
    change = None
    if completed:
        change = "completed"
    elif reason == "integrity_check_failed":
        change = "given_back"
    event: dict[str, Any] = {
        "event_type": "access.download.completed" if completed else "access.download.aborted",
        "outcome": "success" if completed else "failure",
        "share_id": share.id,
        "purpose": share.purpose,
        "details": details,
    }
    recipient = _recipient(share.id, who)
    if portal.batches is not None:
        await batched.finish_download(portal.batches, recipient, share.id, change, event)
        return

    async with portal.transaction() as db:
        if change is not None:
            statement = DOWNLOAD_COMPLETED if change == "completed" else DOWNLOAD_GIVEN_BACK
            await db.execute(statement, {"share_id": share.id})
        await record(db, recipient, **event)
