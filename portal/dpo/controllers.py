"""The data protection officer's pages: search, event detail, disclosures, breach scope, exports, log check.

Every page and partial is for the dpo and admin roles. A route renders the whole page, or for an htmx
request (`HX-Request: true`) only the partial that the page itself includes, with `Vary: HX-Request`.

Filters travel in POST bodies with the CSRF token, never in an address: a patient reference or a recipient
name in a URL would reach proxy access logs and browser history. The GET pages take no filter except a
share id, which names no one by itself and lets other pages link to a share's events.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Stream, Template

from portal.audit.export import bundle_stream, export_stream
from portal.audit.query import FILTER_KEYS, EventFilter, parse_filter, search
from portal.audit.recorder import EVENT_TYPES
from portal.audit.verify import verify_database
from portal.dpo.service import (
    breach_scope,
    disclosure_report,
    event_detail,
    event_labels,
    parse_breach_filter,
)
from portal.errors import InvalidInput
from portal.i18n import _
from portal.labels import event_label
from portal.models import utcnow
from portal.web import actor_for, portal_of, require_staff

log = logging.getLogger(__name__)

PAGE_SIZE = 50
BREACH_KEYS = ("recipient", "share_id", "ip_prefix", "since", "until")
# Query parameters that a DPO page rejects: every filter but the share id, and the position in the results.
ADDRESS_REJECTED = (*(key for key in FILTER_KEYS if key != "share_id"), "before")

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
Params = dict[str, str | None]


def _form_params(data: dict[str, str], keys: tuple[str, ...] = FILTER_KEYS) -> Params:
    return {key: data.get(key) for key in keys}


def _address_params(request: Request[Any, Any, Any], *, share_id: bool) -> Params:
    """Return the one filter an address may carry, the share id, or nothing for pages that take none.

    Raises:
        InvalidInput: the address carries a filter that belongs in the form; the message names the
            parameter but not its value.
    """
    rejected = [key for key in ADDRESS_REJECTED if key in request.query_params]
    if not share_id and "share_id" in request.query_params:
        rejected.append("share_id")
    if rejected:
        # The summary links to the filter form, which every DPO page with filters has as #filters.
        raise InvalidInput(
            _(
                "Filters in the address are not used ({names}). Enter them in the form and search again."
            ).format(names=", ".join(rejected)),
            field="filters",
        )
    return {"share_id": request.query_params.get("share_id")} if share_id else {}


def _before_seq(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput(
            f"before='{value[:20]}' is not an event number. Use the button under the results.", field="before"
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


# Access log


async def _events_response(
    request: Request[Any, Any, Any], params: Params, before: str | None, problem: InvalidInput | None = None
) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    errors = _errors(problem) if problem else {}
    events = []
    if not errors:
        try:
            filters = parse_filter(params)
            events = await search(portal, filters, _before_seq(before), PAGE_SIZE)
        except InvalidInput as invalid:
            errors = _errors(invalid)

    context = {
        "user": user,
        "events": events,
        "labels": await event_labels(portal, events),
        "params": {key: params.get(key) or "" for key in FILTER_KEYS},
        # In the order of the labels the DPO reads, in the page's language.
        "event_types": sorted(EVENT_TYPES, key=lambda name: event_label(name).casefold()),
        "errors": errors,
        "next_before": events[-1].seq if len(events) == PAGE_SIZE else None,
    }
    return _render(request, "dpo/events.html", "dpo/_results.html", context, bool(errors))


@get("/dpo/events", include_in_schema=False)
async def events_page(request: Request[Any, Any, Any]) -> Template:
    """Render the newest events, or those of the share named in the address (other DPO pages link here)."""
    try:
        params = _address_params(request, share_id=True)
    except InvalidInput as problem:
        return await _events_response(request, {}, None, problem)
    return await _events_response(request, params, None)


@post("/dpo/events", include_in_schema=False, status_code=200)
async def events_search(request: Request[Any, Any, Any], data: FormData) -> Template:
    """Search the access log with the filters and position (the "Older events" button) from the POST body."""
    return await _events_response(request, _form_params(data), data.get("before"))


@get("/dpo/events/{seq:int}", include_in_schema=False)
async def event_page(request: Request[Any, Any, Any], seq: FromPath[int]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    detail = await event_detail(portal, seq)
    labels = await event_labels(portal, [detail.event])
    profile = portal.policies.profiles.get(detail.share.profile) if detail.share else None
    context = {"user": user, "detail": detail, "profile": profile, "labels": labels}
    return Template("dpo/event.html", context=context)


# Disclosures per patient


async def _disclosures_response(
    request: Request[Any, Any, Any], patient_ref: str | None, problem: InvalidInput | None = None
) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    errors = _errors(problem) if problem else {}
    disclosures = None
    if patient_ref is not None and not errors:
        try:
            disclosures = await disclosure_report(portal, patient_ref)
        except InvalidInput as invalid:
            errors = _errors(invalid)

    context = {
        "user": user,
        "patient_ref": (patient_ref or "").strip(),
        "disclosures": disclosures,
        "errors": errors,
    }
    return _render(request, "dpo/disclosures.html", "dpo/_disclosures.html", context, bool(errors))


@get("/dpo/disclosures", include_in_schema=False)
async def disclosures_page(request: Request[Any, Any, Any]) -> Template:
    try:
        _address_params(request, share_id=False)
    except InvalidInput as problem:
        return await _disclosures_response(request, None, problem)
    return await _disclosures_response(request, None)


@post("/dpo/disclosures", include_in_schema=False, status_code=200)
async def disclosures_search(request: Request[Any, Any, Any], data: FormData) -> Template:
    return await _disclosures_response(request, data.get("patient_ref") or "")


# Breach scope


async def _breach_response(
    request: Request[Any, Any, Any], params: Params, problem: InvalidInput | None = None
) -> Template:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    errors = _errors(problem) if problem else {}
    scope = None
    if any(params.values()) and not errors:
        try:
            filters: EventFilter = parse_breach_filter(parse_filter(params))
            scope = await breach_scope(portal, filters)
        except InvalidInput as invalid:
            errors = _errors(invalid)

    context = {
        "user": user,
        "params": {key: params.get(key) or "" for key in BREACH_KEYS},
        "scope": scope,
        "errors": errors,
    }
    return _render(request, "dpo/breach.html", "dpo/_breach.html", context, bool(errors))


@get("/dpo/breach", include_in_schema=False)
async def breach_page(request: Request[Any, Any, Any]) -> Template:
    try:
        _address_params(request, share_id=False)
    except InvalidInput as problem:
        return await _breach_response(request, {}, problem)
    return await _breach_response(request, {})


@post("/dpo/breach", include_in_schema=False, status_code=200)
async def breach_search(request: Request[Any, Any, Any], data: FormData) -> Template:
    return await _breach_response(request, _form_params(data, BREACH_KEYS))


# Exports: a POST returns a streamed attachment, recorded in the access log before the first line is sent.


@post("/dpo/export", include_in_schema=False, status_code=200)
async def export(request: Request[Any, Any, Any], data: FormData) -> Stream:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    filters = parse_filter(_form_params(data))
    export_format = data.get("format") or "jsonl"
    return await export_stream(portal, actor_for(request, f"staff:{user.id}"), filters, export_format)


@post("/dpo/bundle", include_in_schema=False, status_code=200)
async def bundle(request: Request[Any, Any, Any], data: FormData) -> Stream:
    user = await require_staff(request, "dpo", "admin")
    portal = portal_of(request)
    filters = parse_filter(_form_params(data))
    return await bundle_stream(portal, actor_for(request, f"staff:{user.id}"), filters)


# Checking the whole log


@get("/dpo/verify", include_in_schema=False)
async def verify_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    return _render(request, "dpo/verify.html", "dpo/_verify.html", {"user": user, "report": None}, False)


@post("/dpo/verify", include_in_schema=False, status_code=200)
async def verify_now(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "dpo", "admin")
    report = await verify_database(portal_of(request))
    if not report.ok:
        log.warning("access log check from the DPO page failed: %s", report.first_failure)
    context = {"user": user, "report": report, "checked_at": utcnow()}
    return _render(request, "dpo/verify.html", "dpo/_verify.html", context, False)


dpo_routes = [
    verify_page,
    verify_now,
    events_page,
    events_search,
    event_page,
    disclosures_page,
    disclosures_search,
    breach_page,
    breach_search,
    export,
    bundle,
]
