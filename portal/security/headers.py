"""An ASGI middleware that gives every response its security headers and a request id.

It wraps ``send`` so pages, static files, error responses and streamed downloads all get the headers,
including responses produced before Litestar's own middleware runs.
"""

from __future__ import annotations

import secrets
from typing import Any

from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from portal.logs import request_id_var

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_FIXED_HEADERS: list[tuple[bytes, bytes]] = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-robots-tag", b"noindex, nofollow"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]

_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _cross_site_write(scope: Scope) -> bool:
    """A state-changing request that the browser says came from another site."""
    if scope.get("method") not in _UNSAFE_METHODS:
        return False
    for name, value in scope.get("headers", []):
        if name == b"sec-fetch-site":
            return value not in (b"same-origin", b"none")
    return False


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(message.get("headers", []), request_id)
            await send(message)

        try:
            if _cross_site_write(scope):
                await _reject_cross_site(send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)


def _with_security_headers(headers: Any, request_id: str) -> list[tuple[bytes, bytes]]:
    result = [(bytes(name).lower(), bytes(value)) for name, value in headers]
    present = {name for name, _ in result}

    result.extend(_FIXED_HEADERS)
    result.append((b"x-request-id", request_id.encode()))

    content_type = next((value for name, value in result if name == b"content-type"), b"")
    if content_type.startswith(b"application/pdf"):
        # A PDF opened inline must not run scripts or reach the portal's origin.
        result.append((b"content-security-policy", b"sandbox"))
    elif b"content-security-policy" not in present:
        result.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))

    if b"cache-control" not in present:
        result.append((b"cache-control", b"no-store"))
    return result


async def _reject_cross_site(send: Send) -> None:
    body = b"Cross-site request rejected. Open the portal's own page and submit the form from there."
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 403,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
