"""Download buffers are reused only once nothing views them, also while uvicorn still sends a chunk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import uvloop
from litestar import Litestar, get

from portal.blobs import STREAM_BUFFERS, BlobService, StreamBuffers
from portal.crypto.envelope import encrypt_stream, new_data_key
from portal.storage.base import new_blob_id
from portal.storage.filesystem import FileBlobStore
from portal.streaming import BufferStream

SIZE = 1024


def test_buffer_held_by_a_view_is_not_reused() -> None:
    buffers = StreamBuffers(SIZE)
    first = buffers.take()
    chunk = memoryview(first)[:100]

    second = buffers.take()

    assert second is not first
    del chunk
    assert buffers.take() is first


def test_slice_keeps_buffer_in_use() -> None:
    buffers = StreamBuffers(SIZE)
    first = buffers.take()
    view = memoryview(first)
    # A transport that sent part of a chunk keeps a slice of it, and the slice views the same memory.
    rest = view[10:]
    del view

    assert buffers.take() is not first
    del rest
    assert buffers.take() is first


def test_buffers_beyond_the_kept_count_are_not_kept() -> None:
    buffers = StreamBuffers(SIZE)
    views = [memoryview(buffers.take()) for _ in range(STREAM_BUFFERS + 2)]
    extra = views[-1].obj

    del views

    # Holding a view of each buffer taken makes every take move on: past the kept ones, buffers are new.
    held = [memoryview(buffers.take()) for _ in range(STREAM_BUFFERS + 2)]
    assert all(view.obj is not extra for view in held)


def test_checking_keeps_size_and_memory() -> None:
    buffers = StreamBuffers(SIZE)
    first = buffers.take()
    first[:] = os.urandom(SIZE)
    before = bytes(first[:-1]), first.__alloc__()

    assert buffers.take() is first

    assert len(first) == SIZE
    assert (bytes(first[:-1]), first.__alloc__()) == before


@pytest.fixture
def stored_copy(tmp_path: Path) -> tuple[BlobService, str, bytes, bytes]:
    store = FileBlobStore(tmp_path / "blobs")
    data_key, blob_id = new_data_key(), new_blob_id()
    plaintext = os.urandom(12 * 1024 * 1024 + 12345)
    asyncio.run(store.write(blob_id, encrypt_stream(data_key, blob_id, [plaintext])))
    # Reads need no key ring.
    return BlobService(store, None), blob_id, data_key, plaintext  # type: ignore[arg-type]


@pytest.fixture
def server_url(stored_copy: tuple[BlobService, str, bytes, bytes]) -> Iterator[str]:
    """Serve the copy with uvicorn, uvloop and httptools, as ``portal serve`` does, on a loopback port."""
    service, blob_id, data_key, _plaintext = stored_copy

    @get("/copy")
    async def copy_route() -> BufferStream:
        copy = await service.open_plaintext(blob_id, data_key)
        return BufferStream(copy.chunks, headers={"Content-Length": str(copy.size)})

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    # Listening before the server starts queues the first connections instead of refusing them.
    listener.listen()
    config = uvicorn.Config(
        Litestar([copy_route]), loop="uvloop", http="httptools", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=uvloop.run, args=(server.serve(sockets=[listener]),), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/copy"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


async def test_slow_readers_receive_the_exact_copy(
    stored_copy: tuple[BlobService, str, bytes, bytes], server_url: str
) -> None:
    expected = hashlib.sha256(stored_copy[3]).hexdigest()

    async def slow_download(client: httpx.AsyncClient) -> str:
        digest = hashlib.sha256()
        async with client.stream("GET", server_url) as response:
            assert response.status_code == 200
            # Small reads with pauses keep the server's socket full, so uvicorn is still sending part of
            # a chunk when the next one is decrypted.
            async for piece in response.aiter_raw(64 * 1024):
                digest.update(piece)
                await asyncio.sleep(0.001)
        return digest.hexdigest()

    async with httpx.AsyncClient(timeout=60) as client:
        digests = await asyncio.gather(*(slow_download(client) for _ in range(4)))

    assert digests == [expected] * 4
