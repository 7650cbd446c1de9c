"""The clinician's share pages: the dashboard, the create-share dialog, bulk issue, revoke, reissue, approve.

A dashboard request renders the whole page, or for htmx (``HX-Request: true``) only the share table the
page includes, with ``Vary: HX-Request``. Filters travel in POST bodies, never in the address: htmx copies
the address into sessionStorage, and a patient reference must not land there.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import anyio
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from markupsafe import Markup
from sqlalchemy import select

from portal.audit.recorder import Actor
from portal.core import Portal
from portal.documents.service import list_documents, load_document, open_patient_ref, too_large_message
from portal.errors import InvalidInput, NotAuthenticated, NotFound, PortalError
from portal.form_ids import sent_once
from portal.i18n import _, using_language
from portal.models import Document, StaffUser
from portal.security import codes
from portal.security.hashing import CODE_HASHER, verify_secret
from portal.shares import bulk
from portal.shares.service import (
    DASHBOARD_STATES,
    DashboardFilter,
    IssuedShare,
    ShareForm,
    approve_share,
    create_share,
    dashboard_shares,
    load_share,
    parse_dashboard_filter,
    parse_share_form,
    patient_documents,
    reissue_lifetime_days,
    reissue_share,
    revoke_share,
    share_status,
    shares_for_document,
)
from portal.shares.slip import access_link, qr_svg, recipient_markup, share_slip_pdf, slip_texts
from portal.web import actor_for, portal_of, require_staff

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
# The bulk form carries a CSV file of at most bulk.MAX_CSV_BYTES plus a few short fields.
BULK_BODY_LIMIT = bulk.MAX_CSV_BYTES + 20_000


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def _share_options(data: dict[str, Any]) -> dict[str, str | None]:
    """Return the optional create-share fields: organisation, lower limits, start time."""
    return {
        "recipient_org": data.get("recipient_org"),
        "expiry_days": data.get("expiry_days"),
        "max_downloads": data.get("max_downloads"),
        "not_before": data.get("not_before"),
        "language": data.get("language"),
    }


# Dashboard


async def render_dashboard(
    request: Request[Any, Any, Any],
    user: StaffUser,
    filters: DashboardFilter | None = None,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    """Render the dashboard page: upload form, reports and the live share table."""
    portal = portal_of(request)
    filters = filters or DashboardFilter()
    return Template(
        "staff/dashboard.html",
        context={
            "user": user,
            "documents": await list_documents(portal, patient_ref=filters.patient_ref or None),
            "patient_ref": filters.patient_ref,
            "filters": filters,
            "states": DASHBOARD_STATES,
            "share_rows": await dashboard_shares(portal, filters),
            "errors": errors or {},
            "form": form or {},
            "max_upload_mb": portal.policies.security.upload_max_body_bytes // 1_000_000,
            "max_upload_bytes": portal.policies.security.upload_max_body_bytes,
            "upload_too_large_text": too_large_message(
                "{name}", "{size}", portal.policies.security.upload_max_body_bytes
            ),
        },
        headers={"Vary": "HX-Request"},
        status_code=status_code,
    )


@post("/staff", include_in_schema=False, status_code=200)
async def dashboard_filtered(request: Request[Any, Any, Any], data: FormData) -> Template | Response[str]:
    """Apply the dashboard's filters: the share table for htmx (also its 10 s poll), else the whole page."""
    try:
        user = await require_staff(request, "clinician", "admin")
    except NotAuthenticated:
        if not _is_htmx(request):
            raise
        # A poll after the session ended sends the whole page to the sign-in form instead of swapping it in.
        return Response("", status_code=401, headers={"HX-Redirect": "/staff/login", "Vary": "HX-Request"})

    portal = portal_of(request)
    errors: dict[str, str] = {}
    try:
        filters = parse_dashboard_filter(data.get("patient_ref"), data.get("state"))
    except InvalidInput as problem:
        errors = {problem.field or "filter_state": problem.message}
        filters = DashboardFilter()

    if not _is_htmx(request):
        return await render_dashboard(
            request, user, filters, errors=errors, status_code=400 if errors else 200
        )
    context = {
        "user": user,
        "filters": filters,
        "share_rows": await dashboard_shares(portal, filters),
        "filter_errors": errors,
    }
    return Template(
        "staff/_shares.html",
        context=context,
        headers={"Vary": "HX-Request"},
        status_code=400 if errors else 200,
    )


# Creating shares


def _document_context(
    portal: Portal, user: StaffUser, document: Document, shares: list[Any]
) -> dict[str, Any]:
    return {
        "user": user,
        "document": document,
        "patient_ref": open_patient_ref(portal, document),
        "removed": json.loads(document.removed_content),
        "warnings": json.loads(document.warnings),
        "shares": [(share, share_status(share)) for share in shares],
        "profiles": portal.policies.profiles,
    }


async def _create_once(
    portal: Portal, who: Actor, user: StaffUser, form: ShareForm, form_id: str | None
) -> IssuedShare:
    """Create the share, unless this form was sent before (a reload of the code page sends it again)."""
    resent = _(
        "This form was sent already, so the share exists and its code was shown once. Open the share "
        "from the report's page and reissue it if you need a new code."
    )
    async with sent_once(portal, form_id, "share-form", resent, field="recipient_name"):
        return await create_share(portal, who, user, form)


@post("/staff/documents/{document_id:str}/shares", include_in_schema=False)
async def create(request: Request[Any, Any, Any], document_id: FromPath[str], data: FormData) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    document = await load_document(portal, document_id)
    try:
        form = parse_share_form(
            portal,
            [str(document.id)],
            data.get("profile"),
            data.get("recipient_name"),
            data.get("purpose"),
            data.get("date_of_birth"),
            **_share_options(data),
        )
        issued = await _create_once(
            portal, actor_for(request, f"staff:{user.id}"), user, form, data.get("form_id")
        )
    except PortalError as error:
        if error.status_code not in (400, 422):
            raise
        async with portal.transaction() as db:
            shares = await shares_for_document(db, document.id)
        context = _document_context(portal, user, document, shares)
        context.update({"errors": {error.field or "recipient_name": error.message}, "form": data})
        return Template("staff/document.html", context=context, status_code=error.status_code)

    return _code_page(portal, user, issued)


async def _dialog_page(
    request: Request[Any, Any, Any],
    user: StaffUser,
    anchor: Document,
    *,
    chosen: list[str],
    form: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Template:
    portal = portal_of(request)
    return Template(
        "staff/share_new.html",
        context={
            "user": user,
            "anchor": anchor,
            "patient_ref": open_patient_ref(portal, anchor),
            "choices": await patient_documents(portal, anchor),
            "chosen": set(chosen),
            "profiles": portal.policies.profiles,
            "form": form,
            "errors": errors,
        },
        status_code=status_code,
    )


@get("/staff/shares/new", include_in_schema=False)
async def new_share_page(request: Request[Any, Any, Any]) -> Template:
    """Show the create-share dialog for one report or a referral package of several reports of one patient."""
    user = await require_staff(request, "clinician", "admin")
    anchor = await load_document(portal_of(request), request.query_params.get("document", ""))
    return await _dialog_page(request, user, anchor, chosen=[str(anchor.id)], form={}, errors={})


@post("/staff/shares", include_in_schema=False)
async def create_from_dialog(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    submitted = await request.form()
    data = {key: value for key, value in submitted.items() if isinstance(value, str)}
    chosen = [value for value in submitted.getall("document_ids") if isinstance(value, str)]
    anchor = await load_document(portal, data.get("anchor", ""))
    try:
        form = parse_share_form(
            portal,
            chosen,
            data.get("profile"),
            data.get("recipient_name"),
            data.get("purpose"),
            data.get("date_of_birth"),
            **_share_options(data),
        )
        issued = await _create_once(
            portal, actor_for(request, f"staff:{user.id}"), user, form, data.get("form_id")
        )
    except PortalError as error:
        if error.status_code not in (400, 404, 422):
            raise
        errors = {error.field or "recipient_name": error.message}
        return await _dialog_page(
            request, user, anchor, chosen=chosen, form=data, errors=errors, status_code=error.status_code
        )
    return _code_page(portal, user, issued)


def _code_page(portal: Portal, user: StaffUser, issued: IssuedShare, status_code: int = 201) -> Template:
    """Show a new code once, with its slip; Cache-Control: no-store keeps it out of the browser cache.

    The page is in the clinician's language and the slip on it in the recipient's.
    """
    share = issued.share
    link = access_link(portal.settings.public_url, issued.printed_code)
    with using_language(share.language):
        texts: dict[str, str] = {
            **slip_texts(share, portal.settings.timezone),
            "recipient": recipient_markup(share.recipient_name, share.recipient_org),
        }
    return Template(
        "staff/share_created.html",
        context={
            "user": user,
            "share": share,
            "document_id": share.documents[0].document_id if share.documents else None,
            "code": issued.printed_code,
            "profile": portal.policies.profiles.get(share.profile),
            "access_url": f"{portal.settings.public_url}/access",
            "qr_svg": Markup(qr_svg(link)),  # noqa: S704 - segno's SVG markup, built from the server's own URL
            **texts,
        },
        status_code=status_code,
    )


# Following one share


@get("/staff/shares/{share_id:str}", include_in_schema=False)
async def share_page(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    # Who created and who approved: the four-eyes rule is only visible with both names.
    staff_ids = [staff_id for staff_id in (share.created_by, share.approved_by) if staff_id is not None]
    async with portal.transaction() as db:
        rows = await db.execute(select(StaffUser.id, StaffUser.email).where(StaffUser.id.in_(staff_ids)))
        emails = {staff_id: email for staff_id, email in rows}
    return Template(
        "staff/share.html",
        context={
            "user": user,
            "share": share,
            "status": share_status(share),
            "profile": portal.policies.profiles.get(share.profile),
            "created_by": emails.get(share.created_by, ""),
            "approved_by": emails.get(share.approved_by, "") if share.approved_by else "",
        },
    )


@get("/staff/shares/{share_id:str}/revoke", include_in_schema=False)
async def confirm_revoke(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    """Ask before revoking; the page's button sends the POST that revokes."""
    return await _confirm_page(request, share_id, "revoke")


@get("/staff/shares/{share_id:str}/reissue", include_in_schema=False)
async def confirm_reissue(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    """Ask before reissuing; the page's button sends the POST that replaces the code and copy."""
    return await _confirm_page(request, share_id, "reissue")


async def _confirm_page(request: Request[Any, Any, Any], share_id: str, action: str) -> Template:
    user = await require_staff(request, "clinician", "admin")
    share = await load_share(portal_of(request), share_id)
    if share.revoked_at is not None:
        raise InvalidInput(
            _("Share {reference} is revoked already. Create a new share instead.").format(
                reference=share.reference
            )
        )
    return Template(
        "staff/share_confirm.html",
        context={
            "user": user,
            "share": share,
            "status": share_status(share),
            "action": action,
            "lifetime_days": reissue_lifetime_days(
                share, portal_of(request).policies.profiles.get(share.profile)
            ),
        },
    )


@post("/staff/shares/{share_id:str}/revoke", include_in_schema=False)
async def revoke(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Redirect:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    await revoke_share(portal, actor_for(request, f"staff:{user.id}"), share.id)
    return Redirect(f"/staff/shares/{share.id}", status_code=303)


@post("/staff/shares/{share_id:str}/reissue", include_in_schema=False)
async def reissue(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    issued = await reissue_share(portal, actor_for(request, f"staff:{user.id}"), share.id)
    return _code_page(portal, user, issued, status_code=200)


@post("/staff/shares/{share_id:str}/slip", include_in_schema=False, status_code=200)
async def slip(request: Request[Any, Any, Any], share_id: FromPath[str], data: FormData) -> Response[bytes]:
    """Return the slip as a PDF; the code comes back in the POST body and must match the stored hash."""
    await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    try:
        code = codes.normalise(data.get("code", ""))
    except codes.CodeFormatError:
        raise InvalidInput(
            _("The code is missing or mistyped. Reissue the share to get a new slip.")
        ) from None
    if not await verify_secret(CODE_HASHER, share.code_hash, code):
        raise InvalidInput(_("This is not the share's current code. Reissue the share to get a new slip."))

    document = await anyio.to_thread.run_sync(share_slip_pdf, share, codes.display(code), portal.settings)
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="slip-{share.reference}.pdf"'},
    )


@post("/staff/shares/{share_id:str}/approve", include_in_schema=False)
async def approve(request: Request[Any, Any, Any], share_id: FromPath[str]) -> Redirect:
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    share = await load_share(portal, share_id)
    await approve_share(portal, actor_for(request, f"staff:{user.id}"), user, share.id)
    return Redirect(f"/staff/shares/{share.id}", status_code=303)


# Bulk issue


def _bulk_page(
    portal: Portal, user: StaffUser, form: dict[str, str], problem: PortalError | None = None
) -> Template:
    row_errors = problem.errors if isinstance(problem, bulk.BulkRejected) else []
    return Template(
        "staff/shares_bulk.html",
        context={
            "user": user,
            "profiles": portal.policies.profiles,
            "form": form,
            "errors": {problem.field or "csv": problem.message} if problem else {},
            "row_errors": row_errors,
            "max_rows": bulk.MAX_ROWS,
        },
        status_code=problem.status_code if problem else 200,
    )


@get("/staff/shares/bulk", include_in_schema=False)
async def bulk_page(request: Request[Any, Any, Any]) -> Template:
    user = await require_staff(request, "clinician", "admin")
    return _bulk_page(portal_of(request), user, {})


@post("/staff/shares/bulk", include_in_schema=False, request_max_body_size=BULK_BODY_LIMIT, status_code=200)
async def bulk_issue(request: Request[Any, Any, Any]) -> Template | Response[bytes]:
    """Create one share per CSV row and answer one PDF of slips, or list every bad row and create nothing."""
    user = await require_staff(request, "clinician", "admin")
    portal = portal_of(request)
    submitted = await request.form()
    fields = {key: value for key, value in submitted.items() if isinstance(value, str)}
    upload = submitted.get("csv")
    try:
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                _("No CSV file was attached. Choose the file and send the form again."), field="csv"
            )
        data = await upload.read(bulk.MAX_CSV_BYTES + 1)
        rows = await bulk.validate_rows(
            portal, bulk.read_rows(data), fields.get("profile"), fields.get("purpose")
        )
        issued = await bulk.issue_all(portal, actor_for(request, f"staff:{user.id}"), user, rows)
    except bulk.BulkIssueFailed as failure:
        return _bulk_page(portal, user, fields, failure)
    except InvalidInput as problem:
        return _bulk_page(portal, user, fields, problem)

    document = await anyio.to_thread.run_sync(bulk.slips_document, portal, issued)
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="slips-{len(issued)}.pdf"'},
    )


share_routes = [
    dashboard_filtered,
    create,
    new_share_page,
    create_from_dialog,
    bulk_page,
    bulk_issue,
    share_page,
    confirm_revoke,
    confirm_reissue,
    revoke,
    reissue,
    slip,
    approve,
]
__all__ = ["NotFound", "render_dashboard", "share_routes", "uuid"]
