"""Staff sign-in, sign-out and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from portal.audit.recorder import record
from portal.documents.service import list_documents
from portal.errors import PortalError
from portal.i18n import _
from portal.security.sessions import STAFF_COOKIE, end_session, expired_cookie, session_cookie
from portal.staff.service import sign_in
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/access", status_code=303)


@get("/staff/login", include_in_schema=False)
async def login_page() -> Template:
    return Template("staff/login.html", context={"errors": {}, "email": ""})


@post("/staff/login", include_in_schema=False)
async def login(request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
    portal = portal_of(request)
    email = data.get("email", "")
    async with portal.transaction() as db:
        result = await sign_in(
            db,
            actor_for(request, "staff:unknown"),
            email=email,
            password=data.get("password", ""),
            policy=portal.policies.security,
            previous_session_id=request.cookies.get(STAFF_COOKIE),
        )
    if result is None:
        message = _("The e-mail address or password is not right. Check both and try again.")
        return Template(
            "staff/login.html",
            context={"errors": {"password": message}, "email": email[:254]},
            status_code=400,
            cookies=[expired_cookie("staff")],
        )

    user, raw_id = result
    target = "/dpo/events" if user.role == "dpo" else "/staff"
    return Redirect(target, status_code=303, cookies=[session_cookie("staff", raw_id)])


@post("/staff/logout", include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    portal = portal_of(request)
    raw_id = request.cookies.get(STAFF_COOKIE)
    try:
        user = await require_staff(request)
    except PortalError:
        user = None
    async with portal.transaction() as db:
        await end_session(db, raw_id)
        if user is not None:
            await record(db, actor_for(request, f"staff:{user.id}"), "staff.logout")
    return Redirect(
        "/staff/login",
        status_code=303,
        cookies=[expired_cookie("staff")],
        headers={"Clear-Site-Data": '"cache", "cookies", "storage"'},
    )


@get("/staff", include_in_schema=False)
async def dashboard(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    patient_ref = request.query_params.get("patient_ref")
    portal = portal_of(request)
    documents = await list_documents(portal, patient_ref=patient_ref)
    return Template(
        "staff/dashboard.html",
        context={
            "user": user,
            "documents": documents,
            "patient_ref": patient_ref or "",
            "errors": {},
            "form": {},
            "max_upload_mb": portal.policies.security.upload_max_body_bytes // 1_000_000,
        },
    )


staff_routes = [home, login_page, login, logout, dashboard]
