"""Measure streamed decryption of a blob from the filesystem store against reading the plain file.

Usage: python bench/blob_decrypt.py [--size-mb 50] [--runs 3] [--nginx]

Every figure is MB/s (10**6 bytes per second) of plaintext delivered, best and median of ``--runs`` runs,
with the file in the page cache after the first run. ``--nginx`` also starts nginx on 127.0.0.1 with a
throwaway configuration and downloads the plain file ``--runs`` times over loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal.crypto.envelope import decrypt_async, decrypt_stream, encrypt_stream, new_data_key
from portal.storage.base import new_blob_id
from portal.storage.filesystem import FileBlobStore

CHUNK_SIZE = 256 * 1024
HTTP_TIMEOUT_SECONDS = 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50, help="plaintext size in MB (10**6 bytes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (1 to 20)")
    parser.add_argument("--nginx", action="store_true", help="also measure nginx serving the plain file")
    arguments = parser.parse_args()
    runs = max(1, min(arguments.runs, 20))
    size = arguments.size_mb * 10**6

    with tempfile.TemporaryDirectory(prefix="blob-bench-") as folder:
        root = Path(folder)
        plain_path = root / "plain.bin"
        _write_random_file(plain_path, size)

        store = FileBlobStore(root / "blobs")
        dek = new_data_key()
        blob_id = new_blob_id()
        encrypted_path = store.root / blob_id[:2] / blob_id[2:4] / blob_id

        started = time.perf_counter()
        asyncio.run(store.write(blob_id, encrypt_stream(dek, blob_id, _file_chunks(plain_path))))
        _report("encrypt + atomic write (fsync), once", size, [time.perf_counter() - started])

        _report("plain file read", size, _time(runs, lambda: _consume(_file_chunks(plain_path))))
        _report(
            "decrypt_stream from file (sync)",
            size,
            _time(runs, lambda: _consume(decrypt_stream(dek, blob_id, _file_chunks(encrypted_path)))),
        )
        _report(
            "FileBlobStore.read, no decryption",
            size,
            _time(runs, lambda: asyncio.run(_consume_async(store.read(blob_id)))),
        )
        _report(
            "FileBlobStore.read + decrypt_async",
            size,
            _time(
                runs, lambda: asyncio.run(_consume_async(decrypt_async(dek, blob_id, store.read(blob_id))))
            ),
        )

        if arguments.nginx:
            _measure_nginx(root, plain_path, size, runs)


def _measure_nginx(root: Path, plain_path: Path, size: int, runs: int) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        print("nginx: not installed, skipped")
        return

    # nginx workers run as an unprivileged user, which must be able to read the served folder.
    serve = root / "www"
    serve.mkdir(mode=0o755)
    shutil.copyfile(plain_path, serve / "plain.bin")
    os.chmod(serve / "plain.bin", 0o644)
    root.chmod(0o755)

    port = _free_port()
    config = root / "nginx.conf"
    config.write_text(
        f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {serve};
    }}
}}
"""
    )

    process = subprocess.Popen([nginx, "-p", str(root), "-c", str(config)])
    try:
        _wait_for_port(port)
        _report("nginx static, loopback HTTP", size, _time(runs, lambda: _download(port, size)))
    finally:
        process.terminate()
        process.wait(timeout=10)


def _download(port: int, size: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/plain.bin")
        response = connection.getresponse()
        received = 0
        while chunk := response.read(CHUNK_SIZE):
            received += len(chunk)
        if response.status != 200 or received != size:
            raise RuntimeError(f"nginx returned status {response.status} and {received} of {size} bytes.")
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, timeout_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} within {timeout_seconds} s.")


def _write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as file:
        for start in range(0, size, CHUNK_SIZE):
            file.write(os.urandom(min(CHUNK_SIZE, size - start)))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            yield chunk


def _consume(chunks: Iterator[bytes]) -> int:
    return sum(len(chunk) for chunk in chunks)


async def _consume_async(chunks: object) -> int:
    total = 0
    async for chunk in chunks:  # type: ignore[attr-defined]
        total += len(chunk)
    return total


def _time(runs: int, action: Callable[[], object]) -> list[float]:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return durations


def _report(label: str, size: int, durations: list[float]) -> None:
    best = size / 1e6 / min(durations)
    median = size / 1e6 / statistics.median(durations)
    print(f"{label:40s} best {best:8.0f} MB/s   median {median:8.0f} MB/s   ({len(durations)} runs)")


if __name__ == "__main__":
    main()
