"""Opening and saving PDFs held in memory, through anonymous memory files where Linux offers them.

pikepdf 10.18 reads a ``BytesIO`` through one Python call per qpdf read and writes through one call per
token, so opening and saving a 2,000-page report costs about three times as much as with a real file. An
anonymous memory file (``memfd_create``) gives qpdf a real file descriptor without a name in any folder,
so no document byte reaches the file system. Where ``memfd_create`` or ``/proc/self/fd`` is missing, the
functions fall back to ``BytesIO``.
"""

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pikepdf

_FD_FOLDER = Path("/proc/self/fd")


@contextlib.contextmanager
def open_bytes(data: bytes, password: str = "") -> Iterator[pikepdf.Pdf]:
    """Open ``data`` with pikepdf and close the document and its memory file on exit.

    Inherited page attributes (/MediaBox, /CropBox, /Rotate, /Resources) stay on the /Pages nodes, so
    readers must look them up there (``watermark.inherited``). Copying them down to every page, pikepdf's
    default, costs about 20 µs per page and changes the stored document for no gain.

    Raises:
        pikepdf.PasswordError: When ``password`` does not open the file.
        pikepdf.PdfError: When qpdf cannot read or repair the file.
    """
    memory = _memory_file(data)
    if memory is None:
        with pikepdf.open(io.BytesIO(data), password=password, inherit_page_attributes=False) as pdf:
            yield pdf
        return

    try:
        # qpdf opens the path itself, so it reads through its own descriptor at native speed.
        path = _FD_FOLDER / str(memory.fileno())
        with pikepdf.open(path, password=password, inherit_page_attributes=False) as pdf:
            yield pdf
    finally:
        memory.close()


def save_bytes(pdf: pikepdf.Pdf, **options: object) -> bytes:
    """Save ``pdf`` with the given ``Pdf.save`` options and return the file's bytes."""
    memory = _memory_file(b"")
    if memory is None:
        output = io.BytesIO()
        pdf.save(output, **options)  # type: ignore[arg-type]
        return output.getvalue()

    with memory:
        pdf.save(memory, **options)  # type: ignore[arg-type]
        memory.flush()
        memory.seek(0)
        return memory.read()


def _memory_file(data: bytes) -> io.BufferedRandom | None:
    if not hasattr(os, "memfd_create") or not _FD_FOLDER.is_dir():
        return None
    descriptor = os.memfd_create("portal-pdf", os.MFD_CLOEXEC)
    memory = os.fdopen(descriptor, "w+b")
    if data:
        memory.write(data)
        memory.flush()
        memory.seek(0)
    return memory
