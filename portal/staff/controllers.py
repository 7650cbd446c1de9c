"""Staff sign-in (password, then TOTP or a recovery code when enrolled), sign-out and the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from portal.audit.recorder import record
from portal.errors import PortalError
from portal.i18n import _
from portal.security.client import client_ip, ip_prefix
from portal.security.sessions import STAFF_COOKIE, end_session, expired_cookie, session_cookie
from portal.security.totp import sealing_key
from portal.staff.account_controllers import account_routes
from portal.staff.openapi import openapi_routes
from portal.staff.signin import (
    ACCOUNT_WINDOW,
    LoginThrottle,
    SignInResult,
    pending_user,
    sign_in,
    verify_second_factor,
)
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

# Throttles count one client address as IPv4 /32 or IPv6 /64: one household or office router.
_THROTTLE_PREFIX_V4 = 32
_THROTTLE_PREFIX_V6 = 64


def login_throttle(request: Request[Any, Any, Any]) -> LoginThrottle:
    portal = portal_of(request)
    address = client_ip(request, portal.settings.trusted_proxy_hops)
    return LoginThrottle(
        secret=portal.keyring.secret("session"),
        client_address=ip_prefix(address, _THROTTLE_PREFIX_V4, _THROTTLE_PREFIX_V6),
    )


def landing_page(role: str) -> str:
    return "/dpo/events" if role == "dpo" else "/staff"


def _throttled_page(template: str, context: dict[str, Any]) -> Template:
    minutes = int(ACCOUNT_WINDOW.total_seconds() // 60)
    message = _(
        "Too many sign-in attempts for this account or from this network. "
        "Wait {minutes} minutes and try again, "
        "or ask an administrator."
    ).format(minutes=minutes)
    return Template(
        template,
        context={**context, "errors": {"password" if template.endswith("login.html") else "code": message}},
        status_code=429,
        headers={"Retry-After": str(int(ACCOUNT_WINDOW.total_seconds()))},
    )


def _after_step(result: SignInResult) -> Redirect:
    """Send the browser on after a successful step, with the fresh session id that step issued."""
    if result.session_id is None or result.user is None:
        raise RuntimeError(f"sign-in step ended in {result.outcome!r} without a session")
    target = {"second_factor": "/staff/login/verify", "enrol": "/staff/totp"}.get(
        result.outcome, landing_page(result.user.role)
    )
    return Redirect(target, status_code=303, cookies=[session_cookie("staff", result.session_id)])


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/access", status_code=303)


@get("/staff/login", include_in_schema=False)
async def login_page(request: Request[Any, Any, Any]) -> Template:
    welcome = request.query_params.get("welcome") == "1"
    # Only the fixed keys "1" and "totp" show a message; the address carries no text of its own.
    reset = request.query_params.get("reset")
    context: dict[str, Any] = {
        "errors": {},
        "email": "",
        "welcome": welcome,
        "reset": reset if reset in ("1", "totp") else None,
    }
    return Template("staff/login.html", context=context)


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
            throttle=login_throttle(request),
        )

    context = {"email": email[:254], "welcome": False, "reset": None}
    if result.outcome == "throttled":
        return _throttled_page("staff/login.html", context)
    if result.outcome == "invalid":
        message = _("The e-mail address or password is not right. Check both and try again.")
        return Template(
            "staff/login.html",
            context={**context, "errors": {"password": message}},
            status_code=400,
            cookies=[expired_cookie("staff")],
        )
    return _after_step(result)


@get("/staff/login/verify", include_in_schema=False)
async def verify_page(request: Request[Any, Any, Any]) -> Template | Redirect:
    async with portal_of(request).transaction() as db:
        user = await pending_user(db, "staff_totp", request.cookies.get(STAFF_COOKIE))
    if user is None:
        return Redirect("/staff/login", status_code=303)
    return Template("staff/login_verify.html", context={"errors": {}})


@post("/staff/login/verify", include_in_schema=False)
async def verify(request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
    portal = portal_of(request)
    async with portal.transaction() as db:
        result = await verify_second_factor(
            db,
            actor_for(request, "staff:unknown"),
            pending_session_id=request.cookies.get(STAFF_COOKIE),
            entered=data.get("code", "")[:40],
            totp_key=sealing_key(portal.keyring.secret("session")),
            policy=portal.policies.security,
            throttle=login_throttle(request),
        )

    if result.outcome == "expired":
        return Redirect("/staff/login", status_code=303, cookies=[expired_cookie("staff")])
    if result.outcome == "throttled":
        return _throttled_page("staff/login_verify.html", {})
    if result.outcome == "invalid":
        message = _(
            "The code is not right or was used already. Enter the current 6-digit code from your app, "
            "or an unused recovery code."
        )
        return Template("staff/login_verify.html", context={"errors": {"code": message}}, status_code=400)
    return _after_step(result)


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
    # Filters travel in POST bodies (see POST /staff), so no patient reference reaches the address bar,
    # which htmx on this page copies into sessionStorage.
    from portal.shares.controllers import render_dashboard

    user = await require_staff(request, "clinician", "admin")
    return await render_dashboard(request, user)


@get("/staff/home", include_in_schema=False)
async def staff_home(request: Request[Any, Any, Any]) -> Redirect:
    """Send a signed-in staff member to their role's start page; anyone else goes to sign-in."""
    user = await require_staff(request)
    return Redirect(landing_page(user.role), status_code=303)


staff_routes = [
    home,
    staff_home,
    login_page,
    login,
    verify_page,
    verify,
    logout,
    dashboard,
    *account_routes,
    *openapi_routes,
]
