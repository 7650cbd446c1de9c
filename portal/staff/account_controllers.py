"""A staff member's own account: TOTP enrolment, changing the password, and setting a password through an
invitation link or a password reset link."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from sqlalchemy import func, select

from portal.audit.recorder import record
from portal.errors import InvalidInput
from portal.i18n import _
from portal.models import RecoveryCode, StaffUser
from portal.security.sessions import STAFF_COOKIE, expired_cookie, session_cookie
from portal.security.totp import sealing_key
from portal.staff.enrolment import confirm_enrolment, grouped, reopen_enrolment, start_enrolment
from portal.staff.invitations import accept_invitation, load_invitation
from portal.staff.password_reset import change_own_password, complete_reset, load_reset
from portal.staff.signin import ACCOUNT_WINDOW, pending_user, start_full_session
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


def _new_password(data: dict[str, str]) -> tuple[str, str]:
    """Return the new password and its repetition from a form that sets a password."""
    return data.get("password", ""), data.get("password_repeat", "")


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
            await accept_invitation(db, actor_for(request, "staff:unknown"), token, *_new_password(data))
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
                db, actor_for(request, "staff:unknown"), token, *_new_password(data)
            )
    except InvalidInput as error:
        return await _reset_page(request, token, {error.field or "password": error.message})

    # The reset ended the account's sessions already; this browser also drops any staff cookie it carries,
    # so the sign-in page starts clean.
    done = "totp" if totp_reset else "1"
    return Redirect(f"/staff/login?reset={done}", status_code=303, cookies=[expired_cookie("staff")])


def _password_page(
    user: StaffUser,
    errors: dict[str, str],
    *,
    status_code: int = 200,
    changed: bool = False,
    headers: dict[str, str] | None = None,
) -> Template:
    context = {"user": user, "errors": errors, "changed": changed}
    return Template("staff/password.html", context=context, status_code=status_code, headers=headers)


@get("/staff/password", include_in_schema=False)
async def password_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request)
    # Only the fixed key "changed" shows the confirmation; the address carries no text of its own.
    return _password_page(user, {}, changed=request.query_params.get("done") == "changed")


@post("/staff/password", include_in_schema=False)
async def password_change(request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
    # Imported here because portal.staff.controllers imports this module for its routes.
    from portal.staff.controllers import login_throttle

    user = await require_staff(request)
    portal = portal_of(request)
    try:
        async with portal.transaction() as db:
            result = await change_own_password(
                db,
                actor_for(request, f"staff:{user.id}"),
                user,
                current=data.get("current_password", ""),
                password=data.get("password", ""),
                repeated=data.get("password_repeat", ""),
                policy=portal.policies.security,
                throttle=login_throttle(request),
                session_id=request.cookies.get(STAFF_COOKIE),
            )
    except InvalidInput as error:
        return _password_page(user, {error.field or "password": error.message}, status_code=400)

    if result.outcome == "throttled":
        minutes = int(ACCOUNT_WINDOW.total_seconds() // 60)
        message = _(
            "Too many wrong passwords or sign-in attempts for this account or from this network. Wait {minutes} "
            "minutes and try again."
        ).format(minutes=minutes)
        headers = {"Retry-After": str(int(ACCOUNT_WINDOW.total_seconds()))}
        return _password_page(user, {"current_password": message}, status_code=429, headers=headers)
    if result.outcome == "wrong_password" or result.session_id is None:
        message = _("The current password is not right. Type the password you signed in with.")
        return _password_page(user, {"current_password": message}, status_code=400)

    cookie = session_cookie("staff", result.session_id)
    return Redirect("/staff/password?done=changed", status_code=303, cookies=[cookie])


account_routes = [
    totp_page,
    totp_confirm,
    invitation_page,
    invitation_accept,
    reset_page,
    reset_accept,
    password_page,
    password_change,
]
