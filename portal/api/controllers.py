"""The JSON API for clinic systems: upload, share, share status, revoke, access-log export.

Every route authenticates with a bearer token and never with cookies, so CSRF does not apply here.
Errors are ``{"error": {"code", "message", "request_id"}}``.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Response, Stream

from portal.audit.export import bundle_stream, export_stream
from portal.audit.query import FILTER_KEYS, parse_filter
from portal.core import Portal
from portal.documents.controllers import UPLOAD_BODY_LIMIT, read_upload
from portal.documents.service import parse_upload_form, upload_document
from portal.errors import InvalidInput
from portal.i18n import _
from portal.shares.service import (
    IssuedShare,
    create_share,
    load_share,
    parse_share_form,
    reissue_share,
    revoke_share,
    share_summary,
)
from portal.web import portal_of, require_token, token_actor


@post("/api/v1/documents", request_max_body_size=UPLOAD_BODY_LIMIT, include_in_schema=True)
async def api_upload(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    user = await require_token(request, "clinician", "admin", scope="upload")
    portal = portal_of(request)
    fields, data = await read_upload(request, portal)
    form = parse_upload_form(fields.get("title"), fields.get("patient_ref"), fields.get("report_date"))
    document = await upload_document(portal, token_actor(request), user, form, data)
    body = {
        "id": str(document.id),
        "title": document.title,
        "pages": document.pages,
        "sha256": document.sha256,
        "report_date": document.report_date.isoformat() if document.report_date else None,
        "removed": json.loads(document.removed_content),
        "warnings": json.loads(document.warnings),
        "repaired": document.repaired,
    }
    return Response(body, status_code=201)


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(_("The request body is not valid JSON. Send a JSON object.")) from None
    if not isinstance(body, dict):
        raise InvalidInput(_("The request body must be a JSON object."))
    return body


@post("/api/v1/shares", include_in_schema=True)
async def api_create_share(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    user = await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    body = await _json_body(request)

    document_ids = body.get("document_ids")
    if not isinstance(document_ids, list) or not all(isinstance(item, str) for item in document_ids):
        raise InvalidInput(_("document_ids must be a list of document ids (strings)."), field="document_ids")
    text_fields = {name: body.get(name) for name in ("profile", "recipient_name", "purpose", "date_of_birth")}
    for name, value in text_fields.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInput(_("{name} must be a string.").format(name=name), field=name)

    form = parse_share_form(
        portal,
        document_ids,
        text_fields["profile"],
        text_fields["recipient_name"],
        text_fields["purpose"],
        text_fields["date_of_birth"],
    )
    issued = await create_share(portal, token_actor(request), user, form)
    return _issued_response(portal, issued)


def _issued_response(portal: Portal, issued: IssuedShare, status_code: int = 201) -> Response[dict[str, Any]]:
    share = issued.share
    body_out = {
        "id": str(share.id),
        "reference": share.reference,
        "access_code": issued.printed_code,
        "expires_at": share.expires_at.isoformat(),
        "access_url": f"{portal.settings.public_url}/access",
        "profile": share.profile,
    }
    return Response(body_out, status_code=status_code, headers={"Cache-Control": "no-store"})


@post("/api/v1/shares/{share_id:str}/reissue", include_in_schema=True)
async def api_reissue(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Response[dict[str, Any]]:
    await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    issued = await reissue_share(portal, token_actor(request), share.id)
    return _issued_response(portal, issued, status_code=200)


@get("/api/v1/shares/{share_id:str}", include_in_schema=True)
async def api_share(request: Request[Any, Any, Any], share_id: FromPath[str]) -> dict[str, Any]:
    await require_token(request, "clinician", "admin", scope="share")
    share = await load_share(portal_of(request), share_id)
    return share_summary(share)


@post("/api/v1/shares/{share_id:str}/revoke", include_in_schema=True, status_code=200)
async def api_revoke(request: Request[Any, Any, Any], share_id: FromPath[str]) -> dict[str, Any]:
    await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    share = await revoke_share(portal, token_actor(request), share.id)
    return share_summary(share)


@get("/api/v1/audit/events", include_in_schema=True)
async def api_events(request: Request[Any, Any, Any]) -> Stream:
    await require_token(request, "dpo", "admin", scope="audit-read")
    portal = portal_of(request)
    params = {key: request.query_params.get(key) for key in FILTER_KEYS}
    filters = parse_filter(params)
    return await export_stream(portal, token_actor(request), filters, request.query_params.get("format") or "jsonl")


@get("/api/v1/audit/bundle", include_in_schema=True)
async def api_bundle(request: Request[Any, Any, Any]) -> Stream:
    """Return an evidence bundle (zip) of the matching events, which `portal audit verify` checks offline."""
    await require_token(request, "dpo", "admin", scope="audit-read")
    portal = portal_of(request)
    filters = parse_filter({key: request.query_params.get(key) for key in FILTER_KEYS})
    return await bundle_stream(portal, token_actor(request), filters)


api_routes = [api_upload, api_create_share, api_share, api_revoke, api_reissue, api_events, api_bundle]
