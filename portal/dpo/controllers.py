"""The data protection officer's pages: search the access log and export it."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Stream, Template

from portal.audit.export import export_stream
from portal.audit.query import parse_filter, search
from portal.audit.recorder import EVENT_TYPES
from portal.errors import InvalidInput
from portal.web import actor_for, portal_of, require_staff

FILTER_KEYS = ("patient_ref", "share_id", "event_type", "ip_prefix", "since", "until")


def _filter_params(request: Request[Any, Any, Any]) -> dict[str, str | None]:
    return {key: request.query_params.get(key) for key in FILTER_KEYS}


def _before_seq(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(f"before='{value[:20]}' is not an event number. Use the link under the results.")
    return int(value)


@get("/dpo/events", include_in_schema=False)
async def events_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    params = _filter_params(request)
    error = None
    events = []
    try:
        filters = parse_filter(params)
        events = await search(portal, filters, _before_seq(request.query_params.get("before")))
    except InvalidInput as problem:
        error = problem.message

    context = {
        "user": user,
        "events": events,
        "params": {key: value or "" for key, value in params.items()},
        "event_types": sorted(EVENT_TYPES),
        "error": error,
        "next_before": events[-1].seq if len(events) == 50 else None,
    }
    # htmx filter requests swap only the results; a plain request gets the whole page.
    template = "dpo/_results.html" if request.headers.get("hx-request") == "true" else "dpo/events.html"
    return Template(template, context=context, headers={"Vary": "HX-Request"}, status_code=400 if error else 200)


@get("/dpo/export", include_in_schema=False)
async def export(request: Request[Any, Any, Any]) -> Stream:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    filters = parse_filter(_filter_params(request))
    export_format = request.query_params.get("format") or "jsonl"
    return await export_stream(portal, actor_for(request, f"staff:{user.id}"), filters, export_format)


dpo_routes = [events_page, export]
