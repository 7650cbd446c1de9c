"""Every corpus file through the worker pool: a correct protected copy, or a clear rejection."""

import io
import time

import pikepdf
import pytest
from pikepdf.models.encryption import EncryptionMethod

from portal.pdf import PdfRejected, PdfWorkerPool
from portal.pdf.sanitize import find_active_content
from tests.unit.pdf.conftest import CorpusFile, corpus_rows
from tests.unit.pdf.helpers import PASSWORD, RECIPIENT, copy_request, visible_boxes, watermark_lines

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_SECONDS = 10.0
MAX_WORKER_RSS = 2**30
MIN_FONT_POINTS = 6.0
TOLERANCE = 0.5


@pytest.mark.parametrize("row", corpus_rows(), ids=lambda row: row.name)
async def test_corpus_file(pool: PdfWorkerPool, row: CorpusFile) -> None:
    started = time.monotonic()
    try:
        stored = await pool.sanitize(row.read())
        assert pool.last_peak_rss is not None
        assert pool.last_peak_rss < MAX_WORKER_RSS
        copy = await pool.prepare_copy(copy_request([stored.pdf]))
        assert pool.last_peak_rss is not None
        assert pool.last_peak_rss < MAX_WORKER_RSS
    except PdfRejected as rejected:
        assert row.expected in ("reject", "either"), f"{row.name}: {rejected.code}: {rejected.message}"
        assert rejected.code
        assert len(rejected.message) > 20
        assert time.monotonic() - started < MAX_SECONDS
        return

    assert row.expected in ("process", "either"), f"{row.name} was accepted but must be rejected"
    assert time.monotonic() - started < MAX_SECONDS
    assert stored.pages >= 1
    check_copy(stored.pdf, copy)


def check_copy(stored: bytes, copy: bytes) -> None:
    """The copy is AES-256 R6, needs its password, and carries a readable watermark on every page."""
    with pikepdf.open(io.BytesIO(copy), password=PASSWORD) as pdf:
        assert pdf.encryption.R == 6
        assert pdf.encryption.stream_method == EncryptionMethod.aesv3
        assert pdf.encryption.bits == 256
        assert find_active_content(pdf) == []
        page_count = len(pdf.pages)
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(copy))
    with pikepdf.open(io.BytesIO(stored)) as original:
        assert not original.is_encrypted
        assert find_active_content(original) == []

    pages = watermark_lines(copy, PASSWORD, RECIPIENT)
    boxes = visible_boxes(copy, PASSWORD)
    assert len(pages) == page_count
    for number, (lines, (box, user_unit)) in enumerate(zip(pages, boxes, strict=True), start=1):
        assert len(lines) == 2, f"page {number}: watermark lines found {len(lines)}"
        for line in lines:
            left, bottom, right, top = line.box
            assert left >= box[0] - TOLERANCE, f"page {number}: {line} {box}"
            assert bottom >= box[1] - TOLERANCE, f"page {number}: {line} {box}"
            assert right <= box[2] + TOLERANCE, f"page {number}: {line} {box}"
            assert top <= box[3] + TOLERANCE, f"page {number}: {line} {box}"
        for line in lines:
            assert line.font_size * user_unit >= MIN_FONT_POINTS, f"page {number}: {line.font_size} pt"
