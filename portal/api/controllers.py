"""The JSON API for clinic systems: upload, share, share status, revoke, access-log export.

Every route authenticates with a bearer token and never with cookies, so CSRF does not apply here.
Errors are ``{"error": {"code", "message", "request_id"}}``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.encoding import Encoding
from litestar.params import FromPath
from litestar.response import Response, Stream

from portal.access.service import parse_api_date_of_birth
from portal.audit.export import FORMATS, bundle_stream, export_stream
from portal.audit.query import FILTER_KEYS, parse_filter
from portal.audit.recorder import EVENT_TYPES
from portal.core import Portal
from portal.documents.controllers import UPLOAD_BODY_LIMIT, read_upload
from portal.documents.service import _PATIENT_REF as PATIENT_REF_PATTERN
from portal.documents.service import parse_upload_form, upload_document
from portal.errors import InvalidInput
from portal.i18n import SUPPORTED_LANGUAGES, _
from portal.shares.service import (
    MAX_DOCUMENTS_PER_SHARE,
    IssuedShare,
    create_share,
    load_share,
    parse_share_form,
    reissue_share,
    revoke_share,
    share_status,
    share_summary,
)
from portal.staff.openapi import documented_operation, error_responses
from portal.web import (
    MULTIPART_MEDIA_TYPE,
    json_object,
    portal_of,
    require_media_type,
    require_token,
    token_actor,
)

# Response models for the OpenAPI schema. The handlers build plain dicts, and
# tests/integration/test_api_schema.py checks that the responses match these models.


@dataclass
class UploadedDocument:
    """A stored, sanitised report."""

    id: str
    title: str
    pages: int
    sha256: str
    report_date: dt.date | None
    removed: list[str]
    warnings: list[str]
    repaired: bool


ShareState = Literal["revoked", "awaiting_approval", "locked", "expired", "downloaded", "opened", "issued"]


@dataclass
class ShareWithCode:
    """A new share, or a share with a new code. The API returns ``access_code`` here once and never again.

    ``status`` is ``awaiting_approval`` when the recipient type needs a second clinician's approval: the
    code works only after a colleague approves the share on its page.
    """

    id: str
    reference: str
    access_code: str
    status: ShareState
    expires_at: dt.datetime
    not_before: dt.datetime | None
    recipient_org: str | None
    access_url: str
    profile: str
    language: str


@dataclass
class ShareStatus:
    """A share's state and counters, as shown to the clinic."""

    id: str
    reference: str
    profile: str
    status: ShareState
    created_at: dt.datetime
    expires_at: dt.datetime
    not_before: dt.datetime | None
    recipient_org: str | None
    revoked_at: dt.datetime | None
    locked_at: dt.datetime | None
    first_opened_at: dt.datetime | None
    redemptions: int
    max_redemptions: int
    downloads_started: int
    downloads_completed: int
    max_downloads: int
    failed_attempts: int
    approval_required: bool
    approved_at: dt.datetime | None
    document_ids: list[str]


def _text(description: str, max_length: int, **extra: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description, max_length=max_length, **extra)


UPLOAD_BODY = RequestBody(
    required=True,
    description="The PDF and the text fields below. The security policy caps the file (30 MB by default).",
    content={
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file", "title", "patient_ref"],
                properties={
                    "file": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.BINARY,
                        content_media_type="application/pdf",
                        description="The report's PDF file.",
                    ),
                    "title": _text("The report's title, shown to staff and recipients.", 200, min_length=1),
                    "patient_ref": _text(
                        "The clinic's own pseudonymous patient number, never a name.",
                        64,
                        pattern=PATIENT_REF_PATTERN.pattern,
                    ),
                    "report_date": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.DATE,
                        description="The report's date (YYYY-MM-DD), optional.",
                    ),
                },
            ),
            encoding={"file": Encoding(content_type="application/pdf")},
        )
    },
)

SHARE_BODY = RequestBody(
    required=True,
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["document_ids", "profile", "recipient_name", "purpose"],
                properties={
                    "document_ids": Schema(
                        type=OpenAPIType.ARRAY,
                        items=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
                        min_items=1,
                        max_items=MAX_DOCUMENTS_PER_SHARE,
                        unique_items=True,
                        description="Ids returned by the upload. All reports must belong to one patient.",
                    ),
                    "profile": _text("A recipient profile from policies/profiles.toml, e.g. 'patient'.", 64),
                    "recipient_name": _text(
                        "The recipient's name as the watermark shows it.", 120, min_length=1
                    ),
                    "purpose": _text(
                        "Why the report is shared, recorded in the access log.", 200, min_length=1
                    ),
                    "date_of_birth": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.DATE,
                        description=(
                            "The recipient's date of birth, required by profiles with that second factor. "
                            "YYYY-MM-DD only; any other form is refused with status 422."
                        ),
                    ),
                    "language": Schema(
                        type=OpenAPIType.STRING,
                        enum=list(SUPPORTED_LANGUAGES),
                        description=(
                            "The language of the slip and the watermark's footer. "
                            "Default: the language of the request's Accept-Language header."
                        ),
                    ),
                    "recipient_org": _text(
                        "The recipient's practice or organisation, printed on the slip after the name.", 200
                    ),
                    "expiry_days": Schema(
                        type=OpenAPIType.INTEGER,
                        minimum=1,
                        description="Days until the code expires; at most the profile's value, which is the default.",
                    ),
                    "max_downloads": Schema(
                        type=OpenAPIType.INTEGER,
                        minimum=0,
                        description="Downloads allowed; at most the profile's value, which is the default.",
                    ),
                    "not_before": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.DATE_TIME,
                        description=(
                            "When the code starts to work, at most 30 days ahead; the expiry counts from then. "
                            "A time without an offset is in the clinic's time zone. Default: now."
                        ),
                    ),
                },
            ),
            example={
                "document_ids": ["0b8e4c1e-6f0e-4a59-9b59-6f2b8c1d2e3f"],
                "profile": "patient",
                "recipient_name": "Zoë Łukasiewicz",
                "purpose": "Follow-up after treatment",
            },
        )
    },
)


def _query(name: str, description: str, **extra: Any) -> Parameter:
    return Parameter(
        name=name,
        param_in="query",
        required=False,
        schema=Schema(type=OpenAPIType.STRING, **extra),
        description=description,
    )


EVENT_FILTERS = [
    _query("patient_ref", "The clinic's patient number, matched through its pseudonym."),
    _query("share_id", "A share id (UUID) or the share reference printed on the slip, e.g. S-7K3M9QXA."),
    _query("recipient", "Part of a recipient's name or organisation, ignoring case.", max_length=200),
    _query("event_type", "One event type, e.g. share.created.", enum=sorted(EVENT_TYPES)),
    _query("ip_prefix", "An IPv4 or IPv6 network, e.g. 203.0.113.0/24."),
    _query("since", "The earliest time: YYYY-MM-DD or RFC 3339."),
    _query("until", "The latest time: YYYY-MM-DD (the whole day) or RFC 3339."),
]

EXPORT_FORMAT = _query("format", "jsonl (the default) or csv.", enum=sorted(FORMATS))

EXPORT_RESPONSE = OpenAPIResponse(
    description=(
        "The matching events, streamed as JSON Lines or as CSV (formula-safe). Each event ends with "
        "share_reference and actor_email, looked up at export time and not covered by the leaf hash."
    ),
    content={
        media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
        for media_type in FORMATS.values()
    },
)

BUNDLE_RESPONSE = OpenAPIResponse(
    description="A zip of the matching events, a signed checkpoint and inclusion proofs.",
    content={
        "application/zip": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        )
    },
)


@post(
    "/api/v1/documents",
    request_max_body_size=UPLOAD_BODY_LIMIT,
    include_in_schema=True,
    summary="Upload a report",
    description="Store a sanitised copy of a PDF. Needs the upload scope and a clinician or admin owner.",
    operation_class=documented_operation(request_body=UPLOAD_BODY),
    responses={
        201: ResponseSpec(UploadedDocument, description="The report was stored.", generate_examples=False),
        **error_responses(400, 401, 403, 413, 415, 422),
    },
)
async def api_upload(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    user = await require_token(request, "clinician", "admin", scope="upload")
    require_media_type(
        request,
        MULTIPART_MEDIA_TYPE,
        _(
            "Send the upload as multipart/form-data with the PDF in a part named file "
            "(this request had {sent})."
        ),
    )
    portal = portal_of(request)
    fields, file = await read_upload(request, portal)
    form = parse_upload_form(fields.get("title"), fields.get("patient_ref"), fields.get("report_date"))
    document = await upload_document(
        portal, token_actor(request), user, form, file.data, filename=file.filename
    )
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


# The fields of a share request; a misspelt optional field is refused instead of silently ignored.
SHARE_FIELDS = frozenset(
    {
        "document_ids",
        "profile",
        "recipient_name",
        "purpose",
        "date_of_birth",
        "language",
        "recipient_org",
        "expiry_days",
        "max_downloads",
        "not_before",
    }
)
# The share fields that take a whole number; the others take strings.
SHARE_NUMBER_FIELDS = ("expiry_days", "max_downloads")


@post(
    "/api/v1/shares",
    include_in_schema=True,
    summary="Share reports with one recipient",
    description="Create a share and its access code. Needs the share scope and a clinician or admin owner.",
    operation_class=documented_operation(request_body=SHARE_BODY),
    responses={
        201: ResponseSpec(
            ShareWithCode, description="The share and its code, shown once.", generate_examples=False
        ),
        **error_responses(400, 401, 403, 404, 415, 422),
    },
)
async def api_create_share(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    user = await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    body = await json_object(request)
    unknown = sorted(set(body) - SHARE_FIELDS)
    if unknown:
        raise InvalidInput(
            _("Unknown field '{name}'. A share takes: {fields}.").format(
                name=unknown[0][:40], fields=", ".join(sorted(SHARE_FIELDS))
            ),
            field=unknown[0][:40],
        )

    document_ids = body.get("document_ids")
    if not isinstance(document_ids, list) or not all(isinstance(item, str) for item in document_ids):
        raise InvalidInput(_("document_ids must be a list of document ids (strings)."), field="document_ids")
    text_fields = {
        name: body.get(name)
        for name in ("profile", "recipient_name", "purpose", "date_of_birth", "language", "recipient_org", "not_before")
    }
    for name, value in text_fields.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInput(_("{name} must be a string.").format(name=name), field=name)
    for name in SHARE_NUMBER_FIELDS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInput(
                _("{name} must be a whole number, not {value}.").format(name=name, value=json.dumps(value)[:40]),
                field=name,
            )

    # A system must send YYYY-MM-DD. A date with the month first is refused, because read day first it would
    # lock the patient out of the share. The staff forms read the dates people type.
    birth_date = text_fields["date_of_birth"]
    if birth_date is not None and birth_date.strip():
        birth_date = parse_api_date_of_birth(birth_date)
    form = parse_share_form(
        portal,
        document_ids,
        text_fields["profile"],
        text_fields["recipient_name"],
        text_fields["purpose"],
        birth_date,
        recipient_org=text_fields["recipient_org"],
        expiry_days=body.get("expiry_days"),
        max_downloads=body.get("max_downloads"),
        not_before=text_fields["not_before"],
        language=text_fields["language"],
    )
    issued = await create_share(portal, token_actor(request), user, form)
    return _issued_response(portal, issued)


def _issued_response(portal: Portal, issued: IssuedShare, status_code: int = 201) -> Response[dict[str, Any]]:
    share = issued.share
    body_out = {
        "id": str(share.id),
        "reference": share.reference,
        "access_code": issued.printed_code,
        "status": share_status(share),
        "expires_at": share.expires_at.isoformat(),
        "not_before": share.not_before.isoformat() if share.not_before else None,
        "recipient_org": share.recipient_org,
        "access_url": f"{portal.settings.public_url}/access",
        "profile": share.profile,
        "language": share.language,
    }
    return Response(body_out, status_code=status_code, headers={"Cache-Control": "no-store"})


@post(
    "/api/v1/shares/{share_id:str}/reissue",
    include_in_schema=True,
    status_code=200,
    summary="Issue a new access code",
    description="Replace the share's code; the old code stops working. Needs the share scope.",
    responses={
        200: ResponseSpec(
            ShareWithCode, description="The share and its new code, shown once.", generate_examples=False
        ),
        **error_responses(400, 401, 403, 404),
    },
)
async def api_reissue(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Response[dict[str, Any]]:
    await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    issued = await reissue_share(portal, token_actor(request), share.id)
    return _issued_response(portal, issued, status_code=200)


@get(
    "/api/v1/shares/{share_id:str}",
    include_in_schema=True,
    summary="Read a share's status",
    description="Needs the share scope.",
    responses={
        200: ResponseSpec(
            ShareStatus, description="The share's state and counters.", generate_examples=False
        ),
        **error_responses(401, 403, 404),
    },
)
async def api_share(request: Request[Any, Any, Any], share_id: FromPath[str]) -> dict[str, Any]:
    await require_token(request, "clinician", "admin", scope="share")
    share = await load_share(portal_of(request), share_id)
    return share_summary(share)


@post(
    "/api/v1/shares/{share_id:str}/revoke",
    include_in_schema=True,
    status_code=200,
    summary="Revoke a share",
    description="The code and any open recipient session stop working at once. Revoking twice is harmless.",
    responses={
        200: ResponseSpec(ShareStatus, description="The share after revoking.", generate_examples=False),
        **error_responses(401, 403, 404),
    },
)
async def api_revoke(request: Request[Any, Any, Any], share_id: FromPath[str]) -> dict[str, Any]:
    await require_token(request, "clinician", "admin", scope="share")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    share = await revoke_share(portal, token_actor(request), share.id)
    return share_summary(share)


@get(
    "/api/v1/audit/events",
    include_in_schema=True,
    summary="Export access-log events",
    description="Needs the audit-read scope and a DPO or admin owner. The export itself is logged.",
    operation_class=documented_operation(
        parameters=[EXPORT_FORMAT, *EVENT_FILTERS], responses={200: EXPORT_RESPONSE}
    ),
    responses=error_responses(400, 401, 403),
)
async def api_events(request: Request[Any, Any, Any]) -> Stream:
    await require_token(request, "dpo", "admin", scope="audit-read")
    portal = portal_of(request)
    params = {key: request.query_params.get(key) for key in FILTER_KEYS}
    filters = parse_filter(params)
    return await export_stream(
        portal, token_actor(request), filters, request.query_params.get("format") or "jsonl"
    )


@get(
    "/api/v1/audit/bundle",
    include_in_schema=True,
    summary="Export an evidence bundle",
    description="Needs the audit-read scope and a DPO or admin owner.",
    operation_class=documented_operation(parameters=EVENT_FILTERS, responses={200: BUNDLE_RESPONSE}),
    responses=error_responses(400, 401, 403),
)
async def api_bundle(request: Request[Any, Any, Any]) -> Stream:
    """Return an evidence bundle (zip) of the matching events, which `portal audit verify` checks offline."""
    await require_token(request, "dpo", "admin", scope="audit-read")
    portal = portal_of(request)
    filters = parse_filter({key: request.query_params.get(key) for key in FILTER_KEYS})
    return await bundle_stream(portal, token_actor(request), filters)


api_routes = [api_upload, api_create_share, api_share, api_revoke, api_reissue, api_events, api_bundle]
