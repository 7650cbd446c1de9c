"""Request helpers shared by the feature packages: the portal, the actor, staff and token authentication."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from litestar import Request
from sqlalchemy import select

from portal.audit.recorder import Actor
from portal.core import Portal
from portal.errors import Forbidden, InvalidInput, NotAuthenticated, UnsupportedMediaType
from portal.i18n import _
from portal.models import ApiToken, StaffUser, utcnow
from portal.security.client import client_ip, ip_prefix, user_agent_family
from portal.security.hashing import sha256_hex
from portal.security.sessions import STAFF_COOKIE, load_session

STAFF_ROLES = ("clinician", "admin", "dpo")


def portal_of(request: Request[Any, Any, Any]) -> Portal:
    return request.app.state.portal


def request_id_of(request: Request[Any, Any, Any]) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def client_prefix(request: Request[Any, Any, Any]) -> str | None:
    portal = portal_of(request)
    security = portal.policies.security
    address = client_ip(request, portal.settings.trusted_proxy_hops)
    return ip_prefix(address, security.ip_prefix_v4, security.ip_prefix_v6)


def actor_for(request: Request[Any, Any, Any], actor: str) -> Actor:
    return Actor(
        actor=actor,
        ip_prefix=client_prefix(request),
        user_agent_family=user_agent_family(request.headers.get("user-agent")),
        request_id=request_id_of(request),
    )


async def require_staff(request: Request[Any, Any, Any], *roles: str) -> StaffUser:
    """Return the signed-in staff member, or raise NotAuthenticated / Forbidden.

    The session and the account are checked on every request, so disabling an account or changing its
    role takes effect on the next request.
    """
    portal = portal_of(request)
    async with portal.transaction() as db:
        session = await load_session(db, kind="staff", raw_id=request.cookies.get(STAFF_COOKIE))
        user = await db.get(StaffUser, session.subject_id) if session else None

    if user is None or user.disabled_at is not None:
        raise NotAuthenticated(_("Sign in to continue."))
    if roles and user.role not in roles:
        raise Forbidden(_("Your role does not allow this page. Ask an administrator if you need access."))
    return user


async def require_token(request: Request[Any, Any, Any], *roles: str, scope: str | None = None) -> StaffUser:
    """Authenticate an API request by its bearer token; the token acts with its owner's role.

    Raises NotAuthenticated for a missing, unknown, expired or revoked token or a disabled owner, and
    Forbidden when the owner's role is not in ``roles`` or the token lacks ``scope``.
    """
    header = request.headers.get("authorization", "")
    scheme, _space, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated(_("Send an API token in the header 'Authorization: Bearer <token>'."))

    portal = portal_of(request)
    now = utcnow()
    async with portal.transaction() as db:
        row = await db.scalar(select(ApiToken).where(ApiToken.token_hash == sha256_hex(token.strip())))
        user = row.user if row else None

    if row is None or user is None or row.revoked_at is not None or _expired(row.expires_at, now):
        raise NotAuthenticated(
            _("The API token is invalid, expired or revoked. Ask an administrator for a new one.")
        )
    if user.disabled_at is not None:
        raise NotAuthenticated(_("The API token's owner is disabled. Ask an administrator for a new token."))
    if roles and user.role not in roles:
        raise Forbidden(
            _("The API token's role ({role}) does not allow this request.").format(role=user.role)
        )
    if scope is not None and scope not in row.scopes.split():
        raise Forbidden(
            _("The API token lacks the scope '{scope}'. Ask an administrator for a token with it.").format(
                scope=scope
            )
        )
    request.scope.setdefault("state", {})["token_id"] = str(row.id)
    return user


def _expired(expires_at: dt.datetime | None, now: dt.datetime) -> bool:
    return expires_at is not None and expires_at <= now


def token_actor(request: Request[Any, Any, Any]) -> Actor:
    return actor_for(request, f"token:{request.scope['state']['token_id']}")


JSON_MEDIA_TYPE = "application/json"
MULTIPART_MEDIA_TYPE = "multipart/form-data"


def require_media_type(request: Request[Any, Any, Any], expected: str, message: str) -> None:
    """Raise UnsupportedMediaType with ``message`` (its ``{sent}`` filled in) unless the body is ``expected``."""
    sent = request.headers.get("content-type", "")
    if sent.split(";", 1)[0].strip().lower() != expected:
        raise UnsupportedMediaType(message.format(sent=sent[:80] or _("no Content-Type header")))


async def json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Return the request's JSON object body, or raise an error that explains how to send one.

    The body is parsed only when its Content-Type is application/json, so a form or text body sent by
    mistake gets an error that names the header to fix instead of a parse error about its contents.
    """
    require_media_type(
        request,
        JSON_MEDIA_TYPE,
        _("Send the body as JSON with the header Content-Type: application/json (this request had {sent})."),
    )
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(_("The request body is not valid JSON. Send a JSON object.")) from None
    if not isinstance(body, dict):
        raise InvalidInput(_("The request body must be a JSON object."))
    return body
