"""A health endpoint for load balancers and monitoring: checks the database and the blob store."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, get
from litestar.response import Response
from sqlalchemy import text

from portal.web import portal_of

log = logging.getLogger(__name__)


@get("/healthz", include_in_schema=False, opt={"exclude_from_csrf": True})
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Answer 200 when the database answers and the blob store is reachable, 503 otherwise.

    The body names only which check failed, never connection details or error text.
    """
    portal = portal_of(request)
    checks = {"database": "ok", "storage": "ok"}
    try:
        async with portal.transaction() as db:
            await db.execute(text("SELECT 1"))
    except Exception as error:  # any failure means unhealthy; only the type is logged
        log.error("health check: database failed", extra={"error": type(error).__name__})
        checks["database"] = "failed"
    try:
        await portal.blobs.store.exists("0" * 32)
    except Exception as error:  # any failure means unhealthy; only the type is logged
        log.error("health check: storage failed", extra={"error": type(error).__name__})
        checks["storage"] = "failed"

    healthy = all(value == "ok" for value in checks.values())
    return Response(checks, status_code=200 if healthy else 503)


health_routes = [health]
