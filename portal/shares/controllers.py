"""Creating, following and revoking shares from the clinician's pages."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template

from portal.documents.service import load_document, open_patient_ref
from portal.errors import NotFound, PortalError
from portal.shares.service import (
    create_share,
    load_share,
    parse_share_form,
    revoke_share,
    share_status,
    shares_for_document,
)
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@post("/staff/documents/{document_id:str}/shares", include_in_schema=False)
async def create(request: Request[Any, Any, Any], document_id: FromPath[str], data: FormData) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    document = await load_document(portal, document_id)
    try:
        form = parse_share_form(
            portal, [str(document.id)], data.get("profile"), data.get("recipient_name"), data.get("purpose")
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

    # The code appears on this response only; Cache-Control: no-store keeps it out of the browser cache.
    return Template(
        "staff/share_created.html",
        context={
            "user": user,
            "share": issued.share,
            "document": document,
            "code": issued.printed_code,
            "profile": portal.policies.profiles[issued.share.profile],
            "access_url": f"{portal.settings.public_url}/access",
        },
        status_code=201,
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


share_routes = [create, share_page, revoke]
__all__ = ["NotFound", "share_routes", "uuid"]
