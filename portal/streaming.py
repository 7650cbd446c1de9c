"""A streamed response that hands each chunk to the server as the buffer it is.

Litestar 2's ``Stream`` calls ``encode`` on every chunk that is not ``bytes``, so a ``memoryview`` or
``bytearray`` chunk fails there and would need a copy into ``bytes``. uvicorn's httptools protocol passes
any bytes-like body to its transport, and a download is faster without that copy (docs/architecture.md).
``BufferStream`` keeps the rest of ``Stream`` as it is, including headers, cookies, background tasks and
the listener that cancels the body when the client disconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any, cast

from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Send


class _BufferStreamingResponse(ASGIStreamingResponse):
    # No slots of its own, so an ASGIStreamingResponse can become one (see BufferStream).
    __slots__ = ()

    async def _stream(self, send: Send) -> None:
        async for chunk in self.iterator:
            # The transport may still hold a chunk after send() returns, so no chunk may change once yielded.
            await send({"type": "http.response.body", "body": cast(bytes, chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class BufferStream(Stream):
    """``Stream`` for chunks of ``bytes``, ``bytearray`` or ``memoryview`` that are sent without a copy."""

    def __init__(self, content: AsyncIterable[bytes | bytearray | memoryview], **kwargs: Any) -> None:
        super().__init__(cast(AsyncIterable[bytes], content), **kwargs)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        if type(response) is not ASGIStreamingResponse:
            raise TypeError(f"Stream built a {type(response).__name__}, expected an ASGIStreamingResponse.")
        # The subclass adds no slots and overrides one method, so the object keeps every value Stream set.
        response.__class__ = _BufferStreamingResponse
        return response
