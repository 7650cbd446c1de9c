"""Time the portal's download read path for a 50 MB blob against nginx serving the same file statically.

Usage: python bench/blob_vs_nginx.py [--size-mb 50] [--requests 10] [--wrk-seconds 10]

Measurements in one run, each ``--requests`` times (1 to 20), with every file in the page cache:

* nginx: ``curl`` downloads the plaintext file from nginx (``sendfile on``) on a free 127.0.0.1 port.
* raw AES-GCM: ``AESGCM.decrypt_into`` over the sealed segments already in memory, the floor for any
  Python read path.
* the portal's read path without HTTP, as ``/access/download`` runs it: ``BlobService.open_plaintext``
  (header, size, final segment and first MiB checked before the first byte), then one streaming pass;
  and, for comparison, the earlier two-pass read path (``BlobService.authenticate`` over the whole blob,
  then ``BlobService.plaintext``).
* portal over HTTP: ``curl`` downloads the single-pass stream from a minimal Litestar app under uvicorn
  on 127.0.0.1 that runs the same read path, which adds the ASGI and socket cost to the decryption.
* with ``--wrk-seconds`` above 0: wrk downloads from nginx and from that app with 1 and 16 connections.

The product target is that decryption costs less than 20 % of the time nginx needs to serve the file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from litestar import Litestar, get

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench._server import WrkResult, run_wrk
from portal.blobs import BlobService
from portal.crypto.envelope import (
    SEALED_SEGMENT_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    encrypt_stream,
    new_data_key,
)
from portal.storage.base import new_blob_id
from portal.storage.filesystem import FileBlobStore
from portal.streaming import BufferStream

CHUNK_SIZE = 1024 * 1024
WRK_CONNECTIONS = (1, 16)
REQUEST_TIMEOUT_SECONDS = 60
START_TIMEOUT_SECONDS = 10
SINGLE_READ_LABEL = "portal read path: checks before the first byte, then one pass (no HTTP)"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50, help="plaintext size in MB (10**6 bytes)")
    parser.add_argument("--requests", type=int, default=10, help="requests per measurement (1 to 20)")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="seconds per wrk run (0 skips wrk)")
    arguments = parser.parse_args()
    count = max(1, min(arguments.requests, 20))
    size = arguments.size_mb * 10**6

    for tool in ("nginx", "curl", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed; install nginx-light and curl, then run the benchmark again.")

    with tempfile.TemporaryDirectory(prefix="blob-vs-nginx-") as folder:
        root = Path(folder)
        plain = root / "www" / "report.pdf"
        plain.parent.mkdir()
        plain.write_bytes(os.urandom(size))
        # nginx workers run as an unprivileged user when started by root, so they need read access.
        for path in (root, plain.parent):
            path.chmod(0o755)
        plain.chmod(0o644)

        store = FileBlobStore(root / "blobs")
        data_key = new_data_key()
        blob_id = new_blob_id()
        asyncio.run(store.write(blob_id, encrypt_stream(data_key, blob_id, _file_chunks(plain))))

        service = BlobService(store, None)  # type: ignore[arg-type]  # reads need no key ring
        sealed = _seal_in_memory(plain.read_bytes(), data_key)

        nginx_times, nginx_wrk = _measure_nginx(root, plain, count, arguments.wrk_seconds)
        timings = {
            "raw AES-256-GCM decrypt_into, one pass, ciphertext in memory": [
                _time_raw_decrypt(sealed, data_key) for _ in range(count)
            ],
            SINGLE_READ_LABEL: [
                asyncio.run(_time(_read_path(service, blob_id, data_key))) for _ in range(count)
            ],
            "earlier read path: authenticate the whole blob, then decrypt again (no HTTP)": [
                asyncio.run(_time(_two_pass_read_path(service, blob_id, data_key))) for _ in range(count)
            ],
        }
        portal_times, portal_wrk = _measure_portal_http(
            service, blob_id, data_key, count, arguments.wrk_seconds
        )
        timings["portal read path over HTTP (uvicorn, curl over loopback)"] = portal_times

    _print_table(size, count, nginx_times, timings)
    _print_wrk(size, nginx_wrk, portal_wrk)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


async def _read_path(
    service: BlobService, blob_id: str, data_key: bytes
) -> AsyncIterator[bytes | memoryview]:
    """Open the blob with the checks before the first byte, then decrypt once while yielding."""
    copy = await service.open_plaintext(blob_id, data_key)
    async for chunk in copy.chunks:
        yield chunk
        await asyncio.sleep(0)


async def _two_pass_read_path(service: BlobService, blob_id: str, data_key: bytes) -> AsyncIterator[bytes]:
    await service.authenticate(blob_id, data_key)
    async for chunk in service.plaintext(blob_id, data_key):
        yield chunk
        await asyncio.sleep(0)


async def _time(chunks: AsyncIterator[bytes | memoryview]) -> float:
    started = time.perf_counter()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
    elapsed = time.perf_counter() - started
    assert size > 0
    return elapsed


def _seal_in_memory(plaintext: bytes, data_key: bytes) -> bytearray:
    """Seal 64 KiB segments like the envelope does, with the segment index as nonce and no header."""
    aead = AESGCM(data_key)
    sealed = bytearray()
    for index, start in enumerate(range(0, len(plaintext), SEGMENT_SIZE)):
        sealed += aead.encrypt(index.to_bytes(12, "big"), plaintext[start : start + SEGMENT_SIZE], None)
    return sealed


def _time_raw_decrypt(sealed: bytearray, data_key: bytes) -> float:
    aead = AESGCM(data_key)
    view = memoryview(sealed)
    scratch = memoryview(bytearray(SEGMENT_SIZE))
    started = time.perf_counter()
    for index, start in enumerate(range(0, len(view), SEALED_SEGMENT_SIZE)):
        segment = view[start : start + SEALED_SEGMENT_SIZE]
        aead.decrypt_into(index.to_bytes(12, "big"), segment, None, scratch[: len(segment) - TAG_SIZE])
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT_SECONDS} s")


def _curl_seconds(url: str) -> float:
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
            "--write-out",
            "%{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=REQUEST_TIMEOUT_SECONDS,
        check=True,
    )
    return float(result.stdout)


def _measure_nginx(
    root: Path, plain: Path, count: int, wrk_seconds: int
) -> tuple[list[float], dict[int, WrkResult]]:
    port = _free_port()
    config = root / "nginx.conf"
    config.write_text(
        f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {root}/nginx-body;
    proxy_temp_path {root}/nginx-proxy;
    fastcgi_temp_path {root}/nginx-fastcgi;
    uwsgi_temp_path {root}/nginx-uwsgi;
    scgi_temp_path {root}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {plain.parent};
    }}
}}
"""
    )
    server = subprocess.Popen(["nginx", "-c", str(config), "-p", str(root)], stderr=subprocess.PIPE)
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/{plain.name}"
        _curl_seconds(url)  # warm-up, not counted
        return [_curl_seconds(url) for _ in range(count)], _wrk_runs(url, wrk_seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _measure_portal_http(
    service: BlobService, blob_id: str, data_key: bytes, count: int, wrk_seconds: int
) -> tuple[list[float], dict[int, WrkResult]]:
    @get("/download")
    async def download() -> BufferStream:
        return BufferStream(_read_path(service, blob_id, data_key), media_type="application/pdf")

    port = _free_port()
    config = uvicorn.Config(
        Litestar([download]), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/download"
        _curl_seconds(url)  # warm-up, not counted
        return [_curl_seconds(url) for _ in range(count)], _wrk_runs(url, wrk_seconds)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wrk_runs(url: str, seconds: int) -> dict[int, WrkResult]:
    if seconds <= 0:
        return {}
    return {
        connections: run_wrk(url, connections=connections, seconds=seconds) for connections in WRK_CONNECTIONS
    }


def _print_table(size: int, count: int, nginx: list[float], timings: dict[str, list[float]]) -> None:
    nginx_median = statistics.median(nginx)
    print(
        f"{size / 10**6:.0f} MB, {count} requests each, median and best, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| Path | Median ms | Best ms | MB/s (median) | Share of nginx time (median) |")
    print("|---|---:|---:|---:|---:|")
    for label, times in {"nginx static file, sendfile, curl over loopback": nginx, **timings}.items():
        median = statistics.median(times)
        print(
            f"| {label} | {median * 1000:.1f} | {min(times) * 1000:.1f} | {size / median / 10**6:.0f} "
            f"| {median / nginx_median * 100:.0f} % |"
        )
    print()
    decrypt = statistics.median(timings[SINGLE_READ_LABEL])
    verdict = "meets" if decrypt < 0.2 * nginx_median else "misses"
    print(f"Decryption {verdict} the target of less than 20 % of nginx's time.")


def _print_wrk(size: int, nginx: dict[int, WrkResult], portal: dict[int, WrkResult]) -> None:
    if not nginx:
        return
    print()
    print("| Server (wrk, 2 threads) | Connections | Downloads/s | MB/s | p50 ms | p99 ms | Errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, results in (("nginx static file", nginx), ("uvicorn, portal read path", portal)):
        for connections, result in results.items():
            print(
                f"| {label} | {connections} | {result.requests_per_second:.1f} "
                f"| {result.megabytes_per_second:.0f} | {result.latency_p50_ms:.0f} "
                f"| {result.latency_p99_ms:.0f} | {result.errors} |"
            )


if __name__ == "__main__":
    main()
