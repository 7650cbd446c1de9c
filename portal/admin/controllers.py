"""Administrator pages: staff accounts, invitations, password reset links and API tokens. Every route needs
the admin role."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from portal.admin.service import (
    change_role,
    disable,
    enable,
    list_staff,
    list_tokens,
    load_staff,
    parse_days,
    revoke_token,
)
from portal.audit.recorder import Actor
from portal.core import Portal
from portal.errors import InvalidInput, NotFound
from portal.form_ids import FormResent, sent_once
from portal.i18n import _
from portal.labels import role_label
from portal.models import ApiToken, Invitation, StaffUser, utcnow
from portal.staff.invitations import (
    INVITATION_LIFETIME,
    create_invitation,
    open_invitations,
    withdraw_invitation,
)
from portal.staff.password_reset import RESET_LINK_LIFETIME, issue_reset
from portal.staff.service import DEFAULT_TOKEN_DAYS, ROLES, TOKEN_SCOPES, issue_token
from portal.web import actor_for, portal_of, require_staff

INVITATION_HOURS = int(INVITATION_LIFETIME.total_seconds() // 3600)
RESET_HOURS = int(RESET_LINK_LIFETIME.total_seconds() // 3600)
FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
# Checkboxes repeat their name, so the token form is read as lists.
ListFormData = Annotated[dict[str, list[str] | str], Body(media_type=RequestEncodingType.URL_ENCODED)]


async def _staff_page(request: Request[Any, Any, Any], admin: StaffUser, **extra: Any) -> Template:
    async with portal_of(request).transaction() as db:
        staff = await list_staff(db)
        invitations = await open_invitations(db)
        withdrawn = await _withdrawn_invitation(request, db)
    status_code = extra.pop("status_code", 200)
    context = {
        "user": admin,
        "staff": staff,
        "invitations": invitations,
        "invitation_hours": INVITATION_HOURS,
        "reset_hours": RESET_HOURS,
        "roles": ROLES,
        "errors": {},
        "form": {},
        "confirmation": _confirmation(request, staff) or withdrawn,
        **extra,
    }
    return Template("admin/staff.html", context=context, status_code=status_code)


async def _withdrawn_invitation(request: Request[Any, Any, Any], db: AsyncSession) -> str | None:
    """Return the message that confirms a withdrawn invitation named in the address, or None.

    As for accounts, the address carries only the key and the invitation's id, and the message appears only
    while the invitation is still unused and ended.
    """
    if request.query_params.get("done") != "withdrawn":
        return None
    try:
        key = uuid.UUID(request.query_params.get("invitation") or "")
    except ValueError:
        return None
    invitation = await db.get(Invitation, key)
    if invitation is None or invitation.used_at is not None or invitation.expires_at > utcnow():
        return None
    if invitation.staff_id is not None:
        return _("The password reset link for {email} is withdrawn. It no longer works.").format(
            email=invitation.email
        )
    return _("The invitation for {email} is withdrawn. Its link no longer works.").format(
        email=invitation.email
    )


def _back_to_staff(done: str, staff_id: uuid.UUID) -> Redirect:
    """Redirect to the staff page, which then confirms the action ``done`` on the account ``staff_id``."""
    return Redirect(f"/admin/staff?done={done}&staff={staff_id}", status_code=303)


def _confirmation(request: Request[Any, Any, Any], staff: list[StaffUser]) -> str | None:
    """Build the message that confirms the action named in the address, or return None.

    The address carries a fixed key and an account id, never message text. The message describes the
    account as stored now, and none is shown when the account no longer matches the action (for example,
    a "disabled" link opened again after another administrator enabled the account).
    """
    done = request.query_params.get("done")
    staff_id = request.query_params.get("staff")
    member = next((member for member in staff if str(member.id) == staff_id), None)
    if member is None:
        return None

    if done == "role" and member.disabled_at is None:
        return _(
            "{email} now has the role “{role}”. Their sessions have ended and their API tokens are revoked, "
            "so they sign in again to continue."
        ).format(email=member.email, role=role_label(member.role))
    if done == "disabled" and member.disabled_at is not None:
        return _(
            "The account of {email} is disabled. They can no longer sign in, their sessions have ended and "
            "their API tokens are revoked."
        ).format(email=member.email)
    if done == "enabled" and member.disabled_at is None:
        return " ".join(
            [
                _("The account of {email} is enabled again.").format(email=member.email),
                _sign_in_again(request, member),
                _(
                    "API tokens revoked when the account was disabled stay revoked, so create a new one on "
                    "the API tokens page if they need it."
                ),
            ]
        )
    return None


def _sign_in_again(request: Request[Any, Any, Any], member: StaffUser) -> str:
    # Disabling keeps the password hash and the TOTP secret, so an enabled account signs in with both.
    if member.totp_secret_sealed is not None:
        return _("They sign in with their existing password and a code from their authenticator app.")
    if portal_of(request).policies.security.staff_require_totp:
        return _("They sign in with their existing password and then set up two-step sign in.")
    return _("They sign in with their existing password.")


@get("/admin", include_in_schema=False)
async def admin_home(request: Request[Any, Any, Any]) -> Redirect:
    await require_staff(request, "admin")
    return Redirect("/admin/staff", status_code=303)


@get("/admin/staff", include_in_schema=False)
async def staff_list(request: Request[Any, Any, Any]) -> Template:
    admin = await require_staff(request, "admin")
    return await _staff_page(request, admin)


@post("/admin/invitations", include_in_schema=False)
async def invite(request: Request[Any, Any, Any], data: FormData) -> Template:
    admin = await require_staff(request, "admin")
    portal = portal_of(request)
    email = data.get("email", "")
    resent = _(
        "This form was sent already, so the invitation for {email} exists and its link was shown once. "
        "If the link is lost, invite {email} again: the new link replaces the one shown before."
    ).format(email=email.strip()[:254])
    try:
        async with (
            sent_once(portal, data.get("form_id"), "invitation-form", resent, field="email"),
            portal.transaction() as db,
        ):
            created = await create_invitation(
                db,
                actor_for(request, f"staff:{admin.id}"),
                email=email,
                role=data.get("role", ""),
                created_by=admin,
            )
    except InvalidInput as error:
        errors = {error.field or "email": error.message}
        return await _staff_page(request, admin, errors=errors, form=data, status_code=400)

    # The link appears on this response only; the table keeps its SHA-256.
    context = {
        "user": admin,
        "invitation": created.invitation,
        "link": f"{portal.settings.public_url}/staff/invitations/{created.token}",
        "hours": INVITATION_HOURS,
        "replaced": created.replaced,
    }
    return Template("admin/invitation_created.html", context=context, status_code=201)


@post("/admin/invitations/{invitation_id:str}/withdraw", include_in_schema=False)
async def withdraw(request: Request[Any, Any, Any], invitation_id: FromPath[str]) -> Template | Redirect:
    admin = await require_staff(request, "admin")
    try:
        async with portal_of(request).transaction() as db:
            invitation = await withdraw_invitation(db, actor_for(request, f"staff:{admin.id}"), invitation_id)
    except InvalidInput as error:
        return await _staff_page(
            request, admin, errors={"invitations-heading": error.message}, status_code=400
        )
    return Redirect(f"/admin/staff?done=withdrawn&invitation={invitation.id}", status_code=303)


@post("/admin/staff/{staff_id:str}/role", include_in_schema=False)
async def set_role(
    request: Request[Any, Any, Any], staff_id: FromPath[str], data: FormData
) -> Template | Redirect:
    admin = await require_staff(request, "admin")
    try:
        async with portal_of(request).transaction() as db:
            target = await load_staff(db, staff_id)
            await change_role(
                db, actor_for(request, f"staff:{admin.id}"), admin, target, data.get("role", "")
            )
    except InvalidInput as error:
        # The error summary links to the role field of the account in the table.
        return await _staff_page(request, admin, errors={f"role-{staff_id}": error.message}, status_code=400)
    return _back_to_staff("role", target.id)


@post("/admin/staff/{staff_id:str}/reset", include_in_schema=False)
async def reset_password(
    request: Request[Any, Any, Any], staff_id: FromPath[str], data: FormData
) -> Template:
    admin = await require_staff(request, "admin")
    portal = portal_of(request)
    resent = _(
        "This form was sent already, so the reset link was created and shown once. If it was lost, create a "
        "new one: it replaces the earlier link."
    )
    try:
        async with (
            sent_once(portal, data.get("form_id"), "reset-form", resent, field="list-heading"),
            portal.transaction() as db,
        ):
            target = await load_staff(db, staff_id)
            row, token = await issue_reset(
                db,
                actor_for(request, f"staff:{admin.id}"),
                admin,
                target,
                reset_totp=data.get("reset_totp") == "yes",
            )
    except InvalidInput as error:
        return await _staff_page(request, admin, errors={"list-heading": error.message}, status_code=400)

    # The link appears on this response only; the table keeps its SHA-256. A reload sends the same form id
    # and gets the message above instead of a second link.
    context = {
        "user": admin,
        "row": row,
        "link": f"{portal.settings.public_url}/staff/password-reset/{token}",
        "hours": RESET_HOURS,
    }
    return Template("admin/reset_created.html", context=context, status_code=201)


AccountAction = Callable[[AsyncSession, Actor, StaffUser, StaffUser], Awaitable[object]]


async def _act_on_account(
    request: Request[Any, Any, Any], staff_id: str, action: AccountAction, done: str
) -> Redirect:
    """Run ``action`` as the signed-in admin on the account ``staff_id``, then confirm it on the staff page."""
    admin = await require_staff(request, "admin")
    async with portal_of(request).transaction() as db:
        target = await load_staff(db, staff_id)
        await action(db, actor_for(request, f"staff:{admin.id}"), admin, target)
    return _back_to_staff(done, target.id)


@post("/admin/staff/{staff_id:str}/disable", include_in_schema=False)
async def disable_account(request: Request[Any, Any, Any], staff_id: FromPath[str]) -> Redirect:
    return await _act_on_account(request, staff_id, disable, "disabled")


@post("/admin/staff/{staff_id:str}/enable", include_in_schema=False)
async def enable_account(request: Request[Any, Any, Any], staff_id: FromPath[str]) -> Redirect:
    return await _act_on_account(request, staff_id, enable, "enabled")


async def _tokens_page(request: Request[Any, Any, Any], admin: StaffUser, **extra: Any) -> Template:
    async with portal_of(request).transaction() as db:
        tokens = await list_tokens(db)
        owners = [user for user in await list_staff(db) if user.disabled_at is None]
    status_code = extra.pop("status_code", 200)
    context = {
        "user": admin,
        "tokens": tokens,
        "owners": owners,
        "scopes": TOKEN_SCOPES,
        "now": utcnow(),
        "errors": {},
        # No scope is ticked in advance, so a token gets only the scopes the administrator picks.
        "form": {"days": str(DEFAULT_TOKEN_DAYS), "scopes": []},
        **extra,
    }
    return Template("admin/tokens.html", context=context, status_code=status_code)


@get("/admin/tokens", include_in_schema=False)
async def tokens_list(request: Request[Any, Any, Any]) -> Template:
    admin = await require_staff(request, "admin")
    return await _tokens_page(request, admin)


def _as_list(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _first(value: list[str] | str | None) -> str:
    values = _as_list(value)
    return values[0] if values else ""


@post("/admin/tokens", include_in_schema=False)
async def token_create(request: Request[Any, Any, Any], data: ListFormData) -> Template:
    admin = await require_staff(request, "admin")
    portal = portal_of(request)
    scopes = _as_list(data.get("scopes"))
    form = {
        "owner": _first(data.get("owner")),
        "label": _first(data.get("label")),
        "days": _first(data.get("days")),
    }
    try:
        async with (
            sent_once(portal, _first(data.get("form_id")), "token-form", _token_resent(), field="label"),
            portal.transaction() as db,
        ):
            row, token, owner_email = await _issue_from_form(request, db, admin, form, scopes)
    except InvalidInput as error:
        # Naming the token costs a database read, so it happens only for a form that was sent before.
        message = (
            await _token_resent_message(portal, form) if isinstance(error, FormResent) else error.message
        )
        errors = {error.field or "label": message}
        return await _tokens_page(
            request, admin, errors=errors, form={**form, "scopes": scopes}, status_code=400
        )

    # The token appears on this response only; the table keeps its SHA-256.
    context = {"user": admin, "token": token, "row": row, "owner_email": owner_email}
    return Template("admin/token_created.html", context=context, status_code=201)


def _token_resent() -> str:
    return _(
        "This form was sent already, so the token exists and was shown once. If it was not copied, revoke "
        "it in the list of tokens and create a new one."
    )


async def _token_resent_message(portal: Portal, form: dict[str, str]) -> str:
    """Return the error for a token form sent a second time, naming the token's label and owner when known."""
    label = form["label"].strip()[:100]
    owner = None
    if label and form["owner"]:
        async with portal.transaction() as db:
            try:
                owner = await load_staff(db, form["owner"])
            except NotFound:
                owner = None
    if owner is None:
        return _token_resent()
    return _(
        "This form was sent already, so the token “{label}” for {email} exists and was shown once. If it was "
        "not copied, revoke it in the list of tokens and create a new one."
    ).format(label=label, email=owner.email)


async def _issue_from_form(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    admin: StaffUser,
    form: dict[str, str],
    scopes: list[str],
) -> tuple[ApiToken, str, str]:
    """Issue the token that the form describes and return the row, the token and the owner's e-mail address."""
    owner = await load_staff(db, form["owner"]) if form["owner"] else None
    if owner is None:
        raise InvalidInput(_("Choose the staff member the token acts for."), field="owner")
    if not form["label"].strip():
        raise InvalidInput(_("Give the token a label that names the system using it."), field="label")
    row, token = await issue_token(
        db,
        actor_for(request, f"staff:{admin.id}"),
        owner,
        label=form["label"],
        scopes=scopes,
        days=parse_days(form["days"]),
    )
    return row, token, owner.email


@post("/admin/tokens/{token_id:str}/revoke", include_in_schema=False)
async def token_revoke(request: Request[Any, Any, Any], token_id: FromPath[str]) -> Redirect:
    admin = await require_staff(request, "admin")
    async with portal_of(request).transaction() as db:
        await revoke_token(db, actor_for(request, f"staff:{admin.id}"), token_id)
    return Redirect("/admin/tokens", status_code=303)


admin_routes = [
    admin_home,
    staff_list,
    invite,
    withdraw,
    set_role,
    disable_account,
    enable_account,
    reset_password,
    tokens_list,
    token_create,
    token_revoke,
]
