"""The data protection officer's pages: search, event detail, disclosures, breach scope, exports.

Every page and partial is for the dpo and admin roles. A route renders the whole page, or for an htmx
request (`HX-Request: true`) only the partial that the page itself includes, with `Vary: HX-Request`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Stream, Template

from portal.audit.export import bundle_stream, export_stream
from portal.audit.query import FILTER_KEYS, EventFilter, parse_filter, search
from portal.audit.recorder import EVENT_TYPES
from portal.dpo.service import breach_scope, disclosure_report, event_detail, parse_breach_filter
from portal.errors import InvalidInput
from portal.web import actor_for, portal_of, require_staff

PAGE_SIZE = 50


def _filter_params(request: Request[Any, Any, Any]) -> dict[str, str | None]:
    return {key: request.query_params.get(key) for key in FILTER_KEYS}


def _before_seq(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(
            f"before='{value[:20]}' is not an event number. Use the link under the results.", field="before"
        )
    return int(value)


def _render(
    request: Request[Any, Any, Any], page: str, partial: str, context: dict[str, Any], error: bool
) -> Template:
    template = partial if request.headers.get("hx-request") == "true" else page
    return Template(
        template, context=context, headers={"Vary": "HX-Request"}, status_code=400 if error else 200
    )


def _errors(problem: InvalidInput) -> dict[str, str]:
    return {problem.field or "search": problem.message}


@get("/dpo/events", include_in_schema=False)
async def events_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    params = _filter_params(request)
    errors: dict[str, str] = {}
    events = []
    try:
        filters = parse_filter(params)
        events = await search(portal, filters, _before_seq(request.query_params.get("before")), PAGE_SIZE)
    except InvalidInput as problem:
        errors = _errors(problem)

    context = {
        "user": user,
        "events": events,
        "params": {key: value or "" for key, value in params.items()},
        "event_types": sorted(EVENT_TYPES),
        "errors": errors,
        "next_before": events[-1].seq if len(events) == PAGE_SIZE else None,
    }
    return _render(request, "dpo/events.html", "dpo/_results.html", context, bool(errors))


@get("/dpo/events/{seq:int}", include_in_schema=False)
async def event_page(request: Request[Any, Any, Any], seq: FromPath[int]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    detail = await event_detail(portal, seq)
    profile = portal.policies.profiles.get(detail.share.profile) if detail.share else None
    return Template("dpo/event.html", context={"user": user, "detail": detail, "profile": profile})


@get("/dpo/disclosures", include_in_schema=False)
async def disclosures_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    patient_ref = (request.query_params.get("patient_ref") or "").strip()
    errors: dict[str, str] = {}
    disclosures = None
    if patient_ref:
        try:
            disclosures = await disclosure_report(portal, patient_ref)
        except InvalidInput as problem:
            errors = _errors(problem)

    context = {
        "user": user,
        "patient_ref": patient_ref,
        "disclosures": disclosures,
        "profiles": portal.policies.profiles,
        "errors": errors,
    }
    return _render(request, "dpo/disclosures.html", "dpo/_disclosures.html", context, bool(errors))


@get("/dpo/breach", include_in_schema=False)
async def breach_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    params = {
        key: request.query_params.get(key) for key in ("recipient", "share_id", "ip_prefix", "since", "until")
    }
    errors: dict[str, str] = {}
    scope = None
    filters: EventFilter | None = None
    if any(params.values()):
        try:
            filters = parse_breach_filter(parse_filter(params))
            scope = await breach_scope(portal, filters)
        except InvalidInput as problem:
            errors = _errors(problem)

    context = {
        "user": user,
        "params": {key: value or "" for key, value in params.items()},
        "scope": scope,
        "profiles": portal.policies.profiles,
        "errors": errors,
    }
    return _render(request, "dpo/breach.html", "dpo/_breach.html", context, bool(errors))


@get("/dpo/export", include_in_schema=False)
async def export(request: Request[Any, Any, Any]) -> Stream:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    filters = parse_filter(_filter_params(request))
    export_format = request.query_params.get("format") or "jsonl"
    return await export_stream(portal, actor_for(request, f"staff:{user.id}"), filters, export_format)


@get("/dpo/bundle", include_in_schema=False)
async def bundle(request: Request[Any, Any, Any]) -> Stream:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    filters = parse_filter(_filter_params(request))
    return await bundle_stream(portal, actor_for(request, f"staff:{user.id}"), filters)


dpo_routes = [events_page, event_page, disclosures_page, breach_page, export, bundle]
