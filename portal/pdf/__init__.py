"""PDF processing: sanitising uploads, watermarked and encrypted copies, page rendering, worker pool."""

from portal.pdf.budgets import Budgets
from portal.pdf.errors import PdfRejected
from portal.pdf.pipeline import (
    CopyRequest,
    SanitizedDocument,
    prepare_copy,
    read_marker,
    render_page,
    sanitize,
)
from portal.pdf.worker import PdfWorkerPool

__all__ = [
    "Budgets",
    "CopyRequest",
    "PdfRejected",
    "PdfWorkerPool",
    "SanitizedDocument",
    "prepare_copy",
    "read_marker",
    "render_page",
    "sanitize",
]
