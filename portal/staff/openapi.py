"""The API's OpenAPI 3.1 schema as JSON, for signed-in staff and API tokens only; no documentation UI.

The schema is built with Litestar's OpenAPIConfig from the application's own routes that are marked
``include_in_schema``, in a separate application object that is never served, and cached per application.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.routes import HTTPRoute

from portal.web import require_staff, require_token

_STATE_KEY = "openapi_schema"


def build_schema(app: Litestar) -> dict[str, Any]:
    handlers = [
        handler
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.resolve_include_in_schema()
    ]
    config = OpenAPIConfig(title="Clinic share portal API", version="1", render_plugins=[])
    return Litestar(route_handlers=handlers, openapi_config=config).openapi_schema.to_schema()


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
