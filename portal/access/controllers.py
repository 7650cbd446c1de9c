"""The recipient's pages: enter a code, see the report, view pages, download the copy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.lowlevel
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Response, Template

from portal.access.service import finish_download, recipient_share, redeem, start_download
from portal.access.statements import DOWNLOAD_GIVEN_BACK, ShareToDownload
from portal.audit.recorder import Actor, record
from portal.audit.transparency import PATIENT_PROFILE, other_disclosures
from portal.blobs import PlaintextCopy
from portal.crypto.errors import BlobIntegrityError
from portal.errors import (
    AccessDenied,
    CodeMistyped,
    InvalidInput,
    SecondFactorNeeded,
    ShareUnavailable,
    TooManyRequests,
)
from portal.i18n import N_, _
from portal.models import Document, Share
from portal.security.client import client_ip
from portal.security.sessions import (
    RECIPIENT_COOKIE,
    end_session,
    expired_cookie,
    load_session,
    open_sealed_secret,
    session_cookie,
)
from portal.storage.base import BlobNotFound
from portal.streaming import BufferStream
from portal.web import actor_for, portal_of

log = logging.getLogger(__name__)

FormData = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
MAX_VIEW_WIDTH = 1400
DAMAGED_COPY = N_("The stored copy failed its integrity check; ask the clinic to reissue the report.")


@get("/access", include_in_schema=False)
async def enter_code_page(request: Request[Any, Any, Any]) -> Template:
    # A GET never spends anything: link scanners and previews only ever see this form.
    finished = request.query_params.get("finished")
    context: dict[str, Any] = {
        "errors": {},
        "code": "",
        "ask_birth_date": False,
        # Set by the redirect after "Finish", which then confirms that the report was closed: "spent" when
        # the code cannot open it again, "1" otherwise.
        "finished": finished if finished in ("1", "spent") else None,
    }
    return Template("access/enter.html", context=context)


@post("/access", include_in_schema=False)
async def enter_code(request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
    portal = portal_of(request)
    entered = data.get("code", "")
    try:
        redemption = await redeem(
            portal,
            actor_for(request, "recipient:unknown"),
            entered,
            previous_session_id=request.cookies.get(RECIPIENT_COOKIE),
            date_of_birth=data.get("date_of_birth"),
            client_address=client_ip(request, portal.settings.trusted_proxy_hops),
        )
    except SecondFactorNeeded as error:
        # The date of birth is a next step, not a mistake, so the page requests it without error styling.
        context = {
            "errors": {},
            "code": entered[:40],
            "ask_birth_date": True,
            "birth_date_prompt": error.message,
        }
        return Template("access/enter.html", context=context)
    except (AccessDenied, CodeMistyped, InvalidInput, TooManyRequests) as error:
        # The typed code stays in the field, so the recipient can compare it with the letter character by
        # character. The date field stays if it was asked for.
        context = {
            "errors": {error.field or "code": error.message},
            "code": entered[:40],
            "ask_birth_date": bool(data.get("date_of_birth")),
        }
        return Template("access/enter.html", context=context, status_code=error.status_code)
    return Redirect(
        "/access/share", status_code=303, cookies=[session_cookie("recipient", redemption.session_id)]
    )


async def _documents_of(portal: Any, db: Any, share: Share) -> list[Document]:
    return [link.document for link in share.documents]


@get("/access/share", include_in_schema=False)
async def share_page(request: Request[Any, Any, Any]) -> Template:
    portal = portal_of(request)
    async with portal.transaction() as db:
        session, share = await recipient_share(portal, db, request.cookies.get(RECIPIENT_COOKIE))
        documents = await _documents_of(portal, db, share)
        # A patient sees who else received these reports, by recipient profile only.
        disclosures = await other_disclosures(db, portal.policies, share)
    pages = sum(document.pages for document in documents)
    return Template(
        "access/share.html",
        context={
            "share": share,
            "documents": documents,
            "pages": pages,
            "profile": portal.policies.profiles.get(share.profile),
            "downloads_left": _downloads_left(share),
            "code_spent": _code_spent(share),
            # recipient_share refuses every request once the share expires, so the earlier end applies.
            "session_ends_at": min(session.expires_at, share.expires_at),
            "idle_minutes": session.idle_seconds // 60,
            "other_disclosures": disclosures,
            "show_disclosures": share.profile == PATIENT_PROFILE,
        },
    )


@get("/access/share/downloads", include_in_schema=False)
async def downloads_left(request: Request[Any, Any, Any]) -> Template:
    """Return the share page's download count, which the page reloads after each download starts.

    An ended session or share gets status 410, as on the other recipient routes, and its reason replaces
    the count instead of an error page.
    """
    portal = portal_of(request)
    try:
        async with portal.transaction() as db:
            _session, share = await recipient_share(portal, db, request.cookies.get(RECIPIENT_COOKIE))
    except ShareUnavailable as error:
        return Template(
            "access/_downloads_left.html",
            context={"downloads_left": 0, "code_spent": False, "ended": error.message, "update_action": True},
            status_code=error.status_code,
        )
    context = {
        "downloads_left": _downloads_left(share),
        "code_spent": _code_spent(share),
        "ended": None,
        "update_action": True,
    }
    return Template("access/_downloads_left.html", context=context)


def _downloads_left(share: Share) -> int:
    return max(share.max_downloads - share.downloads_started, 0)


def _code_spent(share: Share) -> bool:
    """Return whether the code has no redemption left, so the downloads left can happen in this session only."""
    return share.redemptions >= share.max_redemptions


@get("/access/download", include_in_schema=False)
async def download(request: Request[Any, Any, Any]) -> BufferStream:
    portal = portal_of(request)
    who = actor_for(request, "recipient")
    share, data_key = await start_download(portal, who, request.cookies.get(RECIPIENT_COOKIE))
    copy = await _open_copy(portal, who, share, share.copy_blob_id, data_key)

    async def body() -> AsyncIterator[bytes | memoryview]:
        sent = 0
        completed = False
        reason = None
        try:
            async for chunk in copy.chunks:
                yield chunk
                sent += len(chunk)
                # Give the server a chance to report a disconnect between chunks.
                await anyio.lowlevel.checkpoint()
            # Reached only after the server took the last chunk, so "completed" means every byte was handed over.
            completed = True
        except (BlobIntegrityError, BlobNotFound):
            # A segment past the first MiB failed authentication, or the file vanished. Nothing of it was
            # sent. Raising cuts the connection, so the Content-Length shows an incomplete download.
            log.error(
                "stored copy failed its integrity check while being sent", extra={"share_id": str(share.id)}
            )
            reason = "integrity_check_failed"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await copy.chunks.aclose()
                await finish_download(portal, who, share, completed, sent, reason=reason)

    filename = f"report-{share.reference}.pdf"
    return BufferStream(
        body(),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            # A body cut short by a damaged segment is then visibly incomplete.
            "Content-Length": str(copy.size),
        },
    )


async def _open_copy(
    portal: Any, who: Actor, share: ShareToDownload, blob_id: str, data_key: bytes
) -> PlaintextCopy:
    """Open the copy for one streaming pass; a copy that fails the checks before the first byte gets a page.

    ``BlobService.open_plaintext`` authenticates the header, the size, the final segment and the first
    MiB here, which catches truncation, a copy under another key or id, and damage at the start.
    """
    try:
        return await portal.blobs.open_plaintext(blob_id, data_key)
    except (BlobIntegrityError, BlobNotFound) as error:
        log.error(
            "stored copy failed its integrity check",
            extra={"share_id": str(share.id), "blob_id": blob_id, "error": type(error).__name__},
        )
        recipient = Actor(f"recipient:{share.id}", who.ip_prefix, who.user_agent_family, who.request_id)
        async with portal.transaction() as db:
            # Nothing was sent, so the recipient gets the download back.
            await db.execute(DOWNLOAD_GIVEN_BACK, {"share_id": share.id})
            await record(
                db,
                recipient,
                "access.download.aborted",
                outcome="failure",
                share_id=share.id,
                purpose=share.purpose,
                details={"bytes": 0, "reason": "integrity_check_failed"},
            )
        raise ShareUnavailable(_(DAMAGED_COPY), code="copy_damaged") from None


@get("/access/pages/{page:int}", include_in_schema=False)
async def view_page(request: Request[Any, Any, Any], page: FromPath[int]) -> Response[bytes]:
    portal = portal_of(request)
    raw_id = request.cookies.get(RECIPIENT_COOKIE)
    async with portal.transaction() as db:
        session, share = await recipient_share(portal, db, raw_id)
        if not share.allow_view or share.copy_blob_id is None:
            raise ShareUnavailable(_("This report can be downloaded but not viewed in the browser."))
        total = sum(link.document.pages for link in share.documents)
        if not 1 <= page <= total:
            raise InvalidInput(
                _("Page {page} does not exist. The report has {total} pages.").format(page=page, total=total)
            )
        data_key = await portal.blobs.data_key(db, share.copy_blob_id)
        blob_id = share.copy_blob_id
        password = open_sealed_secret(session, raw_id or "")
        await record(
            db,
            actor_for(request, f"recipient:{share.id}"),
            "access.viewed",
            share_id=share.id,
            purpose=share.purpose,
            details={"page": page},
        )
    try:
        copy = await portal.blobs.read_with_key(blob_id, data_key)
    except BlobIntegrityError:
        log.error("stored copy failed its integrity check", extra={"share_id": str(share.id)})
        raise ShareUnavailable(
            _("The stored copy failed its integrity check. Ask the clinic to reissue the report.")
        ) from None
    image = await portal.pdf.render_page(copy, password, page - 1, MAX_VIEW_WIDTH)
    return Response(image, media_type="image/png", headers={"Cache-Control": "no-store"})


@post("/access/end", include_in_schema=False)
async def end(request: Request[Any, Any, Any]) -> Redirect:
    portal = portal_of(request)
    raw_id = request.cookies.get(RECIPIENT_COOKIE)
    async with portal.transaction() as db:
        session = await load_session(db, kind="recipient", raw_id=raw_id)
        share = await db.get(Share, session.subject_id) if session else None
        await end_session(db, raw_id)
    # The confirmation states whether the code can open the report again, so no message suggests retrying a
    # code that is used up.
    spent = share is not None and _code_spent(share)
    return Redirect(
        "/access?finished=spent" if spent else "/access?finished=1",
        status_code=303,
        cookies=[expired_cookie("recipient")],
        # "cookies" is left out so the recipient's language choice survives; the session cookie expires above.
        headers={"Clear-Site-Data": '"cache", "storage"'},
    )


access_routes = [enter_code_page, enter_code, share_page, downloads_left, download, view_page, end]
