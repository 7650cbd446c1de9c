"""Uploading reports: validate the metadata, sanitise the PDF in a worker, store it encrypted."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass

from babel.numbers import format_decimal
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from portal.audit.recorder import Actor, record
from portal.blobs import StagedBlob
from portal.core import Portal
from portal.crypto.pseudonym import pseudonymise
from portal.errors import InvalidInput, NotFound, UploadRejected
from portal.i18n import _, language_var
from portal.models import Document, StaffUser
from portal.pdf.errors import PdfRejected

_PATIENT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# A report date outside these bounds is a typo (0203 for 2003) or a date not reached yet. The day after
# today in UTC is still accepted, so that a clinic ahead of UTC can date a report with its own today.
EARLIEST_REPORT_DATE = dt.date(1900, 1, 1)
REPORT_DATE_SLACK = dt.timedelta(days=1)

# File names in messages are cut to this many characters, keeping the end with the extension.
MAX_SHOWN_FILENAME = 60
# Unicode categories removed from file names shown in messages: control and format characters, which
# include the bidirectional overrides that can make "report‮fdp.exe" display as "reportexe.pdf".
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})

# Leading bytes of image files that photo systems export, as (magic bytes, offset, format name).
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
)
# HEIC/HEIF files are ISO media files: a box of type "ftyp" at byte 4, then the major brand.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"})


@dataclass(frozen=True)
class UploadForm:
    title: str
    patient_ref: str
    report_date: dt.date | None


def clean_text(value: str | None, field: str, label: str, max_length: int) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInput(
            _("{label} is missing. Fill it in and send again.").format(label=label), field=field
        )
    if len(text) > max_length:
        raise InvalidInput(
            _("{label} is too long ({length} characters). Use at most {max} characters.").format(
                label=label, length=len(text), max=max_length
            ),
            field=field,
        )
    if _CONTROL.search(text):
        raise InvalidInput(
            _("{label} contains control characters. Remove them.").format(label=label), field=field
        )
    return text


def parse_upload_form(title: str | None, patient_ref: str | None, report_date: str | None) -> UploadForm:
    clean_title = clean_text(title, "title", _("Title"), 200)
    reference = clean_text(patient_ref, "patient_ref", _("Patient reference"), 64)
    if not _PATIENT_REF.match(reference):
        raise InvalidInput(
            _(
                "Patient reference '{value}' is invalid. Use the clinic's own patient number: letters, "
                "digits and . _ / - only, never a name."
            ).format(value=reference),
            field="patient_ref",
        )

    parsed_date = None
    if report_date and report_date.strip():
        try:
            parsed_date = dt.date.fromisoformat(report_date.strip())
        except ValueError:
            raise InvalidInput(
                _("Report date '{value}' is invalid. Use the form YYYY-MM-DD.").format(
                    value=report_date.strip()[:20]
                ),
                field="report_date",
            ) from None
        check_report_date(parsed_date)
    return UploadForm(title=clean_title, patient_ref=reference, report_date=parsed_date)


def check_report_date(day: dt.date) -> None:
    """Raise InvalidInput for a report date before 1900 or after tomorrow (UTC)."""
    latest = dt.datetime.now(dt.UTC).date() + REPORT_DATE_SLACK
    if day > latest:
        raise InvalidInput(
            _(
                "Report date {value} is in the future. Enter the date the report was written, today or "
                "earlier, or leave the field empty."
            ).format(value=day.isoformat()),
            field="report_date",
        )
    if day < EARLIEST_REPORT_DATE:
        raise InvalidInput(
            _(
                "Report date {value} is before 1900. Check the year (for example 2003, not 0203) and "
                "enter the date the report was written."
            ).format(value=day.isoformat()),
            field="report_date",
        )


def shown_filename(raw: str | None) -> str:
    """Return an uploaded file's name as messages show it: without folders or invisible characters, cut short."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in _HIDDEN_CATEGORIES)
    name = " ".join(name.split())
    if not name:
        return _("The file")
    if len(name) > MAX_SHOWN_FILENAME:
        _stem, dot, extension = name.rpartition(".")
        tail = dot + extension if dot and len(extension) <= 10 else name[-10:]
        name = name[: MAX_SHOWN_FILENAME - len(tail) - 1] + "…" + tail
    return name


def megabytes_text(size: int) -> str:
    """Format a byte count in MB (10^6 bytes) with one decimal, rounded up, in the current language."""
    return format_decimal(math.ceil(size / 100_000) / 10, format="#,##0.0", locale=language_var.get())


def too_large_message(filename: str, size_text: str, max_bytes: int) -> str:
    """Name the file, its size and the limit; the browser fills in {name} and {size} the same way."""
    return _(
        "{name} is {size} MB; a report may be at most {max} MB. Reduce the photo resolution and export it again."
    ).format(name=filename, size=size_text, max=max_bytes // 1_000_000)


def image_format(data: bytes) -> str | None:
    """Return "JPEG", "PNG" or "HEIC" when the bytes start like such an image, else None."""
    for magic, offset, name in _IMAGE_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIC"
    return None


def seal_patient_ref(portal: Portal, document_id: uuid.UUID, patient_ref: str) -> bytes:
    key = portal.keyring.secret("pseudonym")
    sealing_key = hashlib.sha256(b"portal patient reference seal\0" + key).digest()
    nonce = uuid.uuid4().bytes[:12]
    return nonce + AESGCM(sealing_key).encrypt(nonce, patient_ref.encode(), document_id.bytes)


def open_patient_ref(portal: Portal, document: Document) -> str:
    key = portal.keyring.secret("pseudonym")
    sealing_key = hashlib.sha256(b"portal patient reference seal\0" + key).digest()
    sealed = document.patient_ref_sealed
    return AESGCM(sealing_key).decrypt(sealed[:12], sealed[12:], document.id.bytes).decode()


def patient_pseudonym(portal: Portal, patient_ref: str) -> str:
    return pseudonymise(portal.keyring.secret("pseudonym"), patient_ref)


async def upload_document(
    portal: Portal, who: Actor, uploader: StaffUser, form: UploadForm, data: bytes, *, filename: str
) -> Document:
    """Sanitise and store one report; a rejected file leaves no row and no blob behind.

    ``filename`` is the name as sent. Rejection messages start with it, shortened by ``shown_filename``.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    pseudonym = patient_pseudonym(portal, form.patient_ref)
    name = shown_filename(filename)

    kind = image_format(data)
    try:
        if kind is not None:
            raise PdfRejected("not_pdf", f"{kind} image")
        sanitized = await portal.pdf.sanitize(data)
    except PdfRejected as rejection:
        async with portal.transaction() as db:
            await record(
                db,
                who,
                "document.rejected",
                outcome="failure",
                patient_pseudonym=pseudonym,
                details={"reason": rejection.code, "size": len(data), "sha256": sha256},
            )
        if kind is not None:
            message = _(
                "{name} is a {kind} image, not a PDF. Export the report as PDF from your photo system."
            ).format(name=name, kind=kind)
        else:
            # NOTE: The PDF worker's reasons are English sentences, so only the frame that names the file is
            # translated.
            message = _("{name} was not accepted. {reason}").format(name=name, reason=rejection.message)
        raise UploadRejected(message, code=rejection.code, field="file") from None

    staged: StagedBlob | None = None
    try:
        staged = await portal.blobs.stage("original", sanitized.pdf)
        document_id = uuid.uuid4()
        document = Document(
            id=document_id,
            title=form.title,
            patient_ref_sealed=seal_patient_ref(portal, document_id, form.patient_ref),
            patient_pseudonym=pseudonym,
            report_date=form.report_date,
            pages=sanitized.pages,
            size=len(data),
            sha256=sha256,
            blob_id=staged.blob_id,
            uploaded_by=uploader.id,
            removed_content=json.dumps(sanitized.removed),
            warnings=json.dumps(sanitized.warnings),
            repaired=sanitized.repaired,
        )
        async with portal.transaction() as db:
            db.add_all(staged.rows())
            await db.flush()
            db.add(document)
            await db.flush()
            await record(
                db,
                who,
                "document.uploaded",
                document_id=document_id,
                patient_pseudonym=pseudonym,
                details={"pages": sanitized.pages, "sha256": sha256, "removed": len(sanitized.removed)},
            )
    except BaseException:
        await portal.blobs.discard(staged)
        raise
    return document


async def load_document(portal: Portal, document_id: str | uuid.UUID) -> Document:
    """Return a document that is not erased, or raise NotFound."""
    try:
        key = document_id if isinstance(document_id, uuid.UUID) else uuid.UUID(str(document_id))
    except ValueError:
        raise NotFound(_("Document {value} was not found.").format(value=str(document_id)[:40])) from None
    async with portal.transaction() as db:
        document = await db.get(Document, key)
    if document is None or document.erased_at is not None:
        raise NotFound(_("Document {value} was not found.").format(value=key))
    return document


async def list_documents(portal: Portal, patient_ref: str | None = None, limit: int = 100) -> list[Document]:
    query = (
        select(Document).where(Document.erased_at.is_(None)).order_by(Document.created_at.desc()).limit(limit)
    )
    if patient_ref:
        query = query.where(Document.patient_pseudonym == patient_pseudonym(portal, patient_ref.strip()))
    async with portal.transaction() as db:
        return list((await db.scalars(query)).all())
