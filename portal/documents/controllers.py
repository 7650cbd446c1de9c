"""Upload form and document page for clinicians."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.params import FromPath
from litestar.response import Redirect, Template

from portal.core import Portal
from portal.documents.service import (
    load_document,
    megabytes_text,
    open_patient_ref,
    parse_upload_form,
    shown_filename,
    too_large_message,
    upload_document,
)
from portal.errors import InvalidInput, PayloadTooLarge, PortalError
from portal.i18n import _
from portal.models import StaffUser
from portal.shares.service import share_status, shares_for_document
from portal.web import actor_for, portal_of, require_staff

# The framework rejects larger request bodies before any handler runs, with the plain 413 error page. Up
# to this size the handler reads the whole form, so a file over the policy's limit (30 MB by default) gets
# the upload form again, with the typed fields and a message that names the file and its size. Files go to
# a temporary file on disk above 1 MB while the form is parsed, so this bounds disk use, not memory.
# NOTE: a policy max_body_bytes above about 63 MB is cut to this limit; raise it together with the policy.
UPLOAD_BODY_LIMIT = 64_000_000


@dataclass(frozen=True)
class UploadedFile:
    filename: str
    data: bytes


def text_fields(form: FormMultiDict) -> dict[str, str]:
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def read_file_part(form: FormMultiDict, portal: Portal) -> UploadedFile:
    """Return the form's file part, or raise InvalidInput/PayloadTooLarge naming the file and its size."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput(
            _("No file was attached. Choose the report's PDF file and send the form again."), field="file"
        )

    limit = portal.policies.security.upload_max_body_bytes
    try:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            size = upload.file.seek(0, os.SEEK_END)
            raise PayloadTooLarge(
                too_large_message(shown_filename(upload.filename), megabytes_text(size), limit), field="file"
            )
    finally:
        await upload.close()
    return UploadedFile(filename=upload.filename, data=data)


async def read_upload(request: Request[Any, Any, Any], portal: Portal) -> tuple[dict[str, str], UploadedFile]:
    """Read a multipart upload: the text fields and the file, capped at the policy's size."""
    form = await request.form()
    return text_fields(form), await read_file_part(form, portal)


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
        submitted = await request.form()
        fields = text_fields(submitted)
        file = await read_file_part(submitted, portal)
        form = parse_upload_form(fields.get("title"), fields.get("patient_ref"), fields.get("report_date"))
        document = await upload_document(
            portal, actor_for(request, f"staff:{user.id}"), user, form, file.data, filename=file.filename
        )
    except PortalError as error:
        if error.status_code not in (400, 413, 422):
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
