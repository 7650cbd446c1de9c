"""Worker isolation: the time and memory limits end a job, and the pool replaces the worker."""

import asyncio

import pytest

from portal.pdf import Budgets, PdfRejected, PdfWorkerPool
from portal.pdf.worker import decode_message, encode_message
from tests.unit.pdf.conftest import corpus_file

HEAVY_FILE = "fuzz-210k-needs-500mb.pdf"


async def test_timeout_kills_and_replaces() -> None:
    async with PdfWorkerPool(1, Budgets(timeout_seconds=0.3)) as pool:
        with pytest.raises(PdfRejected) as caught:
            await pool.sanitize(corpus_file(HEAVY_FILE))
        assert caught.value.code == "timeout"
        assert "0 seconds" in caught.value.message or "seconds" in caught.value.message

        stored = await pool.sanitize(corpus_file("rotate-90-single-page.pdf"))
        assert stored.pages == 1


async def test_memory_limit_rejects() -> None:
    async with PdfWorkerPool(1, Budgets(memory_bytes=400 * 2**20)) as pool:
        with pytest.raises(PdfRejected) as caught:
            await pool.sanitize(corpus_file(HEAVY_FILE))
        assert caught.value.code in ("memory_limit", "damaged")

        stored = await pool.sanitize(corpus_file("rotate-90-single-page.pdf"))
        assert stored.pages == 1


async def test_job_size_limit() -> None:
    async with PdfWorkerPool(1, Budgets()) as pool:
        with pytest.raises(PdfRejected) as caught:
            await pool.sanitize(b"%PDF-1.7\n" + b" " * 31_000_000)
        assert caught.value.code == "too_large"


async def test_lazy_pool_starts_for_first_job() -> None:
    pool = PdfWorkerPool(2, Budgets(), lazy=True)
    await pool.start()
    try:
        assert not pool._workers, "a lazy pool starts no worker before a job"
        documents = await asyncio.gather(
            pool.sanitize(corpus_file("rotate-90-single-page.pdf")),
            pool.sanitize(corpus_file("rotate-90-single-page.pdf")),
        )
        assert [document.pages for document in documents] == [1, 1]
        assert len(pool._workers) == 2, "two jobs at once start the pool once"
        started = list(pool._workers)
    finally:
        await pool.close()
    assert all(worker.process.exitcode is not None for worker in started)


async def test_close_stops_lazy_pool_unused() -> None:
    pool = PdfWorkerPool(1, Budgets(), lazy=True)
    await pool.start()
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.sanitize(corpus_file("rotate-90-single-page.pdf"))


def test_message_round_trip() -> None:
    header, blobs = decode_message(encode_message({"job": "x", "name": "Дмитрий"}, [b"a", b"", b"bc"]))

    assert header["name"] == "Дмитрий"
    assert blobs == [b"a", b"", b"bc"]


def test_message_truncated_rejected() -> None:
    message = encode_message({"job": "x"}, [b"abcdef"])

    with pytest.raises(ValueError):
        decode_message(message[:-2])
