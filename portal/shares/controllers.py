"""Creating, following and revoking shares from the clinician's pages."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import anyio
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Response, Template
from markupsafe import Markup

from portal.core import Portal
from portal.documents.service import load_document, open_patient_ref
from portal.errors import InvalidInput, NotFound, PortalError
from portal.i18n import _
from portal.models import StaffUser
from portal.security import codes
from portal.security.hashing import CODE_HASHER, verify_secret
from portal.shares.service import (
    IssuedShare,
    approve_share,
    create_share,
    load_share,
    parse_share_form,
    reissue_share,
    revoke_share,
    share_status,
    shares_for_document,
)
from portal.shares.slip import access_link, qr_svg, slip_pdf
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@post("/staff/documents/{document_id:str}/shares", include_in_schema=False)
async def create(request: Request[Any, Any, Any], document_id: FromPath[str], data: FormData) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    document = await load_document(portal, document_id)
    try:
        form = parse_share_form(
            portal,
            [str(document.id)],
            data.get("profile"),
            data.get("recipient_name"),
            data.get("purpose"),
            data.get("date_of_birth"),
        )
        issued = await create_share(portal, actor_for(request, f"staff:{user.id}"), user, form)
    except PortalError as error:
        if error.status_code not in (400, 422):
            raise
        async with portal.transaction() as db:
            shares = await shares_for_document(db, document.id)
        return Template(
            "staff/document.html",
            context={
                "user": user,
                "document": document,
                "patient_ref": open_patient_ref(portal, document),
                "removed": json.loads(document.removed_content),
                "warnings": json.loads(document.warnings),
                "shares": [(share, share_status(share)) for share in shares],
                "profiles": portal.policies.profiles,
                "errors": {error.field or "recipient_name": error.message},
                "form": data,
            },
            status_code=error.status_code,
        )

    return _code_page(portal, user, issued)


def _code_page(portal: Portal, user: StaffUser, issued: IssuedShare, status_code: int = 201) -> Template:
    """Show a new code once, with its slip; Cache-Control: no-store keeps it out of the browser cache."""
    link = access_link(portal.settings.public_url, issued.printed_code)
    return Template(
        "staff/share_created.html",
        context={
            "user": user,
            "share": issued.share,
            "document_id": issued.share.documents[0].document_id if issued.share.documents else None,
            "code": issued.printed_code,
            "profile": portal.policies.profiles.get(issued.share.profile),
            "access_url": f"{portal.settings.public_url}/access",
            "qr_svg": Markup(qr_svg(link)),
        },
        status_code=status_code,
    )


@get("/staff/shares/{share_id:str}", include_in_schema=False)
async def share_page(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    return Template(
        "staff/share.html",
        context={"user": user, "share": share, "status": share_status(share), "profile": portal.policies.profiles.get(share.profile)},
    )


@post("/staff/shares/{share_id:str}/revoke", include_in_schema=False)
async def revoke(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Redirect:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    await revoke_share(portal, actor_for(request, f"staff:{user.id}"), share.id)
    return Redirect(f"/staff/shares/{share.id}", status_code=303)


@post("/staff/shares/{share_id:str}/reissue", include_in_schema=False)
async def reissue(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    issued = await reissue_share(portal, actor_for(request, f"staff:{user.id}"), share.id)
    return _code_page(portal, user, issued, status_code=200)


@post("/staff/shares/{share_id:str}/slip", include_in_schema=False, status_code=200)
async def slip(request: Request[Any, Any, Any], share_id: FromPath[str], data: FormData) -> Response[bytes]:
    """Return the slip as a PDF; the code comes back in the POST body and must match the stored hash."""
    await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    try:
        code = codes.normalise(data.get("code", ""))
    except codes.CodeFormatError:
        raise InvalidInput(_("The code is missing or mistyped. Reissue the share to get a new slip.")) from None
    if not await verify_secret(CODE_HASHER, share.code_hash, code):
        raise InvalidInput(_("This is not the share's current code. Reissue the share to get a new slip."))

    document = await anyio.to_thread.run_sync(
        lambda: slip_pdf(
            clinic=portal.settings.clinic_name,
            recipient=share.recipient_name,
            public_url=portal.settings.public_url,
            printed_code=codes.display(code),
            expires=share.expires_at.strftime("%Y-%m-%d %H:%M"),
            needs_birth_date=share.second_factor_hash is not None,
            reference=share.reference,
            contact=portal.settings.clinic_contact,
        )
    )
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="slip-{share.reference}.pdf"'},
    )


@post("/staff/shares/{share_id:str}/approve", include_in_schema=False)
async def approve(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Redirect:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    await approve_share(portal, actor_for(request, f"staff:{user.id}"), user, share.id)
    return Redirect(f"/staff/shares/{share.id}", status_code=303)


share_routes = [create, share_page, revoke, reissue, slip, approve]
__all__ = ["NotFound", "share_routes", "uuid"]
