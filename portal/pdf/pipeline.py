"""The PDF jobs: sanitise an upload, prepare a recipient copy, read its marker, render a page.

These are pure functions of bytes to bytes. They run inside the worker process (``portal.pdf.worker``),
which adds the memory limit and the timeout; called directly they have no such protection.
"""

import datetime
import io
from dataclasses import dataclass, field

import pikepdf
from pikepdf.models.encryption import EncryptionMethod

from portal.pdf import fonts, inspect, marker, protect, watermark
from portal.pdf import sanitize as active
from portal.pdf.budgets import Budgets
from portal.pdf.errors import PdfRejected
from portal.pdf.render import render_page

__all__ = ["CopyRequest", "SanitizedDocument", "prepare_copy", "read_marker", "render_page", "sanitize"]

MAX_NAME_CHARACTERS = 120
MAX_REFERENCE_CHARACTERS = 40


@dataclass
class SanitizedDocument:
    """A sanitised upload, saved unencrypted, with what was removed and what the uploader should know."""

    pdf: bytes
    pages: int
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repaired: bool = False


@dataclass(frozen=True)
class CopyRequest:
    """The contents and protection settings of one recipient copy."""

    documents: list[bytes]
    recipient_name: str
    share_reference: str
    issued_on: datetime.date
    marker: bytes
    user_password: str | None
    allow_print: bool = True
    allow_copy: bool = False


def sanitize(data: bytes, budgets: Budgets) -> SanitizedDocument:
    """Check an upload against the budgets, remove active content and metadata, and save it unencrypted.

    Raises:
        PdfRejected: For every file the portal does not accept; ``code`` gives the reason.
    """
    inspect.check_header(data)

    with inspect.pdf_errors():
        opened = inspect.open_pdf(data)
        pdf = opened.pdf
        was_encrypted = pdf.is_encrypted

        inspect.check_budgets(pdf, budgets)
        page_count = inspect.check_pages(pdf, budgets)
        for number, page in enumerate(pdf.pages, start=1):
            watermark.page_geometry(page.obj, number)
            watermark.unclosed_saves(pdf, page, number)

        signed = active.is_signed(pdf)
        removed = active.remove_active_content(pdf)
        output = io.BytesIO()
        pdf.save(
            output,
            encryption=False,
            fix_metadata_version=False,
            stream_decode_level=pikepdf.StreamDecodeLevel.none,
        )
        result = output.getvalue()
        _verify_clean(result)

    notes = []
    repaired = bool(opened.warnings)
    if repaired:
        notes.append("The file was damaged and has been repaired. Check the pages before sharing it.")
    if signed:
        notes.append(
            "The file was digitally signed. Shared copies carry a watermark, "
            "so they no longer carry a valid signature."
        )
    if was_encrypted:
        notes.append(
            "The file was encrypted without a password to open it; the portal stores it decrypted "
            "and encrypted at rest."
        )
    return SanitizedDocument(pdf=result, pages=page_count, removed=removed, warnings=notes, repaired=repaired)


def prepare_copy(request: CopyRequest, budgets: Budgets) -> bytes:
    """Concatenate the sanitised documents, watermark every page, mark and encrypt the copy (AES-256 R6).

    Raises:
        PdfRejected: When a document cannot be read or a page cannot carry the watermark.
        ValueError: When the request itself is invalid (no documents, a marker that is not 16 bytes).
    """
    if not request.documents:
        raise ValueError("a copy needs at least one document")
    if len(request.marker) != marker.MARKER_BYTES:
        raise ValueError(f"marker must be {marker.MARKER_BYTES} bytes, got {len(request.marker)}")
    text = _watermark_text(request)
    font = fonts.subset_for(text.diagonal + text.footer)

    with inspect.pdf_errors():
        sources = []
        for data in request.documents:
            inspect.check_header(data)
            source = pikepdf.open(io.BytesIO(data))
            inspect.check_pages(source, budgets)
            sources.append(source)
        pdf = sources[0]
        for source in sources[1:]:
            # NOTE: form fields of the second and later documents lose their /AcroForm entry here.
            pdf.pages.extend(source.pages)

        _stamp_pages(pdf, text, font)
        if "/Info" in pdf.trailer:
            del pdf.trailer["/Info"]
        marker.set_marker(pdf, request.marker)

        encryption = protect.build_encryption(request.user_password, request.allow_print, request.allow_copy)
        copy = marker.randomise_instance_id(protect.save_encrypted(pdf, encryption), request.marker)
        for source in sources:
            source.close()
        _verify_copy(copy, request.user_password)
    return copy


def read_marker(data: bytes) -> bytes | None:
    """Return the 16-byte marker of a copy, read from its unencrypted trailer (no password needed)."""
    return marker.read_marker(data)


def _stamp_pages(pdf: pikepdf.Pdf, text: watermark.WatermarkText, font: fonts.FontSubset) -> None:
    shared = watermark.shared_resources(pdf, fonts.embed(pdf, font))
    # Pages of one size share their watermark operators, which saves most of the layout work.
    contents: dict[tuple[watermark.PageGeometry, tuple[str, str, str]], bytes] = {}
    for number, page in enumerate(pdf.pages, start=1):
        geometry = watermark.page_geometry(page.obj, number)
        open_saves = watermark.unclosed_saves(pdf, page, number)
        names = watermark.add_resources(pdf, page.obj, shared)
        key = (geometry, names)
        if key not in contents:
            contents[key] = watermark.watermark_content(geometry, text, font, names)
        watermark.wrap_page(pdf, page.obj, open_saves, contents[key])


def _watermark_text(request: CopyRequest) -> watermark.WatermarkText:
    name = _shorten(fonts.normalise(request.recipient_name).strip(), MAX_NAME_CHARACTERS)
    reference = _shorten(fonts.normalise(request.share_reference).strip(), MAX_REFERENCE_CHARACTERS)
    if not name:
        raise ValueError("recipient_name must not be empty")
    issued = request.issued_on.isoformat()
    return watermark.WatermarkText(
        diagonal=f"{name} · {issued} · {reference}",
        footer=f"Personal copy for {name} · {issued} · {reference} · Do not forward",
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verify_clean(data: bytes) -> None:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        if active.find_active_content(pdf):
            raise PdfRejected(
                "active_content",
                "The PDF contains active content that could not be removed. "
                "Print it to a new PDF and upload that file.",
            )


def _verify_copy(data: bytes, user_password: str | None) -> None:
    """Reopen the saved copy: it must be AES-256 R6, open with the user password and not without it."""
    with pikepdf.open(io.BytesIO(data), password=user_password or "") as pdf:
        info = pdf.encryption
        if info.R != protect.REVISION or info.stream_method != EncryptionMethod.aesv3 or info.bits != 256:
            raise protect.WeakEncryptionError(f"the saved copy uses encryption revision {info.R}")
    if user_password:
        try:
            pikepdf.open(io.BytesIO(data), password="").close()
        except pikepdf.PasswordError:
            return
        raise protect.WeakEncryptionError("the saved copy opens without its user password")
