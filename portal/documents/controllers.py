"""Upload form and document page for clinicians."""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template

from portal.core import Portal
from portal.documents.service import load_document, open_patient_ref, parse_upload_form, upload_document
from portal.errors import InvalidInput, PortalError
from portal.i18n import _
from portal.models import StaffUser
from portal.shares.service import share_status, shares_for_document
from portal.web import actor_for, portal_of, require_staff

UPLOAD_BODY_LIMIT = 31_000_000  # the policy's 30 MB file plus the form fields around it


async def read_upload(request: Request[Any, Any, Any], portal: Portal) -> tuple[dict[str, str], bytes]:
    """Read a multipart upload: the text fields and the file's bytes, capped at the policy's size."""
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput(
            _("No file was attached. Choose the report's PDF file and send the form again."), field="file"
        )

    limit = portal.policies.security.upload_max_body_bytes
    data = await upload.read(limit + 1)
    await upload.close()
    if len(data) > limit:
        raise InvalidInput(
            _("The file is larger than {max} MB. Reduce the photo resolution and upload it again.").format(
                max=limit // 1_000_000
            ),
            code="too_large",
            field="file",
        )
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    return fields, data


async def _dashboard_with_errors(
    request: Request[Any, Any, Any], user: StaffUser, fields: dict[str, str], error: PortalError
) -> Template:
    from portal.shares.controllers import render_dashboard

    return await render_dashboard(
        request,
        user,
        errors={error.field or "file": error.message},
        form=fields,
        status_code=error.status_code,
    )


@post("/staff/documents", include_in_schema=False, request_max_body_size=UPLOAD_BODY_LIMIT)
async def upload(request: Request[Any, Any, Any]) -> Template | Redirect:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    fields: dict[str, str] = {}
    try:
        fields, data = await read_upload(request, portal)
        form = parse_upload_form(fields.get("title"), fields.get("patient_ref"), fields.get("report_date"))
        document = await upload_document(portal, actor_for(request, f"staff:{user.id}"), user, form, data)
    except (InvalidInput, PortalError) as error:
        if isinstance(error, PortalError) and error.status_code not in (400, 413, 422):
            raise
        return await _dashboard_with_errors(request, user, fields, error)
    return Redirect(f"/staff/documents/{document.id}", status_code=303)


@get("/staff/documents/{document_id:str}", include_in_schema=False)
async def document_page(request: Request[Any, Any, Any], document_id: FromPath[str]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    document = await load_document(portal, document_id)
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
            "errors": {},
            "form": {},
        },
    )


document_routes = [upload, document_page]
__all__ = ["document_routes", "uuid"]
