"""A staff member's own account: TOTP enrolment, and setting a password through an invitation link or a
password reset link."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from sqlalchemy import func, select

from portal.audit.recorder import record
from portal.errors import InvalidInput
from portal.models import RecoveryCode, StaffUser
from portal.security.sessions import STAFF_COOKIE, expired_cookie, session_cookie
from portal.security.totp import sealing_key
from portal.staff.enrolment import confirm_enrolment, grouped, reopen_enrolment, start_enrolment
from portal.staff.invitations import accept_invitation, load_invitation
from portal.staff.password_reset import complete_reset, load_reset
from portal.staff.signin import pending_user, start_full_session
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


async def _enrolling_user(request: Request[Any, Any, Any]) -> tuple[StaffUser, bool]:
    """Return the staff member setting up TOTP and whether they are still on a pending enrolment session."""
    async with portal_of(request).transaction() as db:
        user = await pending_user(db, "staff_enrol", request.cookies.get(STAFF_COOKIE))
    if user is not None:
        return user, True
    return await require_staff(request), False


async def _unused_recovery_codes(request: Request[Any, Any, Any], user: StaffUser) -> int:
    async with portal_of(request).transaction() as db:
        count = await db.scalar(
            select(func.count()).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )
    return count or 0


@get("/staff/totp", include_in_schema=False)
async def totp_page(request: Request[Any, Any, Any]) -> Template:
    user, pending = await _enrolling_user(request)
    portal = portal_of(request)
    context: dict[str, Any] = {"user": user, "pending": pending, "errors": {}}
    if user.totp_secret_sealed is not None:
        context["recovery_left"] = await _unused_recovery_codes(request, user)
        return Template("staff/totp.html", context=context)

    key = sealing_key(portal.keyring.secret("session"))
    form = start_enrolment(key, user, portal.settings.clinic_name)
    return Template("staff/totp.html", context={**context, "form": form, "grouped": grouped(form.secret)})


@post("/staff/totp", include_in_schema=False)
async def totp_confirm(request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
    user, pending = await _enrolling_user(request)
    portal = portal_of(request)
    key = sealing_key(portal.keyring.secret("session"))
    raw_id = request.cookies.get(STAFF_COOKIE)

    try:
        async with portal.transaction() as db:
            account = await db.get(StaffUser, user.id)
            if account is None:
                return Redirect("/staff/login", status_code=303)
            codes = await confirm_enrolment(
                db, account, key, data.get("pending", ""), data.get("code", "")[:40]
            )
            await record(db, actor_for(request, f"staff:{user.id}"), "staff.totp_enrolled")
            new_id = None
            if pending:
                # The enrolment session was only good for this page; the account is now fully signed in.
                who = actor_for(request, f"staff:{user.id}")
                new_id = await start_full_session(
                    db, who, account, portal.policies.security, previous_session_id=raw_id
                )
                await record(db, who, "staff.login", details={"step": "totp_enrolment", "method": "totp"})
    except InvalidInput as error:
        form = reopen_enrolment(key, user, portal.settings.clinic_name, data.get("pending", ""))
        form = form or start_enrolment(key, user, portal.settings.clinic_name)
        context = {"user": user, "pending": pending, "form": form, "grouped": grouped(form.secret)}
        return Template(
            "staff/totp.html", context={**context, "errors": {"code": error.message}}, status_code=400
        )

    cookies = [session_cookie("staff", new_id)] if new_id else []
    # The recovery codes appear on this response only; the default Cache-Control: no-store applies.
    return Template("staff/recovery_codes.html", context={"user": user, "codes": codes}, cookies=cookies)


@get("/staff/invitations/{token:str}", include_in_schema=False)
async def invitation_page(request: Request[Any, Any, Any], token: FromPath[str]) -> Template:
    async with portal_of(request).transaction() as db:
        invitation = await load_invitation(db, token)
    return Template("staff/invitation.html", context={"invitation": invitation, "errors": {}})


@post("/staff/invitations/{token:str}", include_in_schema=False)
async def invitation_accept(
    request: Request[Any, Any, Any], token: FromPath[str], data: FormData
) -> Template | Redirect:
    portal = portal_of(request)
    try:
        async with portal.transaction() as db:
            await accept_invitation(
                db,
                actor_for(request, "staff:unknown"),
                token,
                data.get("password", ""),
                data.get("password_repeat", ""),
            )
    except InvalidInput as error:
        async with portal.transaction() as db:
            invitation = await load_invitation(db, token)
        errors = {error.field or "password": error.message}
        return Template(
            "staff/invitation.html", context={"invitation": invitation, "errors": errors}, status_code=400
        )
    return Redirect("/staff/login?welcome=1", status_code=303)


async def _reset_page(request: Request[Any, Any, Any], token: str, errors: dict[str, str]) -> Template:
    async with portal_of(request).transaction() as db:
        row, account = await load_reset(db, token)
    context = {
        "row": row,
        "account": account,
        "totp_required": portal_of(request).policies.security.staff_require_totp,
        "errors": errors,
    }
    return Template("staff/password_reset.html", context=context, status_code=400 if errors else 200)


@get("/staff/password-reset/{token:str}", include_in_schema=False)
async def reset_page(request: Request[Any, Any, Any], token: FromPath[str]) -> Template:
    return await _reset_page(request, token, {})


@post("/staff/password-reset/{token:str}", include_in_schema=False)
async def reset_accept(
    request: Request[Any, Any, Any], token: FromPath[str], data: FormData
) -> Template | Redirect:
    try:
        async with portal_of(request).transaction() as db:
            _account, totp_reset = await complete_reset(
                db,
                actor_for(request, "staff:unknown"),
                token,
                data.get("password", ""),
                data.get("password_repeat", ""),
            )
    except InvalidInput as error:
        return await _reset_page(request, token, {error.field or "password": error.message})

    # The browser may still carry a cookie of a session the reset just ended; the sign-in page replaces it.
    done = "totp" if totp_reset else "1"
    return Redirect(f"/staff/login?reset={done}", status_code=303, cookies=[expired_cookie("staff")])


account_routes = [totp_page, totp_confirm, invitation_page, invitation_accept, reset_page, reset_accept]
