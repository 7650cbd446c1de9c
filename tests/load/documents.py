"""Generated report PDFs of a chosen size: pages of incompressible photo-like JPEGs with a line of text."""

from __future__ import annotations

import io
import random

import pikepdf
from PIL import Image

# Noise compresses badly, so a JPEG of it is about as large as a real clinical photo of the same size.
IMAGE_SIDE = 600
JPEG_QUALITY = 85


def noise_jpeg(seed: int, side: int = IMAGE_SIDE) -> bytes:
    """Return a JPEG of RGB noise, the same bytes for the same seed."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def photo_report(target_bytes: int, *, seed: int = 1, text_pages: int = 0) -> bytes:
    """Return a PDF of at least ``target_bytes``: one distinct noise photo per page, plus text-only pages.

    Text-only pages are cheap in bytes but each costs the watermark step its own work, so a large
    ``text_pages`` makes preparing a copy take longer without making the upload larger.
    """
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    written = 0
    number = 0
    while written < target_bytes:
        number += 1
        jpeg = noise_jpeg(seed * 100_000 + number)
        image = pdf.make_stream(
            jpeg,
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=IMAGE_SIDE,
            Height=IMAGE_SIDE,
            ColorSpace=pikepdf.Name.DeviceRGB,
            BitsPerComponent=8,
            Filter=pikepdf.Name.DCTDecode,
        )
        content = f"q 450 0 0 450 72 300 cm /Im1 Do Q BT /F1 14 Tf 72 780 Td (Photo {number}) Tj ET".encode()
        _add_page(
            pdf,
            content,
            pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font), XObject=pikepdf.Dictionary(Im1=image)),
        )
        written += len(jpeg)

    for extra in range(1, text_pages + 1):
        content = f"BT /F1 14 Tf 72 780 Td (Notes page {extra}) Tj ET".encode()
        _add_page(pdf, content, pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)))

    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def _add_page(pdf: pikepdf.Pdf, content: bytes, resources: pikepdf.Dictionary) -> None:
    page = pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, 595, 842],
        Resources=resources,
        Contents=pdf.make_stream(content),
    )
    pdf.pages.append(pikepdf.Page(page))
