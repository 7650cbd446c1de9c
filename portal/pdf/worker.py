"""A pool of warm worker processes that run the PDF jobs with memory and time limits.

Each worker is a fresh interpreter (``spawn``: no fork of the event loop's process) that sets RLIMIT_AS to
``Budgets.memory_bytes`` before it imports pikepdf, so helpers it starts (jbig2dec) inherit the limit. The
parent enforces ``Budgets.timeout_seconds`` by killing the worker's process group, and replaces a worker that
was killed or crashed. Jobs and replies travel over a pipe as length-prefixed JSON plus raw byte blobs:
never pickle, because a worker that parsed a hostile file is not trusted to send code-bearing objects.
No document bytes touch the file system.
"""

import asyncio
import contextlib
import datetime
import json
import logging
import multiprocessing
import os
import resource
import signal
import struct
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from portal.pdf.budgets import Budgets
from portal.pdf.errors import PdfRejected
from portal.pdf.pipeline import CopyRequest, SanitizedDocument

logger = logging.getLogger(__name__)

MAX_JOB_BYTES = 30 * 10**6
MAX_REPLY_BYTES = 128 * 2**20
START_TIMEOUT_SECONDS = 60.0
MAX_MESSAGE_CHARACTERS = 500

Header = dict[str, Any]


class _WorkerLost(Exception):
    """The worker process stopped before it replied."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "worker exited")
        self.timed_out = timed_out


def encode_message(header: Header, blobs: list[bytes]) -> bytes:
    """Frame a JSON header and byte blobs as one message."""
    header = {**header, "blobs": [len(blob) for blob in blobs]}
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([struct.pack(">I", len(encoded)), encoded, *blobs])


def decode_message(message: bytes) -> tuple[Header, list[bytes]]:
    """Split a message built by ``encode_message``; raise ``ValueError`` if it is malformed."""
    if len(message) < 4:
        raise ValueError("message shorter than its length prefix")
    (length,) = struct.unpack_from(">I", message)
    header = json.loads(message[4 : 4 + length].decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("blobs"), list):
        raise ValueError("message header is not an object with blob lengths")

    blobs = []
    offset = 4 + length
    for size in header["blobs"]:
        if not isinstance(size, int) or size < 0 or offset + size > len(message):
            raise ValueError("message blob lengths do not match its size")
        blobs.append(message[offset : offset + size])
        offset += size
    return header, blobs


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, budgets: Budgets) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child_end, budgets), daemon=True)
        self.process.start()
        child_end.close()

    def wait_ready(self) -> None:
        if not self.connection.poll(START_TIMEOUT_SECONDS):
            self.kill()
            raise RuntimeError(f"PDF worker did not start within {START_TIMEOUT_SECONDS:.0f} s")
        try:
            header, _ = decode_message(self.connection.recv_bytes(MAX_REPLY_BYTES))
        except (EOFError, OSError, ValueError) as error:
            self.kill()
            raise RuntimeError(
                f"PDF worker exited during start-up (exit code {self.process.exitcode})"
            ) from error
        if header.get("ready") is not True:
            self.kill()
            raise RuntimeError("PDF worker sent an unexpected first message")

    def roundtrip(self, message: bytes, timeout: float) -> bytes:
        try:
            self.connection.send_bytes(message)
            if not self.connection.poll(timeout):
                self.kill()
                raise _WorkerLost(timed_out=True)
            return self.connection.recv_bytes(MAX_REPLY_BYTES)
        except (EOFError, OSError) as error:
            self.kill()
            raise _WorkerLost(timed_out=False) from error

    def kill(self) -> None:
        """Kill the worker and anything it started (it leads its own process group)."""
        pid = self.process.pid
        if pid is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.join(timeout=5)
        self.connection.close()


class PdfWorkerPool:
    """Runs PDF jobs in ``size`` warm worker processes, from asyncio code.

    A job that exceeds ``budgets.timeout_seconds`` or makes its worker die raises ``PdfRejected`` with
    code ``timeout`` or ``memory_limit``; the worker is replaced in the background.
    """

    def __init__(self, size: int, budgets: Budgets, *, lazy: bool = False) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self.size = size
        self.budgets = budgets
        # A lazy pool starts its workers for the first job instead of in start(): a command or test that
        # never sends a PDF does not wait about a second for a worker to import pikepdf and warm up.
        self._lazy = lazy
        self._started = False
        self._start_lock = asyncio.Lock()
        self.last_peak_rss: int | None = None
        # CPU seconds the worker spent on the last job, which machine load does not inflate as it does wall time.
        self.last_cpu_seconds: float | None = None
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._replacements: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Start the workers and wait until each has imported pikepdf, warmed up and reported ready.

        A lazy pool returns at once and does this when the first job arrives.
        """
        if not self._lazy:
            await self._start_workers()

    async def _start_workers(self) -> None:
        async with self._start_lock:
            if not self._started:
                await asyncio.gather(*(self._add_worker() for _ in range(self.size)))
                self._started = True

    async def close(self) -> None:
        """Stop every worker; jobs still running fail with ``timeout``."""
        self._closed = True
        for task in list(self._replacements):
            task.cancel()
        for worker in list(self._workers):
            await asyncio.to_thread(worker.kill)
        self._workers.clear()

    async def __aenter__(self) -> "PdfWorkerPool":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def sanitize(self, data: bytes) -> SanitizedDocument:
        """Run ``pipeline.sanitize`` on ``data`` in a worker."""
        header, blobs = await self._run({"job": "sanitize"}, [data])
        return SanitizedDocument(
            pdf=blobs[0],
            pages=int(header["pages"]),
            removed=list(header["removed"]),
            warnings=list(header["warnings"]),
            repaired=bool(header["repaired"]),
        )

    async def prepare_copy(self, request: CopyRequest) -> bytes:
        """Run ``pipeline.prepare_copy`` for ``request`` in a worker."""
        fields = asdict(request)
        del fields["documents"], fields["marker"]
        fields["issued_on"] = request.issued_on.isoformat()
        _, blobs = await self._run({"job": "prepare_copy", **fields}, [request.marker, *request.documents])
        return blobs[0]

    async def render_page(
        self, data: bytes, password: str | None, page_index: int, max_width_px: int
    ) -> bytes:
        """Run ``pipeline.render_page`` in a worker and return PNG bytes."""
        header = {
            "job": "render_page",
            "password": password,
            "page_index": page_index,
            "max_width_px": max_width_px,
        }
        _, blobs = await self._run(header, [data])
        return blobs[0]

    async def _run(self, header: Header, blobs: list[bytes]) -> tuple[Header, list[bytes]]:
        if self._closed:
            raise RuntimeError("the PDF worker pool is closed")
        total = sum(len(blob) for blob in blobs)
        if total > MAX_JOB_BYTES:
            raise PdfRejected(
                "too_large",
                f"The files add up to {total / 1e6:.1f} MB; one PDF job accepts at most "
                f"{MAX_JOB_BYTES / 1e6:.0f} MB. Upload smaller files.",
            )

        message = encode_message(header, blobs)
        if not self._started:
            await self._start_workers()
        worker = await self._idle.get()
        try:
            reply = await asyncio.to_thread(worker.roundtrip, message, self.budgets.timeout_seconds)
        except _WorkerLost as lost:
            self._replace(worker)
            raise self._lost_error(lost) from None
        except BaseException:
            # A cancelled caller leaves the worker busy with a job whose result no one reads.
            await asyncio.to_thread(worker.kill)
            self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        return self._reply(reply)

    def _reply(self, reply: bytes) -> tuple[Header, list[bytes]]:
        header, blobs = decode_message(reply)
        peak = header.get("peak_rss")
        self.last_peak_rss = peak if isinstance(peak, int) else None
        cpu = header.get("cpu_seconds")
        self.last_cpu_seconds = float(cpu) if isinstance(cpu, (int, float)) else None
        if header.get("ok") is True:
            return header, blobs

        code = str(header.get("code", "internal_error"))[:64]
        message = "".join(char for char in str(header.get("message", "")) if char.isprintable())
        raise PdfRejected(code, message[:MAX_MESSAGE_CHARACTERS] or "The PDF could not be processed.")

    def _lost_error(self, lost: _WorkerLost) -> PdfRejected:
        if lost.timed_out:
            return PdfRejected(
                "timeout",
                "Processing the PDF took longer than the limit of "
                f"{self.budgets.timeout_seconds:.0f} seconds "
                "and was stopped. Save the file again from the program that made it, or split it, and retry.",
            )
        # NOTE: a crash for any other reason (a bug in a native library) is reported the same way.
        return PdfRejected(
            "memory_limit",
            "Processing the PDF needed more than the memory limit of "
            f"{self.budgets.memory_bytes // 2**20} MiB "
            "and was stopped. Save the file again from the program that made it, or split it, and retry.",
        )

    async def _add_worker(self) -> None:
        worker = await asyncio.to_thread(_Worker, self.budgets)
        # Known before it is ready, so that close() also stops a worker whose start was cancelled.
        self._workers.add(worker)
        try:
            await asyncio.to_thread(worker.wait_ready)
        except RuntimeError:
            self._workers.discard(worker)
            raise
        if self._closed:
            await asyncio.to_thread(worker.kill)
            return
        self._idle.put_nowait(worker)

    def _replace(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._add_worker())
        self._replacements.add(task)
        task.add_done_callback(self._replacement_done)

    def _replacement_done(self, task: asyncio.Task[None]) -> None:
        self._replacements.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("PDF worker replacement failed: %r", task.exception())


def worker_main(connection: Connection, budgets: Budgets) -> None:
    """Run jobs from ``connection`` until it closes (entry point of a worker process)."""
    os.setpgrp()
    resource.setrlimit(resource.RLIMIT_AS, (budgets.memory_bytes, budgets.memory_bytes))

    import warnings

    from PIL import Image

    from portal.pdf import pipeline

    # Pillow only warns between 89 and 179 megapixels; in a worker that warning is an error.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    pipeline.warm_up()
    connection.send_bytes(encode_message({"ready": True}, []))

    while True:
        try:
            message = connection.recv_bytes(MAX_JOB_BYTES + 2**20)
        except (EOFError, OSError):
            return
        _reset_peak_rss()
        job_started = time.process_time()
        try:
            header, blobs = _run_job(pipeline, budgets, *decode_message(message))
            reply = encode_message(
                {
                    "ok": True,
                    **header,
                    "peak_rss": _peak_rss(),
                    "cpu_seconds": time.process_time() - job_started,
                },
                blobs,
            )
        except PdfRejected as rejected:
            reply = encode_message(
                {
                    "ok": False,
                    "code": rejected.code,
                    "message": rejected.message,
                    "peak_rss": _peak_rss(),
                    "cpu_seconds": time.process_time() - job_started,
                },
                [],
            )
        except MemoryError:
            reply = encode_message(
                {
                    "ok": False,
                    "code": "memory_limit",
                    "message": "Processing the PDF needed more memory than the portal allows. "
                    "Save it again from the program that made it, or split it.",
                    "peak_rss": _peak_rss(),
                    "cpu_seconds": time.process_time() - job_started,
                },
                [],
            )
        except Exception as error:
            logger.exception("PDF job failed with %s", type(error).__name__)
            reply = encode_message(
                {
                    "ok": False,
                    "code": "internal_error",
                    "message": "The PDF could not be processed because of an internal error. "
                    "Try again later; if it keeps failing, contact support.",
                    "peak_rss": _peak_rss(),
                    "cpu_seconds": time.process_time() - job_started,
                },
                [],
            )
        connection.send_bytes(reply)


def _run_job(
    pipeline: Any, budgets: Budgets, header: Header, blobs: list[bytes]
) -> tuple[Header, list[bytes]]:
    job = header.get("job")

    if job == "sanitize":
        result = pipeline.sanitize(blobs[0], budgets)
        return (
            {
                "pages": result.pages,
                "removed": result.removed,
                "warnings": result.warnings,
                "repaired": result.repaired,
            },
            [result.pdf],
        )
    if job == "prepare_copy":
        request = CopyRequest(
            documents=blobs[1:],
            recipient_name=header["recipient_name"],
            share_reference=header["share_reference"],
            issued_on=datetime.date.fromisoformat(header["issued_on"]),
            marker=blobs[0],
            user_password=header["user_password"],
            allow_print=bool(header["allow_print"]),
            allow_copy=bool(header["allow_copy"]),
            footer=str(header["footer"]),
        )
        return {}, [pipeline.prepare_copy(request, budgets)]
    if job == "render_page":
        png = pipeline.render_page(
            blobs[0], header["password"], int(header["page_index"]), int(header["max_width_px"])
        )
        return {}, [png]
    raise ValueError(f"unknown PDF job {job!r}")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux 4.0+), so each job reports its own peak.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
