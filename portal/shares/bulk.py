"""Bulk issue: one CSV file, many shares, one PDF with a slip per page.

Every row is validated before anything is created, so a file with one bad row creates nothing and the
clinician gets each bad row's line number and reason. If creation still fails midway (the PDF worker
rejects a copy, the database goes away), the shares created so far are revoked and their copies
shredded before the error is raised, so no code from a failed batch ever works.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import logging
import unicodedata
import uuid
from dataclasses import dataclass

import pikepdf
from sqlalchemy import select

from portal.audit.recorder import Actor
from portal.core import Portal
from portal.documents.service import clean_text, patient_pseudonym
from portal.errors import InvalidInput, NotFound, PortalError
from portal.i18n import _, ngettext
from portal.models import Document, Share, StaffUser
from portal.security import codes
from portal.shares.service import IssuedShare, ShareForm, create_share, parse_share_form, revoke_share
from portal.shares.slip import share_slip_pdf

log = logging.getLogger(__name__)

MAX_ROWS = 200
MAX_CSV_BYTES = 1_000_000

# Accepted header names per column, compared after lower-casing and turning spaces and dashes into "_".
COLUMNS = {
    "patient_ref": ("patient_ref", "patient_reference"),
    "recipient_name": ("recipient_name", "recipient"),
    "date_of_birth": ("date_of_birth", "dob", "birth_date"),
    "document": ("document", "document_id", "document_title", "document_id_or_title", "title"),
    "language": ("language", "lang"),
}
OPTIONAL_COLUMNS = ("date_of_birth", "language")


@dataclass(frozen=True)
class RowError:
    """A problem with one line of the file (line 1 is the header), or with the whole file (line None)."""

    line: int | None
    message: str


class BulkRejected(InvalidInput):
    """The file or some of its rows are invalid; nothing was created."""

    code = "bulk_rejected"

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(
            ngettext(
                "The file has a problem. Nothing was created: fix it and upload the file again.",
                "The file has {count} problems. Nothing was created: fix them and upload the file again.",
                len(errors),
            ).format(count=len(errors)),
            field="csv",
        )
        self.errors = errors


class BulkIssueFailed(PortalError):
    """Creating a share failed after validation; the shares created before it were withdrawn."""

    status_code = 500
    code = "bulk_failed"


@dataclass(frozen=True)
class BulkRow:
    line: int
    form: ShareForm


def read_rows(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """Parse the CSV into (line number, column → value) pairs; raises BulkRejected for a malformed file."""
    if len(data) > MAX_CSV_BYTES:
        raise BulkRejected(
            [
                RowError(
                    None, _("The file is larger than {max} kB. Split it.").format(max=MAX_CSV_BYTES // 1000)
                )
            ]
        )
    text = _decode_utf8(data)

    dialect = _sniff(text)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    header = next(reader, None)
    if header is None:
        raise BulkRejected([RowError(1, _("The file is empty. Add a header line and one line per share."))])
    positions = _column_positions(header)

    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for values in reader:
            if not any(value.strip() for value in values):
                continue
            if len(rows) == MAX_ROWS:
                raise BulkRejected(
                    [
                        RowError(
                            reader.line_num,
                            _("The file has more than {max} rows. Split it.").format(max=MAX_ROWS),
                        )
                    ]
                )
            rows.append((reader.line_num, {name: _cell(values, index) for name, index in positions.items()}))
    except csv.Error:
        raise BulkRejected(
            [RowError(reader.line_num, _("This line is not valid CSV. Check its quotes."))]
        ) from None
    if not rows:
        raise BulkRejected([RowError(2, _("The file has a header but no rows. Add one line per share."))])
    return rows


def _decode_utf8(data: bytes) -> str:
    """Decode the file as UTF-8 (with or without a byte order mark), or name the line of the first bad byte."""
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        offset = len(data) - len(body) + error.start
        message = _(
            "This line is not UTF-8 text: byte {position} of the file is 0x{byte:02X}. The file was probably "
            "saved in a Windows or Latin-1 encoding. Save it again as CSV in UTF-8 (in Excel: CSV UTF-8)."
        ).format(position=offset + 1, byte=body[error.start])
        raise BulkRejected([RowError(line, message)]) from None


def _sniff(text: str) -> type[csv.Dialect] | csv.Dialect:
    # Spreadsheets in many European locales save CSV with semicolons.
    first_line = text.split("\n", 1)[0]
    return csv.excel if first_line.count(",") >= first_line.count(";") else _Semicolon()


class _Semicolon(csv.excel):
    delimiter = ";"


def _column_positions(header: list[str]) -> dict[str, int]:
    normalised = [value.strip().lower().replace(" ", "_").replace("-", "_") for value in header]
    positions: dict[str, int] = {}
    for name, aliases in COLUMNS.items():
        found = [index for index, value in enumerate(normalised) if value in aliases]
        if found:
            positions[name] = found[0]
    missing = [name for name in COLUMNS if name not in positions and name not in OPTIONAL_COLUMNS]
    if missing:
        raise BulkRejected(
            [
                RowError(
                    1,
                    _("The header lacks the column(s) {missing}. Expected: {expected}.").format(
                        missing=", ".join(missing), expected=", ".join(COLUMNS)
                    ),
                )
            ]
        )
    return positions


def _cell(values: list[str], index: int) -> str:
    return values[index].strip() if index < len(values) else ""


async def validate_rows(
    portal: Portal, rows: list[tuple[int, dict[str, str]]], profile: str | None, purpose: str | None
) -> list[BulkRow]:
    """Check every row and resolve its document; raises BulkRejected listing every bad row.

    The form's own fields are checked first, so a missing purpose is reported once, not on every row.
    """
    if (profile or "") not in portal.policies.profiles:
        raise InvalidInput(
            _("Profile '{value}' is unknown. Choose a recipient type from the list.").format(
                value=(profile or "")[:40]
            ),
            field="profile",
        )
    clean_text(purpose, "purpose", _("Purpose"), 200)

    valid: list[BulkRow] = []
    errors: list[RowError] = []
    for line, values in rows:
        try:
            document_id = await _resolve_document(portal, values["patient_ref"], values["document"])
            form = parse_share_form(
                portal,
                [str(document_id)],
                profile,
                values["recipient_name"],
                purpose,
                values.get("date_of_birth") or None,
                language=values.get("language") or None,
            )
        except (InvalidInput, NotFound) as problem:
            errors.append(RowError(line, problem.message))
            continue
        valid.append(BulkRow(line=line, form=form))
    if errors:
        raise BulkRejected(errors)
    return valid


# A title in the file matches a stored title that differs only in case or in spaces around it.
def _title_key(title: str) -> str:
    return unicodedata.normalize("NFC", title.strip()).casefold()


# Titles that a not-found message lists in full, and how many of the closest it names beyond that.
MAX_LISTED_TITLES = 5
CLOSEST_TITLES = 3
# Reports of one patient that a title lookup compares, newest first. Older ones are found by id only.
MAX_TITLES_COMPARED = 1000


async def _resolve_document(portal: Portal, patient_ref: str, document: str) -> uuid.UUID:
    """Find the row's document by id or by title, among the documents of the row's patient."""
    if not patient_ref:
        raise InvalidInput(_("The patient reference is missing."))
    if not document:
        raise InvalidInput(_("The document id or title is missing."))
    pseudonym = patient_pseudonym(portal, patient_ref)

    try:
        document_id = uuid.UUID(document)
    except ValueError:
        return await _resolve_title(portal, pseudonym, patient_ref, document)

    query = select(Document.patient_pseudonym).where(Document.erased_at.is_(None), Document.id == document_id)
    async with portal.transaction() as db:
        owner = await db.scalar(query)
    if owner is None:
        raise NotFound(
            _("No report '{document}' was found for patient reference '{patient_ref}'.").format(
                document=document[:80], patient_ref=patient_ref[:64]
            )
        )
    if owner != pseudonym:
        raise InvalidInput(
            _("Document {document} belongs to another patient than '{patient_ref}'. Check the row.").format(
                document=document[:40], patient_ref=patient_ref[:64]
            )
        )
    return document_id


async def _resolve_title(portal: Portal, pseudonym: str, patient_ref: str, title: str) -> uuid.UUID:
    """Match the title exactly, else ignoring case and surrounding spaces; name the patient's titles if none."""
    query = (
        select(Document.id, Document.title)
        .where(Document.erased_at.is_(None), Document.patient_pseudonym == pseudonym)
        .order_by(Document.created_at.desc())
        .limit(MAX_TITLES_COMPARED)
    )
    async with portal.transaction() as db:
        candidates = (await db.execute(query)).all()

    matches = [row for row in candidates if row.title == title] or [
        row for row in candidates if _title_key(row.title) == _title_key(title)
    ]
    if len(matches) > 1:
        raise InvalidInput(
            _("Several reports of this patient are titled '{document}'. Use the document id instead.").format(
                document=title[:80]
            )
        )
    if matches:
        return uuid.UUID(str(matches[0].id))
    raise NotFound(_title_not_found(title, patient_ref, [row.title for row in candidates]))


def _title_not_found(title: str, patient_ref: str, titles: list[str]) -> str:
    not_found = _("No report '{document}' was found for patient reference '{patient_ref}'.").format(
        document=title[:80], patient_ref=patient_ref[:64]
    )
    if not titles:
        return not_found + " " + _("No reports are stored for this patient reference. Check the reference.")
    shown = sorted(set(titles), key=str.casefold)
    if len(shown) <= MAX_LISTED_TITLES:
        listed = ", ".join(f"'{name[:80]}'" for name in shown)
        return not_found + " " + _("Its reports are titled: {titles}.").format(titles=listed)
    closest = sorted(
        shown,
        key=lambda name: difflib.SequenceMatcher(None, _title_key(title), _title_key(name)).ratio(),
        reverse=True,
    )[:CLOSEST_TITLES]
    listed = ", ".join(f"'{name[:80]}'" for name in closest)
    return (
        not_found
        + " "
        + _("The closest of its {count} titles: {titles}.").format(count=len(shown), titles=listed)
    )


async def issue_all(portal: Portal, who: Actor, creator: StaffUser, rows: list[BulkRow]) -> list[IssuedShare]:
    """Create one share per row; on any failure, withdraw the shares created so far and raise."""
    issued: list[IssuedShare] = []
    for row in rows:
        try:
            issued.append(await create_share(portal, who, creator, row.form))
        except Exception as error:
            await _withdraw(portal, who, [item.share for item in issued])
            reason = error.message if isinstance(error, PortalError) else _("An unexpected error occurred.")
            raise BulkIssueFailed(
                _(
                    "Creating the share for line {line} failed: {reason} The {count} share(s) created before it "
                    "were revoked and their copies destroyed. Fix the problem and upload the file again."
                ).format(line=row.line, reason=reason, count=len(issued))
            ) from error
    return issued


async def _withdraw(portal: Portal, who: Actor, shares: list[Share]) -> None:
    """Revoke shares of a failed batch and shred their copies, so none of their codes or copies works."""
    for share in shares:
        await revoke_share(portal, who, share.id)
        if share.copy_blob_id is None:
            continue
        async with portal.transaction() as db:
            await portal.blobs.shred(db, share.copy_blob_id)
        await portal.blobs.delete_bytes(share.copy_blob_id)
    log.warning("bulk issue withdrawn", extra={"shares_withdrawn": len(shares)})


def slips_document(portal: Portal, issued: list[IssuedShare]) -> bytes:
    """Join one slip per share into a single PDF, in the order of the file's rows. CPU-bound: run in a thread."""
    combined = pikepdf.new()
    for item in issued:
        page = share_slip_pdf(item.share, codes.display(item.code), portal.settings)
        with pikepdf.open(io.BytesIO(page)) as single:
            combined.pages.extend(single.pages)
    buffer = io.BytesIO()
    combined.save(buffer)
    return buffer.getvalue()
