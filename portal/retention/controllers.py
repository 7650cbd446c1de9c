"""Routes that erase a document now: a staff form and the JSON API."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, post
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import Body, FromPath
from litestar.response import Redirect

from portal.errors import InvalidInput
from portal.i18n import _
from portal.retention.erasure import ERASURE_REASONS, Erasure, erase_document
from portal.staff.openapi import documented_operation, error_responses
from portal.web import actor_for, json_object, portal_of, require_staff, require_token, token_actor

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
CONFIRMATION = "erase"


@post("/staff/documents/{document_id:str}/erase", include_in_schema=False)
async def erase_page(request: Request[Any, Any, Any], document_id: FromPath[str], data: FormData) -> Redirect:
    user = await require_staff(request, "clinician", "admin")

    # The typed word guards against a stray click on an action that cannot be undone.
    if data.get("confirm", "").strip().lower() != CONFIRMATION:
        raise InvalidInput(
            _("Erasure not confirmed. Type '{word}' in the confirmation field to erase the report.").format(
                word=CONFIRMATION
            ),
            field="confirm",
        )
    who = actor_for(request, f"staff:{user.id}")
    await erase_document(portal_of(request), who, document_id, data.get("reason", ""))
    return Redirect("/staff", status_code=303)


ERASE_BODY = RequestBody(
    required=True,
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["reason"],
                properties={"reason": Schema(type=OpenAPIType.STRING, enum=list(ERASURE_REASONS))},
            )
        )
    },
)


@post(
    "/api/v1/documents/{document_id:str}/erase",
    include_in_schema=True,
    status_code=200,
    operation_class=documented_operation(request_body=ERASE_BODY),
    responses=error_responses(400, 401, 403, 404, 409, 415),
)
async def erase_api(request: Request[Any, Any, Any], document_id: FromPath[str]) -> dict[str, Any]:
    await require_token(request, "clinician", "admin")
    body = await json_object(request)
    erasure = await erase_document(
        portal_of(request), token_actor(request), document_id, str(body.get("reason", ""))
    )
    return _summary(erasure)


def _summary(erasure: Erasure) -> dict[str, Any]:
    return {
        "id": str(erasure.document_id),
        "erased_at": erasure.erased_at.isoformat(),
        "shares_revoked": erasure.shares_revoked,
        "copies_shredded": erasure.copies_shredded,
    }


retention_routes = [erase_page, erase_api]
