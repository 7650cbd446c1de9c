"""The API's OpenAPI 3.1 schema as JSON, for signed-in staff and API tokens only; no documentation UI.

The schema is built with Litestar's OpenAPIConfig from the application's own routes that are marked
``include_in_schema``, in a separate application object that is never served, and cached per application.
That application gets shallow copies of the handlers, because registering a handler sets its owner. A served
handler owned by the other application loses the portal's exception handlers and returns 500 for every error.
The API routes describe their bodies and error statuses with the helpers below. Every ``/api/`` operation
also gets the bearer-token scheme and the error statuses that any token route can return.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIResponse,
    Operation,
    Parameter,
    RequestBody,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from portal.web import require_staff, require_token

_STATE_KEY = "openapi_schema"
_ERROR_REF = {"$ref": "#/components/schemas/ApiError"}
_BEARER = "bearerToken"

ERROR_DESCRIPTIONS = {
    400: "Invalid input: the message names the field and the expected form.",
    401: "The API token is missing, unknown, expired or revoked, or its owner is disabled.",
    403: "The token owner's role does not allow the request, or the token lacks the scope.",
    404: "No such object, or one the token may not see.",
    413: "The request body is larger than the upload limit.",
    409: "A legal hold applies to the document, so it cannot be erased until the hold is released.",
    415: "The body's Content-Type is not the one the route reads: application/json, or multipart/form-data for uploads.",
    422: (
        "The PDF was rejected, or a field's value is not in the form the route takes (a share's date_of_birth "
        "must be YYYY-MM-DD). The message gives the reason and what to send instead."
    ),
}


@dataclass
class ErrorDetail:
    """An error's stable ``code``, its message with the next step, the request field at fault and the request id.

    ``field`` names the body or form field that the error is about, such as ``date_of_birth``, and is null
    when the error is about no single field.
    """

    code: str
    message: str
    field: str | None
    request_id: str | None


@dataclass
class ApiError:
    """The body of every API error response."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """Return ``responses`` for a route handler: the error object under each of ``statuses``."""
    return {
        status: ResponseSpec(
            data_container=ApiError, description=ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


def documented_operation(
    *,
    request_body: RequestBody | None = None,
    parameters: list[Parameter] | None = None,
    responses: dict[int, OpenAPIResponse] | None = None,
) -> type[Operation]:
    """Return an ``operation_class`` that adds what Litestar cannot infer from the handler's signature.

    API handlers read their body and query string from the request themselves, so their signatures show
    Litestar no request body or query parameters. Litestar also documents a streamed response as JSON.
    """

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if request_body is not None:
                self.request_body = request_body
            if parameters:
                self.parameters = [*(self.parameters or []), *parameters]
            if responses:
                self.responses = {
                    **(self.responses or {}),
                    **{str(code): value for code, value in responses.items()},
                }

    return DocumentedOperation


def build_schema(app: Litestar) -> dict[str, Any]:
    handlers = [
        copy.copy(handler)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.resolve_include_in_schema()
    ]
    config = OpenAPIConfig(
        title="Clinic share portal API",
        version="1",
        render_plugins=[],
        components=Components(
            security_schemes={
                _BEARER: SecurityScheme(type="http", scheme="bearer", description="An API token.")
            }
        ),
        security=[{_BEARER: []}],
    )
    # Without logging_config=None, Litestar would replace the portal's logging configuration.
    schema_app = Litestar(route_handlers=handlers, openapi_config=config, logging_config=None)
    schema = schema_app.openapi_schema.to_schema()
    _document_token_errors(schema)
    return schema


def _document_token_errors(schema: dict[str, Any]) -> None:
    """Document the errors every token route can return, in the portal's error object.

    Litestar adds a 400 response with its own validation-error body to handlers with parameters. The
    portal's exception handlers return every ``/api/`` error as the error object, so that body is replaced.
    """
    if "ApiError" not in schema.get("components", {}).get("schemas", {}):
        return

    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            statuses = [400, 401, 403]
            # An id in the path may name nothing the token can see.
            if "{" in path:
                statuses.append(404)
            for status in statuses:
                documented = responses.get(str(status))
                if documented is None or not _is_error_object(documented):
                    responses[str(status)] = _error_response(status)


def _is_error_object(response: dict[str, Any]) -> bool:
    return response.get("content", {}).get("application/json", {}).get("schema") == _ERROR_REF


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }


@get("/api/v1/openapi.json", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    # A bearer token authenticates API clients; without one, a staff session cookie must.
    if request.headers.get("authorization"):
        await require_token(request)
    else:
        await require_staff(request)

    state = request.app.state
    if _STATE_KEY not in state:
        state[_STATE_KEY] = build_schema(request.app)
    return Response(state[_STATE_KEY], media_type="application/vnd.oai.openapi+json")


openapi_routes = [openapi_json]
