"""Headers, caching, PDF responses and error pages on every kind of response."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.security.headers import CONTENT_SECURITY_POLICY
from tests.helpers import issue_share, redeem

REQUIRED_CSP = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
)


def assert_security_headers(headers: object, path: str) -> None:
    get = headers.get  # type: ignore[attr-defined]
    assert get("strict-transport-security", "").startswith("max-age="), path
    assert get("x-content-type-options") == "nosniff", path
    assert get("referrer-policy") == "no-referrer", path
    assert "noindex" in get("x-robots-tag", ""), path
    assert re.fullmatch(r"[0-9a-f]{16}", get("x-request-id", "")), path


@pytest.mark.parametrize(
    "path", ["/access", "/staff/login", "/static/portal.css", "/no-such-page", "/api/v1/shares/x"]
)
async def test_headers_on_every_response(client: AsyncTestClient[Litestar], path: str) -> None:
    answer = await client.get(path)
    assert_security_headers(answer.headers, path)
    if answer.headers.get("content-type", "").startswith("text/html"):
        assert answer.headers["cache-control"] == "no-store"
        for directive in REQUIRED_CSP:
            assert directive in answer.headers["content-security-policy"]


def test_csp_constant_is_strict() -> None:
    for directive in REQUIRED_CSP:
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_pdf_response_headers(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    await redeem(client, share["access_code"])
    answer = await client.get("/access/download")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["cache-control"] == "no-store"
    disposition = answer.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="report-S-[0-9A-Z]{8}\.pdf"', disposition)
    assert_security_headers(answer.headers, "/access/download")


async def test_code_never_read_from_url(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    _headers, share = await issue_share(app, client)
    landing = await client.get("/access", params={"code": share["access_code"]})
    assert share["access_code"] not in landing.text
    spent = await client.get(f"/access?code={share['access_code']}", follow_redirects=False)
    assert spent.status_code == 200


async def test_unexpected_error_page(
    app: Litestar, client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    import portal.access.controllers as controllers

    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(controllers, "redeem", explode)
    page = await client.get("/access")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert token
    answer = await client.post("/access", data={"code": "x", "_csrf_token": token.group(1)})
    assert answer.status_code == 500
    assert "internal detail" not in answer.text
    assert "Traceback" not in answer.text
    assert answer.headers["x-request-id"] in answer.text

    api = await client.get("/api/v1/shares/not-a-uuid", headers={"Authorization": "Bearer nope"})
    assert api.status_code == 401
    assert set(api.json()["error"]) == {"code", "message", "field", "request_id"}


@pytest.mark.parametrize(
    ("path", "staff_links"),
    [("/staff/no-such-page", True), ("/admin/no-such-page", True), ("/no-such-page", False)],
)
async def test_error_page_links_fit_area(
    client: AsyncTestClient[Litestar], path: str, staff_links: bool
) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert ('href="/staff/home"' in answer.text) is staff_links
    assert ('href="/access"' in answer.text) is not staff_links, "recipients' links only outside staff pages"
