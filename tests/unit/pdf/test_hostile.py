"""Hand-made hostile files through the worker pool: each is rejected quickly, or cleaned."""

import io
import time

import pikepdf
import pytest

from portal.pdf import PdfRejected, PdfWorkerPool
from portal.pdf.sanitize import find_active_content
from tests.unit.pdf import helpers

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def reject_code(pool: PdfWorkerPool, data: bytes) -> str:
    with pytest.raises(PdfRejected) as caught:
        await pool.sanitize(data)
    assert caught.value.message
    return caught.value.code


async def test_deflate_bomb_rejected_fast(pool: PdfWorkerPool) -> None:
    bomb = helpers.deflate_bomb(300 * 2**20)
    assert len(bomb) < 300 * 2**20 // 900

    started = time.monotonic()
    code = await reject_code(pool, bomb)

    assert code == "decoded_size_exceeded"
    # The budget is CPU time in the worker; wall time includes waiting for a busy machine, so it gets headroom.
    assert pool.last_cpu_seconds is not None
    assert pool.last_cpu_seconds < 1.0
    assert time.monotonic() - started < 5.0
    assert pool.last_peak_rss is not None
    assert pool.last_peak_rss < 100 * 2**20


async def test_huge_image_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, helpers.page_with_image(20_000, 20_000)) == "image_too_large"


async def test_deep_nesting_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, helpers.deeply_nested(10_000)) in ("too_deep", "damaged")


async def test_cyclic_page_tree_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, helpers.cyclic_page_tree()) == "damaged"


async def test_zero_bytes_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, b"") == "empty"


async def test_html_named_pdf_rejected(pool: PdfWorkerPool) -> None:
    html = b"<!DOCTYPE html><html><body><script>alert(1)</script>%PDF-1.7 later</body></html>" + b" " * 2000
    assert await reject_code(pool, html[:1024].replace(b"%PDF-", b"%PDX-") + html[1024:]) == "not_pdf"


async def test_no_visible_area_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, helpers.no_visible_area()) == "no_visible_area"


async def test_dynamic_xfa_rejected(pool: PdfWorkerPool) -> None:
    assert await reject_code(pool, helpers.dynamic_xfa()) == "xfa_dynamic"


async def test_obfuscated_javascript_removed(pool: PdfWorkerPool) -> None:
    original = helpers.obfuscated_javascript()
    assert b"/JavaScript" not in original

    stored = await pool.sanitize(original)

    assert "JavaScript" in stored.removed
    assert b"app.alert" not in stored.pdf
    assert b"app.launchURL" not in stored.pdf
    with pikepdf.open(io.BytesIO(stored.pdf)) as pdf:
        assert find_active_content(pdf) == []
        assert "/AA" not in pdf.pages[0].obj
