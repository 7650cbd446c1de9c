"""The PDF jobs: sanitise an upload, prepare a recipient copy, read its marker, render a page.

These are pure functions of bytes to bytes. They run inside the worker process (``portal.pdf.worker``),
which adds the memory limit and the timeout; called directly they have no such protection.
"""

import contextlib
import datetime
from dataclasses import dataclass, field

import pikepdf
from pikepdf.models.encryption import EncryptionMethod

from portal.i18n import N_
from portal.pdf import buffers, content, fonts, inspect, marker, protect, watermark
from portal.pdf import sanitize as active
from portal.pdf.budgets import Budgets
from portal.pdf.errors import PdfRejected
from portal.pdf.objects import entry
from portal.pdf.render import render_page

__all__ = [
    "CopyRequest",
    "SanitizedDocument",
    "prepare_copy",
    "read_marker",
    "render_page",
    "sanitize",
    "warm_up",
]

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


# The watermark's footer line, translated by the caller into the recipient's language before the job.
DEFAULT_FOOTER = N_("Personal copy for {name} · {date} · {reference} · Do not forward")


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
    # The footer line with {name}, {date} and {reference} in place, already in the recipient's language.
    footer: str = DEFAULT_FOOTER


def sanitize(data: bytes, budgets: Budgets) -> SanitizedDocument:
    """Check an upload against the budgets, remove active content and metadata, and save it unencrypted.

    Pages whose content leaves ``q`` open get a closing ``Q`` stream appended, so ``prepare_copy`` can
    add the watermark without reading any page content.

    Raises:
        PdfRejected: For every file the portal does not accept; ``code`` gives the reason.
    """
    inspect.check_header(data)

    with inspect.pdf_errors(), inspect.open_pdf(data) as opened:
        pdf = opened.pdf
        was_encrypted = pdf.is_encrypted

        page_count = inspect.check_pages(pdf, budgets)
        pages = [page.obj for page in pdf.pages]
        page_streams = _survey_pages(pages)
        keep = frozenset(stream.objgen for streams in page_streams for stream in streams)
        hints = active.Hints()
        decoded = inspect.check_budgets(pdf, budgets, keep, visit=hints.visit)
        for number, (page, streams) in enumerate(zip(pages, page_streams, strict=True), start=1):
            _close_open_saves(pdf, page, streams, number, decoded)

        removed, signed = active.remove_active_content(pdf, hints)
        leftovers = bool(active.find_active_content(pdf, hints))
        result = buffers.save_bytes(
            pdf,
            encryption=False,
            fix_metadata_version=False,
            stream_decode_level=pikepdf.StreamDecodeLevel.none,
        )
        if leftovers:
            _verify_clean(result)

    # Stored with the document in English; pages translate them when they show them.
    notes = []
    repaired = bool(opened.warnings)
    if repaired:
        notes.append(N_("The file was damaged and has been repaired. Check the pages before sharing it."))
    if signed:
        notes.append(
            N_(
                "The file was digitally signed. Shared copies carry a watermark, "
                "so they no longer carry a valid signature."
            )
        )
    if was_encrypted:
        notes.append(
            N_(
                "The file was encrypted without a password to open it; the portal stores it decrypted "
                "and encrypted at rest."
            )
        )
    return SanitizedDocument(pdf=result, pages=page_count, removed=removed, warnings=notes, repaired=repaired)


def prepare_copy(request: CopyRequest, budgets: Budgets) -> bytes:
    """Concatenate the sanitised documents, watermark every page, mark and encrypt the copy (AES-256 R6).

    The documents must come from ``sanitize``: their page content is not read again, so content that
    leaves ``q`` open would shift and scale the watermark.

    Raises:
        PdfRejected: When a document cannot be read or a page cannot carry the watermark.
        ValueError: When the request itself is invalid (no documents, a marker that is not 16 bytes).
    """
    if not request.documents:
        raise ValueError("a copy needs at least one document")
    if len(request.marker) != marker.MARKER_BYTES:
        raise ValueError(f"marker must be {marker.MARKER_BYTES} bytes, got {len(request.marker)}")
    text = watermark_text(request.recipient_name, request.share_reference, request.issued_on, request.footer)
    font = fonts.subset_for(text.diagonal, text.footer)

    with inspect.pdf_errors(), contextlib.ExitStack() as sources:
        documents = []
        for data in request.documents:
            inspect.check_header(data)
            source = sources.enter_context(buffers.open_bytes(data))
            inspect.check_pages(source, budgets)
            documents.append(source)
        pdf = documents[0]
        for source in documents[1:]:
            # NOTE: form fields of the second and later documents lose their /AcroForm entry here.
            pdf.pages.extend(source.pages)

        _stamp_pages(pdf, text, font)
        if "/Info" in pdf.trailer:
            del pdf.trailer["/Info"]
        marker.set_marker(pdf, request.marker)
        _check_copy_clean(pdf)

        encryption = protect.build_encryption(request.user_password, request.allow_print, request.allow_copy)
        copy = marker.randomise_instance_id(protect.save_encrypted(pdf, encryption), request.marker)
        _verify_copy(copy, request.user_password)
    return copy


def read_marker(data: bytes) -> bytes | None:
    """Return the 16-byte marker of a copy, read from its unencrypted trailer (no password needed)."""
    return marker.read_marker(data)


def warm_up() -> None:
    """Build the per-process caches (the European font subset) so that the first copy need not wait."""
    fonts.preload()


def _survey_pages(pages: list[pikepdf.Dictionary]) -> list[list[pikepdf.Stream]]:
    """Check that every page has a visible area and return each page's content streams, in order."""
    geometries = watermark.GeometryCache()
    page_streams = []
    for number, page in enumerate(pages, start=1):
        geometries.get(page, number)
        contents = entry(page, "/Contents")
        parts = contents if isinstance(contents, pikepdf.Array) else [contents]
        page_streams.append([part for part in parts if isinstance(part, pikepdf.Stream)])
    return page_streams


def _close_open_saves(
    pdf: pikepdf.Pdf,
    page: pikepdf.Dictionary,
    streams: list[pikepdf.Stream],
    number: int,
    decoded: dict[tuple[int, int], bytes],
) -> None:
    """Append ``Q`` operators to a page whose content leaves ``q`` open; reject damaged content."""
    depth = None
    pieces = [decoded[stream.objgen] for stream in streams if stream.objgen in decoded]
    if len(pieces) == len(streams):
        # qpdf joins the streams of a /Contents array with a newline, and so does this.
        depth = content.scan(b"\n".join(pieces))
    if depth is None:
        depth = content.saves_by_parsing(pdf, pikepdf.Page(page), number)

    if depth:
        closing = pdf.make_stream(b"\n" + b"Q\n" * depth)
        page.Contents = pikepdf.Array([*streams, closing])


def _stamp_pages(pdf: pikepdf.Pdf, text: watermark.WatermarkText, font: fonts.FontSubset) -> None:
    stamper = watermark.PageStamper(pdf, text, font, fonts.embed(pdf, font))
    for number, page in enumerate(pdf.pages, start=1):
        stamper.stamp(page.obj, number)


def watermark_text(
    recipient_name: str, share_reference: str, issued_on: datetime.date, footer: str = DEFAULT_FOOTER
) -> watermark.WatermarkText:
    """Build the diagonal and footer lines for a recipient, normalised and shortened for the page.

    Raises:
        ValueError: When the recipient name is empty after normalisation.
    """
    name = _shorten(fonts.normalise(recipient_name).strip(), MAX_NAME_CHARACTERS)
    reference = _shorten(fonts.normalise(share_reference).strip(), MAX_REFERENCE_CHARACTERS)
    if not name:
        raise ValueError("recipient_name must not be empty")
    issued = issued_on.isoformat()
    return watermark.WatermarkText(
        diagonal=f"{name} · {issued} · {reference}",
        footer=fonts.normalise(footer).format(name=name, date=issued, reference=reference),
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verify_clean(data: bytes) -> None:
    """Reject the saved upload if it still contains active content, found by a walk over all its objects.

    ``sanitize`` calls this only when the same check on the objects in memory found something. The
    objects in memory include leftovers that the removal left without references, such as embedded
    file streams, and qpdf's writer writes only the reachable objects and adds only cross-reference
    data and the trailer /ID. So what the saved file holds is a subset of what was checked in memory,
    and a clean result there makes this walk unnecessary.
    """
    with buffers.open_bytes(data) as pdf:
        if active.find_active_content(pdf):
            raise PdfRejected(
                "active_content",
                "The PDF contains active content that could not be removed. "
                "Print it to a new PDF and upload that file.",
            )


def _check_copy_clean(pdf: pikepdf.Pdf) -> None:
    """Reject a copy whose catalog or trailer refers to active content.

    Only the document level is checked, not every object. Each document of a copy is a stored original:
    ``sanitize`` removed its active content, checked every object before saving it, and storage keeps it
    under authenticated encryption (AES-GCM), so its objects are still the checked ones. A copy adds
    only objects built here (the font, graphics states, watermark streams and XMP packet), none of which
    contains an action, and the catalog and trailer, which this function checks. qpdf's writer adds no
    actions, so the saved file holds no more than these objects.
    """
    if active.find_document_level(pdf):
        raise PdfRejected(
            "active_content",
            "The document contains active content. Upload it again so that it is sanitised anew.",
        )


def _verify_copy(data: bytes, user_password: str | None) -> None:
    """Reopen the saved copy: it must be AES-256 R6 and open with the user password, not the owner's.

    One reopen proves both that the copy is protected and that it needs its password. In revision 6 a
    password opens a file only when its SHA-256-based hash matches /U (user) or /O (owner). Opening with
    ``user_password`` and matching /U shows that /U was made from that password. An empty password
    cannot match that /U unless ``user_password`` is itself empty. Nor can it match /O, which was made
    from 256 random bits. So a second open without the password would prove nothing more.
    """
    with buffers.open_bytes(data, password=user_password or "") as pdf:
        if not pdf.is_encrypted:
            raise protect.WeakEncryptionError("the saved copy is not encrypted")
        info = pdf.encryption
        if info.R != protect.REVISION or info.stream_method != EncryptionMethod.aesv3 or info.bits != 256:
            raise protect.WeakEncryptionError(f"the saved copy uses encryption revision {info.R}")
        if not pdf.user_password_matched:
            raise protect.WeakEncryptionError("the saved copy does not open with its user password")
