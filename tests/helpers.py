"""Test personas and small steps of the share flow, used by integration and browser tests."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.core import Portal
from portal.models import StaffUser
from portal.staff.service import add_user, create_token
from tests.conftest import PASSWORD, csrf_from

CLINICIAN = "clinician@riverside.test"
SECOND_CLINICIAN = "colleague@riverside.test"
ADMIN = "admin@riverside.test"
DPO = "dpo@riverside.test"


def portal_of(app: Litestar) -> Portal:
    return app.state.portal  # type: ignore[no-any-return]


async def add_staff(app: Litestar, email: str, role: str) -> None:
    """Add the staff member unless the account exists already."""
    portal = portal_of(app)
    async with portal.transaction() as db:
        if await db.scalar(select(StaffUser).where(StaffUser.email == email)) is None:
            await add_user(db, email, role, PASSWORD)


async def token_for(app: Litestar, email: str, role: str) -> dict[str, str]:
    """Create the staff member and an API token; return the Authorization header."""
    await add_staff(app, email, role)
    async with portal_of(app).transaction() as db:
        token = await create_token(db, email, "tests", 30)
    return {"Authorization": f"Bearer {token}"}


async def sign_in(client: AsyncTestClient[Litestar], email: str, password: str = PASSWORD) -> Any:
    page = await client.get("/staff/login")
    return await client.post(
        "/staff/login",
        data={"email": email, "password": password, "_csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )


async def upload_pdf(
    client: AsyncTestClient[Litestar],
    headers: dict[str, str],
    data: bytes,
    *,
    title: str = "Wound healing progress",
    patient_ref: str = "PAT-0042",
    report_date: str | None = "2026-11-30",
) -> Any:
    fields = {"title": title, "patient_ref": patient_ref}
    if report_date:
        fields["report_date"] = report_date
    return await client.post(
        "/api/v1/documents",
        headers=headers,
        files={"file": ("report.pdf", data, "application/pdf")},
        data=fields,
    )


async def create_share(
    client: AsyncTestClient[Litestar],
    headers: dict[str, str],
    document_ids: list[str],
    *,
    profile: str = "patient",
    recipient_name: str = "Zoë Łukasiewicz",
    purpose: str = "Follow-up after treatment",
    language: str | None = None,
) -> Any:
    body = {
        "document_ids": document_ids,
        "profile": profile,
        "recipient_name": recipient_name,
        "purpose": purpose,
    }
    if language is not None:
        body["language"] = language
    return await client.post("/api/v1/shares", headers=headers, json=body)


async def redeem(client: AsyncTestClient[Litestar], code: str) -> Any:
    page = await client.get("/access")
    return await client.post("/access", data={"code": code, "_csrf_token": csrf_from(page.text)})


def simple_pdf(pages: int = 1) -> bytes:
    """A small report-like PDF with a line of text on each page."""
    import io

    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for number in range(1, pages + 1):
        content = f"BT /F1 18 Tf 72 720 Td (Progress report page {number}) Tj ET".encode()
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page,
            MediaBox=[0, 0, 595, 842],
            Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
            Contents=pdf.make_stream(content),
        )
        pdf.pages.append(pikepdf.Page(page))
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


async def issue_share(
    app: Litestar,
    client: AsyncTestClient[Litestar],
    *,
    profile: str = "patient",
    recipient_name: str = "Zoë Łukasiewicz",
) -> tuple[dict[str, str], dict[str, Any]]:
    """Upload a small report and share it; return the clinician's auth header and the share answer."""
    headers = await token_for(app, CLINICIAN, "clinician")
    uploaded = await upload_pdf(client, headers, simple_pdf())
    assert uploaded.status_code == 201, uploaded.text
    shared = await create_share(
        client, headers, [uploaded.json()["id"]], profile=profile, recipient_name=recipient_name
    )
    assert shared.status_code == 201, shared.text
    return headers, shared.json()
