"""Rendering one page of a copy to PNG with pypdfium2, at a bounded size."""

import io
import warnings

import pypdfium2
from PIL import Image

from portal.pdf.errors import PdfRejected

MAX_WIDTH_PX = 4000
MAX_SCALE = 8.0
MAX_PIXELS = 16_000_000


def render_page(data: bytes, password: str | None, page_index: int, max_width_px: int = 1200) -> bytes:
    """Render page ``page_index`` (0-based) of ``data`` to PNG, at most ``max_width_px`` wide.

    The scale is also capped at 8 (576 dpi) and at 16 megapixels per image, whatever the page size.

    Raises:
        PdfRejected: ``password_required``, ``page_not_found`` or ``damaged``.
    """
    width_limit = min(max(int(max_width_px), 1), MAX_WIDTH_PX)
    try:
        document = pypdfium2.PdfDocument(data, password=password)
    except pypdfium2.PdfiumError as error:
        if "password" in str(error).lower():
            raise PdfRejected(
                "password_required",
                "The copy needs its password to be shown. Enter the password printed on the access slip.",
            ) from error
        raise PdfRejected(
            "damaged", "The PDF could not be opened for display. Ask the clinic to share it again."
        ) from error

    try:
        if not 0 <= page_index < len(document):
            raise PdfRejected(
                "page_not_found",
                f"Page {page_index + 1} does not exist; the document has {len(document)} pages.",
            )
        page = document[page_index]
        width, height = page.get_size()
        if width <= 0 or height <= 0:
            raise PdfRejected("no_visible_area", f"Page {page_index + 1} has no visible area to display.")
        scale = min(width_limit / width, MAX_SCALE, (MAX_PIXELS / (width * height)) ** 0.5)
        image = page.render(scale=scale).to_pil()
        page.close()
    except pypdfium2.PdfiumError as error:
        raise PdfRejected("damaged", f"Page {page_index + 1} could not be displayed.") from error
    finally:
        document.close()

    output = io.BytesIO()
    with warnings.catch_warnings():
        # Pillow only warns between 89 and 179 megapixels; here any such warning stops the job.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image.save(output, format="PNG", optimize=False)
    return output.getvalue()
