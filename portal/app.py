"""Assemble the Litestar application: routes, templates, CSRF, security headers and error pages."""

from __future__ import annotations

import logging
import secrets
import time
import zoneinfo
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy.exc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp, Receive, Scope, Send

from portal import i18n, labels
from portal.access.controllers import access_routes
from portal.admin.controllers import admin_routes
from portal.api.controllers import api_routes
from portal.audit.checkpoints import periodic_checkpoints
from portal.config import DEFAULT_CLINIC_NAME, REPOSITORY_ROOT, Settings
from portal.core import open_keyring, start_portal
from portal.documents.controllers import document_routes
from portal.dpo.controllers import dpo_routes
from portal.errors import NotAuthenticated, PortalError
from portal.health import health_routes
from portal.i18n import _
from portal.logs import configure_logging, quiet_libraries
from portal.notifications import wait_for_notices
from portal.policies import Policies, load_policies, profile_label
from portal.retention.controllers import retention_routes
from portal.security.headers import SecurityHeadersMiddleware
from portal.shares.bulk import MAX_CSV_BYTES
from portal.shares.controllers import share_routes
from portal.staff.controllers import staff_routes
from portal.web import portal_of

log = logging.getLogger(__name__)

TEMPLATE_DIR = REPOSITORY_ROOT / "templates"
STATIC_DIR = REPOSITORY_ROOT / "static"
CSRF_COOKIE = "__Host-csrftoken"


def _build_jinja(settings: Settings, policies: Policies) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    # A fresh one-time id for forms whose second send must not repeat the action (portal/form_ids.py).
    environment.globals["new_form_id"] = lambda: secrets.token_urlsafe(16)
    environment.globals["clinic_name"] = settings.clinic_name
    environment.globals["clinic_contact"] = settings.clinic_contact
    environment.globals["public_url"] = settings.public_url
    environment.globals["current_language"] = i18n.language_var.get
    environment.globals["language_names"] = i18n.LANGUAGE_NAMES
    environment.globals["in_language"] = _in_language
    clinic_zone = zoneinfo.ZoneInfo(settings.timezone)
    environment.globals["clinic_time"] = lambda moment: moment.astimezone(clinic_zone)
    # Staff pages show times as "2026-12-31 23:59 CET"; the access log and the DPO's pages keep UTC.
    environment.globals["clinic_time_text"] = lambda moment: i18n.clinic_time_text(moment, settings.timezone)
    environment.globals["clinic_timezone"] = settings.timezone
    # Recipients' pages and slips write dates out in words ("31 December 2026 at 23:59 CET").
    environment.globals["long_date_text"] = i18n.long_date_text
    environment.globals["recipient_time_text"] = lambda moment: i18n.recipient_time_text(
        moment, settings.timezone
    )
    # Profile labels and descriptions come from policies/profiles.toml. The shipped ones are in the
    # catalogue (portal.policies.SHIPPED_PROFILE_TEXTS). A clinic's own text is shown as written.
    environment.globals["policy_text"] = i18n.gettext
    environment.globals["event_label"] = labels.event_label
    environment.globals["outcome_label"] = labels.outcome_label
    environment.globals["role_label"] = labels.role_label

    def label_profile(name: str) -> str:
        return profile_label(policies, name)

    environment.globals["profile_label"] = label_profile
    environment.globals["detail_items"] = lambda details: labels.detail_items(details, label_profile)
    return environment


# Error pages under these paths link to the staff start page (GET /staff/home sends a signed-in member to
# their role's page and anyone else to sign-in) instead of the recipients' "Enter an access code".
STAFF_AREA_PREFIXES = ("/staff", "/admin", "/dpo")


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/")


def _error_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    back_to_form: str | None = None,
) -> Response[Any]:
    request_id = request.scope.get("state", {}).get("request_id")
    if _wants_json(request):
        error = {"code": code, "message": message, "field": field, "request_id": request_id}
        return Response({"error": error}, status_code=status)
    context = {
        "status": status,
        "code": code,
        "message": message,
        "request_id": request_id,
        "staff_area": request.url.path.startswith(STAFF_AREA_PREFIXES),
        "back_to_form": back_to_form,
    }
    return Template("errors/error.html", context=context, status_code=status)


def handle_portal_error(request: Request[Any, Any, Any], error: PortalError) -> Response[Any]:
    if isinstance(error, NotAuthenticated) and not _wants_json(request):
        return Redirect("/staff/login", status_code=303)
    return _error_response(request, error.status_code, error.code, error.message, error.field)


def handle_http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    status = error.status_code
    if isinstance(error, PermissionDeniedException) and "csrf" in str(error.detail).lower():
        message = _("The form expired or was sent from another page. Reload the page and try again.")
        return _error_response(request, 403, "csrf_failed", message)
    if isinstance(error, NotAuthorizedException):
        return _error_response(request, 401, "not_authenticated", _("Sign in to continue."))
    if status == 413:
        return _too_large_response(request)
    messages = {
        400: _("The request could not be read. Check the form fields and try again."),
        404: _("This page does not exist. Check the address."),
        405: _("This address does not accept that kind of request."),
        429: _("Too many requests. Wait a minute and try again."),
    }
    message = messages.get(status, _("The request failed."))
    if status == 400 and error.detail and "multipart" in str(error.detail).lower():
        message = _("The form has too many fields or parts. Send only the file and the listed fields.")
    return _error_response(request, status, f"http_{status}", message)


# Forms with a file field and the page that shows each of them again.
_UPLOAD_FORMS = {"/staff/documents": "/staff", "/api/v1/documents": None}
_BULK_FORM = "/staff/shares/bulk"


def _too_large_response(request: Request[Any, Any, Any]) -> Response[Any]:
    """Name the limit of the form whose body was over the route's size limit, and link back to that form.

    The framework raises this before the handler runs, often while the CSRF check reads the form, so the
    typed fields are lost. Bodies up to the route's limit reach the handler, which shows the form again.
    """
    path = request.url.path
    if path in _UPLOAD_FORMS:
        max_bytes = portal_of(request).policies.security.upload_max_body_bytes
        message = _(
            "The upload is larger than {max} MB, the most a report may have. Reduce the photo resolution, "
            "export the report again and upload it from the form."
        ).format(max=max_bytes // 1_000_000)
        return _error_response(request, 413, "http_413", message, "file", back_to_form=_UPLOAD_FORMS[path])
    if path == _BULK_FORM:
        message = _("The file is larger than {max} kB. Split it.").format(max=MAX_CSV_BYTES // 1000)
        return _error_response(request, 413, "http_413", message, "csv", back_to_form=_BULK_FORM)
    message = _("The form is larger than this page accepts. Shorten the entries and send it again.")
    return _error_response(request, 413, "http_413", message)


def handle_database_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Return 503 when the database cannot be reached; the transaction that failed was rolled back."""
    # The exception's text can hold the database address; the type is enough to diagnose from the log.
    log.error(
        "database unavailable",
        extra={"path": _loggable_path(request.url.path), "error": type(error).__name__},
    )
    message = _(
        "The portal cannot reach its database at the moment. Nothing was changed; try again in a minute."
    )
    response = _error_response(request, 503, "database_unavailable", message)
    response.headers["Retry-After"] = "30"
    return response


def handle_unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=error, extra={"path": _loggable_path(request.url.path)})
    message = _("Something went wrong on our side. Nothing was changed; try again, and quote the request id.")
    return _error_response(request, 500, "internal_error", message)


# Paths whose last segment is a secret (invitation and password reset tokens), logged without it.
_SECRET_PATH_PREFIXES = ("/staff/invitations/", "/staff/password-reset/")


def _loggable_path(path: str) -> str:
    for prefix in _SECRET_PATH_PREFIXES:
        if path.startswith(prefix):
            return prefix + "…"
    return path


class RequestLogMiddleware:
    """One application-log line per request: method, path without query, status, duration; no addresses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = [0]

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": _loggable_path(scope.get("path", "")),
                    "status": status[0],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


def create_app(
    settings: Settings | None = None, *, pdf_workers: int | None = None, lazy_pdf: bool = False
) -> Litestar:
    """Build the application; services start in the lifespan so the app object is cheap to create."""
    settings = settings or Settings.from_env()
    quiet_libraries()
    # Invalid policy files stop start-up here, before the server binds, with the file, key and reason.
    policies = load_policies(settings.policy_dir)
    if settings.clinic_name == DEFAULT_CLINIC_NAME or not settings.clinic_contact:
        log.warning(
            "PORTAL_CLINIC_NAME or PORTAL_CLINIC_CONTACT is not set: recipients see 'Clinic' as the sender "
            "or get no number to call. Set both before handing out access codes."
        )
    if settings.timezone == "UTC":
        log.warning(
            "Times on slips and pages show in UTC. Set PORTAL_TIMEZONE to the clinic's time zone, "
            "for example Europe/Berlin, unless the clinic keeps UTC."
        )
    if not policies.security.staff_require_totp:
        log.warning(
            "Staff sign in with a password alone. Set require_totp = true in %s so that every staff "
            "member enrols an authenticator app.",
            settings.policy_dir / "security.toml",
        )
    keyring = open_keyring(settings)
    csrf_secret = keyring.secret("session").hex()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        portal = await start_portal(
            settings, pdf_workers=pdf_workers, policies=policies, keyring=keyring, lazy_pdf=lazy_pdf
        )
        app.state.portal = portal
        try:
            async with periodic_checkpoints(portal, interval_minutes=settings.checkpoint_minutes):
                yield
        finally:
            # A notice for an event committed just before shutdown is still sent (bounded by the SMTP timeout).
            await wait_for_notices()
            await portal.close()

    static_router = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        cache_control=None,
        include_in_schema=False,
        opt={"exclude_from_csrf": True},
    )

    app = Litestar(
        route_handlers=[
            *staff_routes,
            *document_routes,
            *share_routes,
            *access_routes,
            *dpo_routes,
            *api_routes,
            *admin_routes,
            *health_routes,
            *retention_routes,
            static_router,
        ],
        lifespan=[lifespan],
        template_config=TemplateConfig(
            engine=JinjaTemplateEngine.from_environment(_build_jinja(settings, policies)),
        ),
        csrf_config=CSRFConfig(
            secret=csrf_secret,
            cookie_name=CSRF_COOKIE,
            cookie_secure=True,
            cookie_httponly=True,
            cookie_samesite="strict",
            header_name="x-csrftoken",
            exclude=["/api/", "/static/"],
        ),
        exception_handlers={
            PortalError: handle_portal_error,
            HTTPException: handle_http_error,
            # A lost connection or a database that refuses connections (restart, failover, outage).
            sqlalchemy.exc.OperationalError: handle_database_unavailable,
            sqlalchemy.exc.InterfaceError: handle_database_unavailable,
            psycopg.OperationalError: handle_database_unavailable,
            Exception: handle_unexpected,
        },
        middleware=[RequestLogMiddleware],
        multipart_form_part_limit=6,
        request_max_body_size=1_000_000,
        debug=False,
        openapi_config=None,
        logging_config=None,
    )
    # Outside the router and its exception handling, so 404s for unknown paths get the headers too.
    # The language wraps the router too, so 404 pages and exception handlers render in the request's language.
    app.asgi_handler = SecurityHeadersMiddleware(i18n.LanguageMiddleware(app.asgi_handler))
    return app


def app_factory() -> Litestar:
    """Entry point for ASGI servers (``uvicorn --factory portal.app:app_factory``)."""
    configure_logging()
    return create_app()


__all__ = ["Path", "app_factory", "create_app"]


def _in_language(language: str, caller: Callable[[], str]) -> str:
    """Render a ``{% call in_language(code) %}`` block in another language, such as a recipient's slip."""
    with i18n.using_language(language):
        return caller()
