"""Creating, reading and revoking shares; the recipient copy is prepared when the share is created."""

from __future__ import annotations

import datetime as dt
import secrets
import unicodedata
import uuid
import zoneinfo
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.access.service import parse_date_of_birth
from portal.audit.recorder import Actor, record
from portal.blobs import StagedBlob
from portal.core import Portal
from portal.crypto.marker import encode_marker
from portal.crypto.pseudonym import pseudonymise
from portal.documents.service import clean_text, load_document
from portal.errors import InvalidInput, NotFound, UploadRejected
from portal.i18n import (
    DEFAULT_LANGUAGE,
    SUPPORTED_LANGUAGES,
    _,
    clinic_time_text,
    language_var,
    supported,
    using_language,
)
from portal.models import Document, Share, ShareDocument, StaffUser, utcnow
from portal.pdf import fonts
from portal.pdf.errors import PdfRejected
from portal.pdf.pipeline import DEFAULT_FOOTER, CopyRequest
from portal.policies import Profile
from portal.security import codes
from portal.security.hashing import CODE_HASHER, hash_secret
from portal.security.sessions import end_sessions_of

MAX_DOCUMENTS_PER_SHARE = 10
_LOCATOR_ATTEMPTS = 5
# How far ahead a share's start ("not before") may lie; the profile's lifetime counts from that start.
MAX_START_DELAY = dt.timedelta(days=30)
# A start time up to this far in the past counts as "now"; an older one is most likely a mistyped date.
PAST_START_SLACK = dt.timedelta(hours=24)


@dataclass(frozen=True)
class ShareForm:
    document_ids: list[uuid.UUID]
    profile: Profile
    recipient_name: str
    purpose: str
    date_of_birth: str | None = None  # YYYY-MM-DD, only for profiles that ask for it
    recipient_org: str | None = None
    expiry_days: int | None = None  # None: the profile's expiry_days, which is also the maximum
    max_downloads: int | None = None  # None: the profile's max_downloads, which is also the maximum
    not_before: dt.datetime | None = None  # aware UTC; the code works from then on
    language: str = DEFAULT_LANGUAGE  # of the slip and the watermark's footer


@dataclass(frozen=True)
class IssuedShare:
    share: Share
    code: str  # canonical form; shown once, never stored

    @property
    def printed_code(self) -> str:
        return codes.display(self.code)


def parse_share_form(
    portal: Portal,
    document_ids: list[str],
    profile: str | None,
    recipient_name: str | None,
    purpose: str | None,
    date_of_birth: str | None = None,
    *,
    recipient_org: str | None = None,
    expiry_days: str | int | None = None,
    max_downloads: str | int | None = None,
    not_before: str | None = None,
    language: str | None = None,
) -> ShareForm:
    """Validate a share request; expiry and downloads may only go down from the profile's values.

    Without a ``language`` the recipient gets the language of the request that creates the share.
    """
    if not document_ids:
        raise InvalidInput(
            _("No document chosen. Choose at least one report to share."), field="document_ids"
        )
    if len(document_ids) > MAX_DOCUMENTS_PER_SHARE:
        raise InvalidInput(
            _("Too many documents ({count}). A share holds at most {max}.").format(
                count=len(document_ids), max=MAX_DOCUMENTS_PER_SHARE
            ),
            field="document_ids",
        )

    parsed_ids: list[uuid.UUID] = []
    for value in document_ids:
        try:
            parsed_ids.append(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidInput(
                _("Document id '{value}' is invalid. Use the id returned by the upload.").format(
                    value=str(value)[:40]
                ),
                field="document_ids",
            ) from None
    if len(set(parsed_ids)) != len(parsed_ids):
        raise InvalidInput(_("A document is listed twice. List each document once."), field="document_ids")

    if not profile:
        raise InvalidInput(
            _("No recipient profile chosen. Use one of: {choices}.").format(
                choices=", ".join(portal.policies.profiles)
            ),
            field="profile",
        )
    chosen = portal.policies.profiles.get(profile)
    if chosen is None:
        raise InvalidInput(
            _("Profile '{value}' is unknown. Use one of: {choices}.").format(
                value=(profile or "")[:40], choices=", ".join(portal.policies.profiles)
            ),
            field="profile",
        )
    birth_date = None
    if chosen.second_factor == "date_of_birth":
        if not date_of_birth or not date_of_birth.strip():
            raise InvalidInput(
                _("The profile '{profile}' asks the recipient for their date of birth. Enter it.").format(
                    profile=_(chosen.label)
                ),
                field="date_of_birth",
            )
        birth_date = parse_date_of_birth(date_of_birth)

    organisation = (recipient_org or "").strip()
    name = clean_text(recipient_name, "recipient_name", _("Recipient name"), 120)
    check_printable_name(name)
    if organisation:
        organisation = clean_text(organisation, "recipient_org", _("Organisation"), 200)
        check_printable_organisation(organisation)
    return ShareForm(
        document_ids=parsed_ids,
        profile=chosen,
        recipient_name=name,
        purpose=clean_text(purpose, "purpose", _("Purpose"), 200),
        date_of_birth=birth_date,
        recipient_org=organisation or None,
        expiry_days=_limit_below(expiry_days, "expiry_days", _("Expiry (days)"), 1, chosen.expiry_days),
        max_downloads=_downloads_limit(max_downloads, chosen),
        not_before=_parse_not_before(not_before, portal.settings.timezone),
        language=_recipient_language(language),
    )


def check_printable_name(name: str) -> None:
    """Reject a recipient name with characters that the copy's font cannot draw.

    The name is printed on every page of the copy and on the slip. A character drawn as "?" would leave a
    copy that cannot be traced to its recipient.
    """
    message = _(
        "The name {value} has characters that cannot be printed on the copy: {characters}. Enter the name in "
        "Latin letters, as on the recipient's ID."
    )
    _check_printable(name, message, field="recipient_name")


def check_printable_organisation(organisation: str) -> None:
    """Reject an organisation with characters that the slip's font cannot draw."""
    message = _(
        "The organisation {value} has characters that cannot be printed on the slip: {characters}. Enter it "
        "in Latin letters."
    )
    _check_printable(organisation, message, field="recipient_org")


def _check_printable(value: str, message: str, *, field: str | None = None, reference: str = "") -> None:
    """Raise InvalidInput with ``message`` (translated, with {value} and {characters}) if ``value`` cannot be drawn."""
    missing = fonts.unprintable(value)
    if missing:
        raise InvalidInput(
            message.format(value=value, characters=_listed(missing), reference=reference), field=field
        )


def _listed(characters: list[str]) -> str:
    """List characters for a message; one that shows nothing by itself is named by its code point."""
    return ", ".join(
        f"U+{ord(char):04X}" if unicodedata.category(char)[0] in "CMZ" else char for char in characters
    )


def _recipient_language(value: str | None) -> str:
    text = (value or "").strip()
    if not text:
        return language_var.get()
    language = supported(text)
    if language is None:
        raise InvalidInput(
            _("Language '{value}' is not available. Use one of: {choices}.").format(
                value=text[:20], choices=", ".join(SUPPORTED_LANGUAGES)
            ),
            field="language",
        )
    return language


def _limit_below(value: str | int | None, field: str, label: str, minimum: int, maximum: int) -> int | None:
    """Parse an optional whole number that may lower a policy value but never raise it."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    digits = text.removeprefix("-")
    if not digits.isdigit() or len(digits) > 6:
        raise InvalidInput(
            _("{label} '{value}' is not a whole number. Enter a number from {min} to {max}.").format(
                label=label, value=text[:20], min=minimum, max=maximum
            ),
            field=field,
        )
    number = int(text)
    if number > maximum:
        raise InvalidInput(
            _("{label} {value} is above the profile's maximum of {max}. Enter {max} or less.").format(
                label=label, value=number, max=maximum
            ),
            field=field,
        )
    if number < minimum:
        raise InvalidInput(
            _("{label} {value} is below {min}. Enter a number from {min} to {max}.").format(
                label=label, value=number, min=minimum, max=maximum
            ),
            field=field,
        )
    return number


def _downloads_limit(value: str | int | None, profile: Profile) -> int | None:
    if not profile.allow_download:
        # A view-only profile allows no download, so there is nothing to lower.
        return _limit_below(value, "max_downloads", _("Downloads"), 0, 0)
    return _limit_below(value, "max_downloads", _("Downloads"), 1, profile.max_downloads)


def _parse_not_before(value: str | None, timezone: str) -> dt.datetime | None:
    """Parse an optional start time (YYYY-MM-DDTHH:MM, as a datetime-local field sends it) as UTC.

    A time without an offset is the clinic's local time in ``timezone``.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            _("Start time '{value}' is invalid. Use the form YYYY-MM-DD HH:MM.").format(value=text[:25]),
            field="not_before",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zoneinfo.ZoneInfo(timezone))
    moment = moment.astimezone(dt.UTC)

    now = utcnow()
    if moment < now - PAST_START_SLACK:
        raise InvalidInput(
            _("Start time {value} is in the past. Leave the field empty to start now, or enter a later time.").format(
                value=clinic_time_text(moment, timezone)
            ),
            field="not_before",
        )
    if moment <= now:
        # A start less than a day ago means "now": the form may have been filled in a while ago.
        return None
    if moment > now + MAX_START_DELAY:
        raise InvalidInput(
            _("Start time {value} is more than {days} days ahead. Choose an earlier start.").format(
                value=clinic_time_text(moment, timezone), days=MAX_START_DELAY.days
            ),
            field="not_before",
        )
    return moment


def _share_reference() -> str:
    return "S-" + "".join(secrets.choice(codes.ALPHABET) for _ in range(8))


async def create_share(portal: Portal, who: Actor, creator: StaffUser, form: ShareForm) -> IssuedShare:
    """Create a share with a new access code and its prepared, encrypted recipient copy."""
    try:
        documents = [await load_document(portal, document_id) for document_id in form.document_ids]
    except NotFound as error:
        error.field = "document_ids"
        raise
    if len({document.patient_pseudonym for document in documents}) > 1:
        raise InvalidInput(
            _("The chosen reports belong to different patients. A share holds reports of one patient only."),
            field="document_ids",
        )
    profile = form.profile

    share_id = uuid.uuid4()
    reference = _share_reference()
    code = await _unused_code(portal)
    now = utcnow()
    # The lifetime counts from the start, so a share scheduled for later still gets its full window.
    starts_at = max(now, form.not_before) if form.not_before else now
    lifetime_days = form.expiry_days or profile.expiry_days

    copy_bytes = await _prepare_copy(
        portal,
        documents,
        form.profile,
        form.recipient_name,
        share_id,
        reference,
        code,
        now.date(),
        language=form.language,
    )
    code_hash = await hash_secret(CODE_HASHER, code)
    birth_date_hash = await hash_secret(CODE_HASHER, form.date_of_birth) if form.date_of_birth else None

    staged: StagedBlob | None = None
    try:
        staged = await portal.blobs.stage("copy", copy_bytes)
        share = Share(
            id=share_id,
            reference=reference,
            profile=profile.name,
            recipient_name=form.recipient_name,
            recipient_org=form.recipient_org,
            language=form.language,
            purpose=form.purpose,
            created_by=creator.id,
            created_at=now,
            not_before=form.not_before,
            expires_at=starts_at + dt.timedelta(days=lifetime_days),
            lifetime_days=lifetime_days,
            max_redemptions=profile.max_redemptions,
            allow_view=profile.allow_view,
            allow_download=profile.allow_download,
            max_downloads=profile.max_downloads if form.max_downloads is None else form.max_downloads,
            code_locator=codes.locator_of(code),
            code_hash=code_hash,
            second_factor_hash=birth_date_hash,
            copy_blob_id=staged.blob_id,
            copy_password_is_code=profile.pdf_password == "code",  # noqa: S105 - a mode name, not a password
            approval_required=profile.requires_approval,
            documents=[
                ShareDocument(document_id=document.id, position=index)
                for index, document in enumerate(documents)
            ],
        )
        await _insert_share(portal, who, share, documents, staged)
    except BaseException:
        await portal.blobs.discard(staged)
        raise
    return IssuedShare(share=share, code=code)


async def _prepare_copy(
    portal: Portal,
    documents: list[Document],
    profile: Profile,
    recipient_name: str,
    share_id: uuid.UUID,
    reference: str,
    code: str,
    issued_on: dt.date,
    *,
    language: str,
) -> bytes:
    # Keys are read in a short transaction and the bytes after it: the database blob store reads on its own
    # connection, which would wait for this transaction's SQLite write lock.
    async with portal.transaction() as db:
        keys = [await portal.blobs.data_key(db, document.blob_id or "") for document in documents]
    originals = [
        await portal.blobs.read_with_key(document.blob_id or "", key)
        for document, key in zip(documents, keys, strict=True)
    ]

    request = CopyRequest(
        documents=originals,
        recipient_name=recipient_name,
        share_reference=reference,
        issued_on=issued_on,
        marker=encode_marker(portal.keyring.secret("marker"), share_id),
        user_password=codes.display(code) if profile.pdf_password == "code" else None,  # noqa: S105 - a mode name
        allow_print=profile.allow_print,
        allow_copy=profile.allow_copy,
        footer=_footer_in(language),
    )
    try:
        return await portal.pdf.prepare_copy(request)
    except PdfRejected as rejection:
        raise UploadRejected(rejection.message, code=rejection.code) from None


async def _unused_code(portal: Portal) -> str:
    """Return a new code whose public locator no share uses yet.

    The locator has 25 bits, so collisions are rare. One that slips in between this check and the insert
    fails the unique constraint, and the clinician is asked to try again.
    """
    for _attempt in range(_LOCATOR_ATTEMPTS):
        code = codes.generate_code()
        async with portal.transaction() as db:
            taken = await db.scalar(select(Share.id).where(Share.code_locator == codes.locator_of(code)))
        if taken is None:
            return code
    raise InvalidInput(_("No free access code could be found. Try again in a moment."))


_LOCATOR_TAKEN = "Another share took the same access code at the same moment. Try again."


async def _insert_share(
    portal: Portal, who: Actor, share: Share, documents: list[Document], staged: StagedBlob
) -> None:
    try:
        async with portal.transaction() as db:
            db.add_all(staged.rows())
            await db.flush()
            db.add(share)
            await db.flush()
            for document in documents:
                await record(
                    db,
                    who,
                    "share.created",
                    share_id=share.id,
                    document_id=document.id,
                    patient_pseudonym=document.patient_pseudonym,
                    purpose=share.purpose,
                    details={
                        "profile": share.profile,
                        "expires_at": share.expires_at.isoformat(),
                        "not_before": share.not_before.isoformat() if share.not_before else None,
                        "max_downloads": share.max_downloads,
                        "approval_required": share.approval_required,
                    },
                )
    except IntegrityError:
        raise InvalidInput(_(_LOCATOR_TAKEN)) from None


async def load_share(portal: Portal, share_id: str | uuid.UUID) -> Share:
    """Return the share with this id, or with this reference (``S-7K3M9QXA``, as printed on the slip)."""
    key: uuid.UUID | None = None
    reference: str | None = None
    try:
        key = share_id if isinstance(share_id, uuid.UUID) else uuid.UUID(str(share_id))
    except ValueError:
        reference = str(share_id).strip().upper()
    async with portal.transaction() as db:
        if key is not None:
            share = await db.get(Share, key)
        else:
            share = await db.scalar(select(Share).where(Share.reference == reference))
    if share is None:
        raise NotFound(_("Share {value} was not found.").format(value=key or str(share_id)[:40]))
    return share


def share_status(share: Share, now: dt.datetime | None = None) -> str:
    """Return the state shown to clinicians: revoked, awaiting_approval, locked, expired, downloaded, opened or issued."""
    moment = now or utcnow()
    if share.revoked_at is not None:
        return "revoked"
    if share.approval_required and share.approved_at is None:
        return "awaiting_approval"
    if share.locked_at is not None:
        return "locked"
    if share.expires_at <= moment:
        return "expired"
    if share.downloads_completed > 0:
        return "downloaded"
    if share.redemptions > 0:
        return "opened"
    return "issued"


def share_summary(share: Share) -> dict[str, object]:
    return {
        "id": str(share.id),
        "reference": share.reference,
        "profile": share.profile,
        "status": share_status(share),
        "created_at": share.created_at.isoformat(),
        "expires_at": share.expires_at.isoformat(),
        "not_before": share.not_before.isoformat() if share.not_before else None,
        "recipient_org": share.recipient_org,
        "revoked_at": share.revoked_at.isoformat() if share.revoked_at else None,
        "locked_at": share.locked_at.isoformat() if share.locked_at else None,
        "first_opened_at": share.first_opened_at.isoformat() if share.first_opened_at else None,
        "redemptions": share.redemptions,
        "max_redemptions": share.max_redemptions,
        "downloads_started": share.downloads_started,
        "downloads_completed": share.downloads_completed,
        "max_downloads": share.max_downloads,
        "failed_attempts": share.failed_attempts,
        "approval_required": share.approval_required,
        "approved_at": share.approved_at.isoformat() if share.approved_at else None,
        "document_ids": [str(link.document_id) for link in share.documents],
    }


async def revoke_share(portal: Portal, who: Actor, share_id: uuid.UUID) -> Share:
    """Revoke a share; its open recipient sessions end with it."""
    async with portal.transaction() as db:
        share = await db.get(Share, share_id)
        if share is None:
            raise NotFound(_("Share {value} was not found.").format(value=share_id))
        if share.revoked_at is None:
            await db.execute(update(Share).where(Share.id == share_id).values(revoked_at=utcnow()))
            await end_sessions_of(db, kind="recipient", subject_id=share_id)
            await record(db, who, "share.revoked", share_id=share_id, purpose=share.purpose)
        await db.refresh(share)
    return share


async def shares_for_document(db: AsyncSession, document_id: uuid.UUID) -> list[Share]:
    query = (
        select(Share)
        .join(ShareDocument, ShareDocument.share_id == Share.id)
        .where(ShareDocument.document_id == document_id)
        .order_by(Share.created_at.desc())
    )
    return list((await db.scalars(query)).all())


async def reissue_share(portal: Portal, who: Actor, share_id: uuid.UUID) -> IssuedShare:
    """Replace a share's code and copy; the old code and copy stop working at once.

    The counters start again (a locked share is unlocked), and open recipient sessions end. The expiry
    restarts from now with the lifetime chosen at creation, capped by the profile's current one. The old
    copy's data key is destroyed in the same transaction.
    """
    share = await load_share(portal, share_id)
    if share.revoked_at is not None:
        raise InvalidInput(
            _("Share {reference} is revoked. Create a new share instead.").format(reference=share.reference)
        )
    profile = portal.policies.profiles.get(share.profile)
    if profile is None:
        raise InvalidInput(
            _("Profile '{profile}' no longer exists in the policy. Create a new share instead.").format(
                profile=share.profile
            )
        )
    # A share stored before names were checked may carry one: its new copy would show "?" in its place.
    name_message = _(
        "Share {reference} cannot be reissued: the name {value} has characters that cannot be printed on the "
        "copy: {characters}. Create a new share with the name in Latin letters, as on the recipient's ID."
    )
    _check_printable(share.recipient_name, name_message, reference=share.reference)
    organisation_message = _(
        "Share {reference} cannot be reissued: the organisation {value} has characters that cannot be printed "
        "on the slip: {characters}. Create a new share with it in Latin letters."
    )
    _check_printable(share.recipient_org or "", organisation_message, reference=share.reference)
    documents = [await load_document(portal, link.document_id) for link in share.documents]

    code = await _unused_code(portal)
    now = utcnow()
    lifetime_days = reissue_lifetime_days(share, profile)
    copy_bytes = await _prepare_copy(
        portal,
        documents,
        profile,
        share.recipient_name,
        share.id,
        share.reference,
        code,
        now.date(),
        language=share.language,
    )
    code_hash = await hash_secret(CODE_HASHER, code)

    staged: StagedBlob | None = None
    old_blob_id = share.copy_blob_id
    try:
        staged = await portal.blobs.stage("copy", copy_bytes)
        await _swap_code(portal, who, share, staged, code, code_hash, now + dt.timedelta(days=lifetime_days))
    except BaseException:
        await portal.blobs.discard(staged)
        raise

    if old_blob_id:
        await portal.blobs.delete_bytes(old_blob_id)
    return IssuedShare(share=await load_share(portal, share.id), code=code)


def _footer_in(language: str) -> str:
    with using_language(language):
        return _(DEFAULT_FOOTER)


def reissue_lifetime_days(share: Share, profile: Profile | None) -> int:
    """Return the days a reissued code works: the share's chosen lifetime, capped by the profile's current one."""
    if profile is None:
        return share.lifetime_days or 0
    return min(share.lifetime_days or profile.expiry_days, profile.expiry_days)


async def _swap_code(
    portal: Portal,
    who: Actor,
    share: Share,
    staged: StagedBlob,
    code: str,
    code_hash: str,
    expires_at: dt.datetime,
) -> None:
    try:
        async with portal.transaction() as db:
            db.add_all(staged.rows())
            await db.flush()
            await db.execute(
                update(Share)
                .where(Share.id == share.id)
                .values(
                    code_locator=codes.locator_of(code),
                    code_hash=code_hash,
                    copy_blob_id=staged.blob_id,
                    failed_attempts=0,
                    locked_at=None,
                    redemptions=0,
                    downloads_started=0,
                    downloads_completed=0,
                    expires_at=expires_at,
                    expired_recorded_at=None,
                    reissue_count=Share.reissue_count + 1,
                )
            )
            if share.copy_blob_id:
                await portal.blobs.shred(db, share.copy_blob_id)
            await end_sessions_of(db, kind="recipient", subject_id=share.id)
            await record(db, who, "share.reissued", share_id=share.id, purpose=share.purpose)
    except IntegrityError:
        raise InvalidInput(_(_LOCATOR_TAKEN)) from None


async def approve_share(portal: Portal, who: Actor, approver: StaffUser, share_id: uuid.UUID) -> Share:
    """Release a share that needs four eyes; the approver must not be the clinician who created it."""
    async with portal.transaction() as db:
        share = await db.get(Share, share_id)
        if share is None:
            raise NotFound(_("Share {value} was not found.").format(value=share_id))
        if not share.approval_required or share.approved_at is not None:
            raise InvalidInput(
                _("Share {reference} does not need approval.").format(reference=share.reference)
            )
        if share.created_by == approver.id:
            raise InvalidInput(
                _("You created share {reference}; a second clinician must approve it.").format(
                    reference=share.reference
                )
            )
        approved = await db.scalar(
            update(Share)
            .where(Share.id == share_id, Share.approved_at.is_(None), Share.revoked_at.is_(None))
            .values(approved_by=approver.id, approved_at=utcnow())
            .returning(Share.id)
        )
        if approved is None:
            raise InvalidInput(
                _("Share {reference} was revoked or approved meanwhile.").format(reference=share.reference)
            )
        await record(db, who, "share.approved", share_id=share_id, purpose=share.purpose)
        await db.refresh(share)
    return share


# The dashboard's states: share_status() values, plus two flags a share can carry beside its state.
DASHBOARD_STATES = (
    "issued",
    "awaiting_approval",
    "opened",
    "downloaded",
    "failed_attempts",
    "locked",
    "expiring_soon",
    "expired",
    "revoked",
)
EXPIRING_SOON = dt.timedelta(hours=48)
DASHBOARD_ROWS = 100
# Shares read per dashboard request before the state filter applies; the newest come first.
_DASHBOARD_SCAN = 500
_ACTIVE_STATES = ("issued", "awaiting_approval", "opened", "downloaded")


@dataclass(frozen=True)
class DashboardFilter:
    patient_ref: str = ""
    state: str = ""


@dataclass(frozen=True)
class ShareRow:
    """One dashboard line: the share, its state, its flags and the titles of its documents."""

    share: Share
    status: str
    flags: tuple[str, ...]
    titles: tuple[str, ...]


def parse_dashboard_filter(patient_ref: str | None, state: str | None) -> DashboardFilter:
    reference = (patient_ref or "").strip()
    if len(reference) > 64:
        raise InvalidInput(
            _("Patient reference is too long ({length} characters). Use at most 64.").format(
                length=len(reference)
            ),
            field="filter_patient_ref",
        )
    chosen = (state or "").strip()
    if chosen and chosen not in DASHBOARD_STATES:
        raise InvalidInput(
            _("State '{value}' is unknown. Use one of: {choices}.").format(
                value=chosen[:30], choices=", ".join(DASHBOARD_STATES)
            ),
            field="filter_state",
        )
    return DashboardFilter(patient_ref=reference, state=chosen)


def share_flags(share: Share, status: str, now: dt.datetime) -> tuple[str, ...]:
    """Return the flags shown beside the state: failed attempts, expiring soon, not open yet."""
    flags = []
    if share.failed_attempts > 0 and status != "locked":
        flags.append("failed_attempts")
    if status in _ACTIVE_STATES and share.expires_at - now <= EXPIRING_SOON:
        flags.append("expiring_soon")
    if share.not_before is not None and share.not_before > now and status in _ACTIVE_STATES:
        flags.append("not_yet_open")
    return tuple(flags)


async def dashboard_shares(portal: Portal, filters: DashboardFilter) -> list[ShareRow]:
    """Return the newest shares that match the filter, at most DASHBOARD_ROWS of them."""
    query = select(Share).order_by(Share.created_at.desc()).limit(_DASHBOARD_SCAN)
    if filters.patient_ref:
        pseudonym = pseudonymise(portal.keyring.secret("pseudonym"), filters.patient_ref)
        patient_shares = (
            select(ShareDocument.share_id)
            .join(Document, Document.id == ShareDocument.document_id)
            .where(Document.patient_pseudonym == pseudonym)
        )
        query = query.where(Share.id.in_(patient_shares))
    async with portal.transaction() as db:
        shares = list((await db.scalars(query)).all())

    now = utcnow()
    rows = []
    for share in shares:
        status = share_status(share, now)
        flags = share_flags(share, status, now)
        if filters.state and filters.state not in (status, *flags):
            continue
        titles = tuple(link.document.title for link in share.documents)
        rows.append(ShareRow(share=share, status=status, flags=flags, titles=titles))
        if len(rows) == DASHBOARD_ROWS:
            break
    return rows


async def patient_documents(portal: Portal, document: Document, limit: int = 50) -> list[Document]:
    """Return the documents of the same patient as ``document``, newest first, for a referral package."""
    query = (
        select(Document)
        .where(Document.patient_pseudonym == document.patient_pseudonym, Document.erased_at.is_(None))
        .order_by(Document.created_at.desc())
        .limit(limit)
    )
    async with portal.transaction() as db:
        return list((await db.scalars(query)).all())
