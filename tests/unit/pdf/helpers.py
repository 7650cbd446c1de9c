"""Checks shared by the PDF tests: watermark text boxes, rendered pixels and hand-made hostile files."""

import datetime
import io
import os
import zlib
from dataclasses import dataclass

import pikepdf
import pypdfium2
import pypdfium2.raw
from fontTools.ttLib import TTFont
from PIL import Image

from portal.pdf.pipeline import CopyRequest
from portal.pdf.watermark import page_geometry

RECIPIENT = "Zoë Łukasiewicz"
PASSWORD = "7K3M-9QXA-PLEH"
REFERENCE = "S-7K3M9Q"


def copy_request(
    documents: list[bytes],
    name: str = RECIPIENT,
    password: str | None = PASSWORD,
    marker: bytes | None = None,
) -> CopyRequest:
    return CopyRequest(
        documents=documents,
        recipient_name=name,
        share_reference=REFERENCE,
        issued_on=datetime.date(2025, 3, 14),
        marker=marker or os.urandom(16),
        user_password=password,
    )


@dataclass(frozen=True)
class TextLine:
    """Where one watermark line was found on a page, in user space."""

    box: tuple[float, float, float, float]
    font_size: float


def watermark_lines(copy: bytes, password: str | None, name: str) -> list[list[TextLine]]:
    """Find the diagonal and footer lines on every page by text extraction (pdfium)."""
    document = pypdfium2.PdfDocument(copy, password=password)
    pages = []
    for index in range(len(document)):
        textpage = document[index].get_textpage()
        text = textpage.get_text_range()
        lines = []
        for prefix in (f"{name} · ", f"Personal copy for {name}"):
            start = text.find(prefix)
            if start < 0:
                continue
            boxes = [
                textpage.get_charbox(position, loose=True) for position in range(start, start + len(prefix))
            ]
            left = min(box[0] for box in boxes)
            bottom = min(box[1] for box in boxes)
            right = max(box[2] for box in boxes)
            top = max(box[3] for box in boxes)
            # pdfium reports the effective size: font size scaled by the text matrix and the CTM.
            size = min(
                pypdfium2.raw.FPDFText_GetFontSize(textpage, position)
                for position in range(start, start + len(prefix))
                if not text[position].isspace()
            )
            lines.append(TextLine(box=(left, bottom, right, top), font_size=size))
        pages.append(lines)
    document.close()
    return pages


def drawn_as(copy: bytes, password: str | None, text: str) -> bool:
    """Tell whether the first page's watermark draws exactly the glyphs of ``text``, left to right.

    Glyph ids come from the cmap of the font program embedded in the copy, so the check does not rely
    on the code that wrote the copy.
    """
    with pikepdf.open(io.BytesIO(copy), password=password or "") as pdf:
        page = pdf.pages[0]
        font = page.obj.Resources.Font.WmFont
        program = font.DescendantFonts[0].FontDescriptor.FontFile2.read_bytes()
        watermark = page.obj.Contents[-1].read_bytes()
    embedded = TTFont(io.BytesIO(program))
    cmap = embedded.getBestCmap()
    glyphs = b"".join(embedded.getGlyphID(cmap[ord(char)]).to_bytes(2, "big") for char in text)
    return f"<{glyphs.hex()}> Tj".encode() in watermark


def visible_boxes(copy: bytes, password: str | None) -> list[tuple[tuple[float, float, float, float], float]]:
    """Return each page's visible box (CropBox ∩ MediaBox) and /UserUnit."""
    with pikepdf.open(io.BytesIO(copy), password=password or "") as pdf:
        result = []
        for number, page in enumerate(pdf.pages, start=1):
            geometry = page_geometry(page.obj, number)
            result.append((geometry.box, geometry.user_unit))
        return result


def render(data: bytes, password: str | None, index: int, width: int = 400) -> Image.Image:
    document = pypdfium2.PdfDocument(data, password=password)
    page = document[index]
    scale = width / page.get_width()
    image = page.render(scale=scale).to_pil().convert("RGB")
    document.close()
    return image


def magenta_mask_bbox(
    copy: Image.Image, original: Image.Image
) -> tuple[tuple[int, int, int, int] | None, tuple[int, int, int, int] | None]:
    """Bounding boxes of watermark-coloured pixels that differ from the original: all, and the bottom band."""
    width, height = copy.size
    original = original.resize(copy.size)
    copy_pixels = copy.load()
    original_pixels = original.load()
    xs, ys, band_xs = [], [], []
    for y in range(height):
        for x in range(0, width):
            red, green, blue = copy_pixels[x, y]
            if red - green > 40 and blue - green > 20 and copy_pixels[x, y] != original_pixels[x, y]:
                xs.append(x)
                ys.append(y)
                if y > height * 0.9:
                    band_xs.append(x)
    everything = (min(xs), min(ys), max(xs), max(ys)) if xs else None
    band = (min(band_xs), 0, max(band_xs), 0) if band_xs else None
    return everything, band


def raw_pdf(objects: list[bytes], root: int = 1) -> bytes:
    """Assemble a PDF from object bodies (object i+1 is objects[i]) with a correct xref table."""
    output = io.BytesIO()
    output.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(output.tell())
        output.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = output.tell()
    output.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        output.write(b"%010d 00000 n \n" % offset)
    trailer = b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    output.write(trailer % (len(objects) + 1, root, xref))
    return output.getvalue()


def stream_object(dictionary: bytes, data: bytes) -> bytes:
    return b"<< " + dictionary + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def deflate_bomb(decoded_bytes: int) -> bytes:
    """A one-page PDF whose content stream inflates from about 1/1000 of ``decoded_bytes``."""
    compressor = zlib.compressobj(9)
    chunk = b"\0" * 2**20
    parts = [compressor.compress(chunk) for _ in range(decoded_bytes // len(chunk))]
    parts.append(compressor.flush())
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            stream_object(b"/Filter /FlateDecode", b"".join(parts)),
        ]
    )


def page_with_image(width: int, height: int) -> bytes:
    """A one-page PDF drawing a JPEG-filtered image whose dictionary claims ``width`` x ``height``."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /XObject << /Im0 5 0 R >> >> "
            b"/Contents 4 0 R >>",
            stream_object(b"", b"q 600 0 0 780 6 6 cm /Im0 Do Q"),
            stream_object(
                b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                b"/BitsPerComponent 8 /Filter /DCTDecode" % (width, height),
                b"\xff\xd8\xff\xd9",
            ),
        ]
    )


def deeply_nested(depth: int) -> bytes:
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /Nested " + b"[" * depth + b"]" * depth + b" >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def cyclic_page_tree() -> bytes:
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def obfuscated_javascript() -> bytes:
    """JavaScript spelled /J#61vaScript in an OpenAction, a link annotation and a page /AA."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /OpenAction << /S /J#61vaScript /JS (app.alert\\(1\\)) >> >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Annots [4 0 R] "
            b"/#41A << /O << /S /J#61vaScript /JS (app.launchURL\\(1\\)) >> >> >>",
            b"<< /Type /Annot /Subtype /Link /Rect [0 0 100 100] /A << /S /J#61vaScript /JS 5 0 R >> >>",
            stream_object(b"", b"app.alert('stream')"),
        ]
    )


def no_visible_area() -> bytes:
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /CropBox [700 800 900 1000] >>",
        ]
    )


def dynamic_xfa() -> bytes:
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /NeedsRendering true /AcroForm << /Fields [] /XFA 4 0 R >> >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
            stream_object(b"", b"<xdp:xdp xmlns:xdp='http://ns.adobe.com/xdp/'></xdp:xdp>"),
        ]
    )
