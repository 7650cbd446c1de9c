"""Opening an uploaded PDF and enforcing the budgets before any stream is decoded.

Nothing here decodes stream data through pikepdf: compressed streams are measured by ``streams`` with a
ceiling, image sizes come from dictionaries and JBIG2 headers, and the object walk is iterative so a deep
structure cannot exhaust the Python stack.
"""

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pikepdf

from portal.pdf import buffers, streams
from portal.pdf.budgets import Budgets
from portal.pdf.errors import PdfRejected
from portal.pdf.objects import entry

HEADER_WINDOW = 1024
# Page content beyond these sizes (per stream, and in total) is not kept from the budget scan, so qpdf
# decodes it again for the content check. The total bounds the memory the kept bytes take.
MAX_KEPT_BYTES = 16 * 2**20
MAX_KEPT_TOTAL_BYTES = 64 * 2**20


@dataclass
class OpenedPdf:
    """A PDF opened by pikepdf together with the warnings qpdf reported while opening it."""

    pdf: pikepdf.Pdf
    warnings: list[str]


def check_header(data: bytes) -> None:
    """Reject empty input and input without ``%PDF-`` in its first 1,024 bytes.

    qpdf's recovery turns an empty file or a PNG into a "damaged PDF" error, so this check comes first.
    """
    if not data:
        raise PdfRejected(
            "empty", "The uploaded file is empty (0 bytes). Choose the PDF file again and upload it."
        )
    if b"%PDF-" not in data[:HEADER_WINDOW]:
        raise PdfRejected(
            "not_pdf",
            "The uploaded file is not a PDF: it does not start with a PDF header. "
            "Export or print the report as PDF and upload that file.",
        )


@contextmanager
def pdf_errors() -> Iterator[None]:
    """Translate pikepdf and resource failures into ``PdfRejected`` so no traceback reaches a user."""
    try:
        yield
    except PdfRejected:
        raise
    except pikepdf.PasswordError as error:
        raise _password_required() from error
    except MemoryError as error:
        raise PdfRejected(
            "memory_limit",
            "The PDF needs more memory to process than the portal allows. "
            "Save it again from the program that made it, or split it, and upload the smaller file.",
        ) from error
    except RecursionError as error:
        raise PdfRejected(
            "too_deep",
            "The PDF contains structures nested too deeply to process. Save it again as a standard PDF.",
        ) from error
    except (
        pikepdf.PdfError,
        pikepdf.DataDecodingError,
        pikepdf.ForeignObjectError,
        pikepdf.DeletedObjectError,
        ValueError,
        IndexError,
        KeyError,
        TypeError,
        AttributeError,
        NotImplementedError,
        OverflowError,
        UnicodeError,
        RuntimeError,
    ) as error:
        raise PdfRejected(
            "damaged",
            "The PDF is damaged and could not be read or repaired. "
            "Open it in a PDF viewer, save or print it as a new PDF, and upload that file.",
        ) from error


@contextmanager
def open_pdf(data: bytes) -> Iterator[OpenedPdf]:
    """Open ``data`` with an empty password, reject files that need a real password, close it on exit.

    Raises:
        PdfRejected: ``password_required``, ``unsupported_encryption`` or ``damaged``.
    """
    with ExitStack() as stack:
        try:
            pdf = stack.enter_context(buffers.open_bytes(data, password=""))
        except pikepdf.PasswordError as error:
            raise _password_required() from error
        except pikepdf.PdfError as error:
            if "encrypt" in str(error).lower():
                raise PdfRejected(
                    "unsupported_encryption",
                    "The PDF uses an encryption method the portal cannot open (for example certificate "
                    "encryption, or a broken encryption dictionary). Upload a copy saved without a password "
                    "or certificate protection.",
                ) from error
            raise

        # A user password with an empty owner password opens "as owner" with no password at all.
        if pdf.is_encrypted and not pdf.user_password_matched:
            raise _password_required()

        yield OpenedPdf(pdf=pdf, warnings=list(pdf.get_warnings()))


def check_budgets(
    pdf: pikepdf.Pdf,
    budgets: Budgets,
    keep: frozenset[tuple[int, int]] = frozenset(),
    visit: Callable[[pikepdf.Object, bytes], None] | None = None,
) -> dict[tuple[int, int], bytes]:
    """Check object count, nesting depth, image sizes and the decoded size of all streams.

    Args:
        pdf: The opened document.
        budgets: The limits to enforce.
        keep: Object ids of streams (page content) whose decoded bytes the caller wants back.
        visit: Called with each array, dictionary and stream and its serialised form (for a stream, its
            dictionary's), so that a caller that needs the same walk does not serialise everything again.

    Returns:
        The decoded bytes of the ``keep`` streams that are unfiltered or Flate-encoded, decode cleanly and
        fit within ``MAX_KEPT_BYTES`` each and ``MAX_KEPT_TOTAL_BYTES`` together. Other streams in
        ``keep`` are left out.

    Raises:
        PdfRejected: ``too_many_objects``, ``too_deep``, ``image_too_large`` or ``decoded_size_exceeded``.
    """
    declared = int(pdf.trailer.get("/Size", 0))
    if declared > budgets.max_objects:
        raise _too_many_objects(declared, budgets)
    objects = pdf.objects
    if len(objects) > budgets.max_objects:
        raise _too_many_objects(len(objects), budgets)

    decoded = 0
    kept_bytes = 0
    decoded_content: dict[tuple[int, int], bytes] = {}
    for obj in objects:
        top = obj.stream_dict if isinstance(obj, pikepdf.Stream) else obj
        if not isinstance(top, (pikepdf.Dictionary, pikepdf.Array)):
            continue

        text = top.unparse(resolved=True)
        if visit is not None:
            visit(obj, text)
        # A path cannot nest deeper than the number of openers in the whole object.
        if text.count(b"[") + text.count(b"<<") > budgets.max_nesting:
            check_nesting(top, budgets.max_nesting)
        if not isinstance(obj, pikepdf.Stream):
            continue

        remaining = budgets.max_decoded_bytes - decoded
        keep_limit = min(MAX_KEPT_BYTES, MAX_KEPT_TOTAL_BYTES - kept_bytes) if obj.objgen in keep else -1
        size, content = _stream_size(obj, text, budgets, remaining, keep_limit)
        decoded += size
        if decoded > budgets.max_decoded_bytes:
            raise PdfRejected(
                "decoded_size_exceeded",
                f"The PDF's compressed data would expand to more than "
                f"{budgets.max_decoded_bytes // 2**20} MiB, the portal's limit. It may be a "
                "decompression bomb. If it is a real report, reduce the image resolution and upload it "
                "again.",
            )
        if content is not None:
            decoded_content[obj.objgen] = content
            kept_bytes += len(content)
    return decoded_content


def check_pages(pdf: pikepdf.Pdf, budgets: Budgets) -> int:
    """Return the page count after checking it against the budget."""
    count = len(pdf.pages)
    if count == 0:
        raise PdfRejected("damaged", "The PDF has no pages. Upload a report with at least one page.")
    if count > budgets.max_pages:
        raise PdfRejected(
            "too_many_pages",
            f"The PDF has {count} pages; the portal accepts at most {budgets.max_pages}. "
            "Split it into smaller files and upload them separately.",
        )
    return count


def check_nesting(root: pikepdf.Object, max_depth: int) -> None:
    """Reject arrays and dictionaries nested deeper than ``max_depth`` below ``root``.

    Indirect children are not followed: every indirect object is checked as its own root.
    """
    start = root.stream_dict if isinstance(root, pikepdf.Stream) else root
    stack: list[tuple[pikepdf.Object, int]] = [(start, 1)]

    while stack:
        obj, depth = stack.pop()
        if depth > max_depth:
            raise PdfRejected(
                "too_deep",
                f"The PDF nests arrays or dictionaries more than {max_depth} levels deep, which no normal "
                "report does. Save it again as a standard PDF and upload that file.",
            )
        if isinstance(obj, pikepdf.Dictionary):
            children = obj.values()
        elif isinstance(obj, pikepdf.Array):
            children = obj
        else:
            continue
        for child in children:
            if isinstance(child, (pikepdf.Dictionary, pikepdf.Array)) and not child.is_indirect:
                stack.append((child, depth + 1))


def stream_filters(stream: pikepdf.Stream) -> tuple[list[str], list[dict[str, int]]]:
    """Return the filter names and decode parameters of ``stream`` as plain Python values."""
    dictionary = stream.stream_dict
    raw_filter = entry(dictionary, "/Filter")
    if isinstance(raw_filter, pikepdf.Name):
        names = [str(raw_filter)]
    elif isinstance(raw_filter, pikepdf.Array):
        names = [str(item) for item in raw_filter if isinstance(item, pikepdf.Name)]
    else:
        names = []

    raw_parameters = entry(dictionary, "/DecodeParms")
    if isinstance(raw_parameters, pikepdf.Dictionary):
        items = [raw_parameters]
    elif isinstance(raw_parameters, pikepdf.Array):
        items = [item for item in raw_parameters if isinstance(item, pikepdf.Dictionary)]
    else:
        items = []
    parameters = [
        {str(key): int(value) for key, value in item.items() if isinstance(value, int)}
        if isinstance(item, pikepdf.Dictionary)
        else {}
        for item in items
    ]
    return names, parameters


def _stream_size(
    stream: pikepdf.Stream, text: bytes, budgets: Budgets, remaining: int, keep_limit: int
) -> tuple[int, bytes | None]:
    """Return the estimated decoded size of ``stream`` and its decoded bytes if they fit ``keep_limit``.

    A negative ``keep_limit`` keeps nothing.
    """
    names, parameters = stream_filters(stream)
    raw = stream.read_raw_bytes()
    content = None
    if keep_limit >= 0 and not names:
        size = len(raw)
        content = raw if size <= keep_limit else None
    elif keep_limit >= 0 and names in (["/FlateDecode"], ["/Fl"]) and not parameters:
        size, content = streams.inflate_content(raw, max(remaining, 0), keep_limit)
    else:
        size = streams.decoded_length(raw, names, parameters, max(remaining, 0))

    # Only an image dictionary or a JBIG2 stream can name a pixel size.
    if b"/Width" in text or "/JBIG2Decode" in names:
        _check_image(stream, names, raw, budgets)

    # Image codecs are never decoded by the portal. Their pixels are bounded per image above, so they count
    # at their compressed size: ten 12-megapixel photos would otherwise exceed the decoded-size budget.
    return size, content


def _check_image(stream: pikepdf.Stream, names: list[str], raw: bytes, budgets: Budgets) -> None:
    dimensions = _image_dimensions(stream, names, raw)
    if dimensions is None:
        return
    width, height = dimensions
    if width * height > budgets.max_image_pixels:
        raise PdfRejected(
            "image_too_large",
            f"An image in the PDF is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"the portal accepts at most {budgets.max_image_pixels / 1e6:.0f} megapixels per image. "
            "Reduce the image resolution and upload the file again.",
        )


def _image_dimensions(stream: pikepdf.Stream, names: list[str], raw: bytes) -> tuple[int, int] | None:
    width = stream.stream_dict.get("/Width")
    height = stream.stream_dict.get("/Height")
    if isinstance(width, int) and isinstance(height, int):
        return abs(int(width)), abs(int(height))

    # JBIG2 data carries its own page size; a JBIG2 stream without /Width is not a normal image.
    if names and names[-1] == "/JBIG2Decode" and len(names) == 1:
        return streams.jbig2_dimensions(raw)
    return None


def _too_many_objects(count: int, budgets: Budgets) -> PdfRejected:
    return PdfRejected(
        "too_many_objects",
        f"The PDF contains {count} objects; the portal accepts at most {budgets.max_objects}. "
        "Save it again with a PDF optimiser or split it, and upload the smaller file.",
    )


def _password_required() -> PdfRejected:
    return PdfRejected(
        "password_required",
        "The file needs a password to open. Upload a copy saved without a password.",
    )
