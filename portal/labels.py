"""Readable, translatable names for the codes that staff pages show: event types, outcomes, roles and the
names of an event's details.

The access log, its exports and the API keep the codes themselves. Pages show these names, and the DPO's
event table keeps each code in the cell's title and a data attribute.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from portal.i18n import N_, gettext

EVENT_LABELS = {
    "document.uploaded": N_("Report uploaded"),
    "document.rejected": N_("Report rejected"),
    "document.erased": N_("Report erased"),
    "share.created": N_("Share created"),
    "share.revoked": N_("Share revoked"),
    "share.approved": N_("Share approved"),
    "share.expired": N_("Share expired"),
    "share.reissued": N_("New code issued"),
    "code.redeemed": N_("Code entered"),
    "code.failed": N_("Code refused"),
    "code.locked": N_("Code locked"),
    "access.viewed": N_("Page viewed"),
    "access.download.started": N_("Download started"),
    "access.download.completed": N_("Download completed"),
    "access.download.aborted": N_("Download interrupted"),
    "staff.login": N_("Staff sign-in"),
    "staff.login.failed": N_("Failed staff sign-in"),
    "staff.logout": N_("Staff sign-out"),
    "staff.created": N_("Staff account created"),
    "staff.invited": N_("Staff member invited"),
    "staff.invitation_withdrawn": N_("Staff invitation withdrawn"),
    "staff.password_reset_issued": N_("Password reset link created"),
    "staff.password_reset_withdrawn": N_("Password reset link withdrawn"),
    "staff.password_changed": N_("Staff password changed"),
    "staff.totp_enrolled": N_("Two-step sign-in set up"),
    "staff.role_changed": N_("Staff role changed"),
    "staff.disabled": N_("Staff account disabled"),
    "staff.enabled": N_("Staff account enabled"),
    "api_token.created": N_("API token created"),
    "api_token.revoked": N_("API token revoked"),
    "export.created": N_("Access log exported"),
    "policy.loaded": N_("Policies loaded"),
    "key.rotated": N_("Key rotated"),
    "key.retired": N_("Key retired"),
    "legal_hold.added": N_("Legal hold added"),
    "legal_hold.released": N_("Legal hold released"),
    "retention.purged": N_("Data purged on schedule"),
}

OUTCOME_LABELS = {"success": N_("Success"), "failure": N_("Failure")}

ROLE_LABELS = {
    "clinician": N_("Clinician"),
    "admin": N_("Administrator"),
    "dpo": N_("Data protection officer"),
}

_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)")

# The keys that events put in their details. The values stay as logged: codes, numbers and ids.
DETAIL_LABELS = {
    "reason": N_("reason"),
    "step": N_("step"),
    "method": N_("method"),
    "via": N_("via"),
    "format": N_("format"),
    "second_factor": N_("second factor"),
    "failed_attempts": N_("failed attempts"),
    "staff_id": N_("staff id"),
    "token_id": N_("token id"),
    "hold_id": N_("legal hold id"),
    "kek_id": N_("key id"),
    "role": N_("role"),
    "scopes": N_("scopes"),
    "expires_at": N_("expires"),
    "tokens_revoked": N_("tokens revoked"),
    "shares_revoked": N_("shares revoked"),
    "copies_shredded": N_("copies shredded"),
    "removed": N_("removed"),
    "size": N_("size"),
    "bytes": N_("bytes"),
    "pages": N_("pages"),
    "page": N_("page"),
    "details": N_("details"),
    "policy_sha256": N_("policy SHA-256"),
    "sha256": N_("SHA-256"),
    "profile": N_("recipient type"),
    "approval_required": N_("approval required"),
    "max_downloads": N_("downloads allowed"),
    "not_before": N_("code works from"),
    "expires": N_("expires"),
    "previous_kek_id": N_("previous key id"),
    "rewrapped": N_("keys rewrapped"),
    "invitation_id": N_("link id"),
    "replaced": N_("links replaced"),
    "totp_reset": N_("two-step sign-in reset"),
    "unreadable": N_("unreadable keys"),
}

# Names of the refusal reasons that the access log stores in the ``reason`` detail of codes and sign-ins.
REASON_LABELS = {
    "wrong_code": N_("wrong code"),
    "unknown": N_("unknown code"),
    "locked": N_("share locked"),
    "revoked": N_("share revoked"),
    "expired": N_("share expired"),
    "used": N_("code used up"),
    "awaiting_approval": N_("awaiting approval"),
    "not_yet_open": N_("before the start time"),
    "invalid_credentials": N_("wrong e-mail address or password"),
    "wrong_current_password": N_("wrong current password"),
}


def event_label(code: str) -> str:
    """Return the name of an event type in the request's language, or the code for an unknown type."""
    return gettext(EVENT_LABELS[code]) if code in EVENT_LABELS else code


def outcome_label(code: str) -> str:
    """Return the name of an event's outcome in the request's language."""
    return gettext(OUTCOME_LABELS[code]) if code in OUTCOME_LABELS else code


def role_label(code: str) -> str:
    """Return the name of a staff role in the request's language."""
    return gettext(ROLE_LABELS[code]) if code in ROLE_LABELS else code


def detail_items(details: str) -> list[tuple[str, str]]:
    """Return an event's details (canonical JSON) as (name, value) pairs in the request's language.

    Names, refusal reasons and yes/no are translated, and times shortened; other values stay as logged.
    """
    try:
        mapping = json.loads(details)
    except ValueError:
        return [("", details)]
    if not isinstance(mapping, dict):
        return [("", details)]
    items = []
    for key, value in mapping.items():
        name = gettext(DETAIL_LABELS[key]) if key in DETAIL_LABELS else key
        items.append((name, _detail_value(key, value)))
    return items


def _detail_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return gettext(N_("yes")) if value else gettext(N_("no"))
    if value is None:
        return "\u2013"  # an en dash, as the pages show a missing value
    if key == "reason" and isinstance(value, str) and value in REASON_LABELS:
        return gettext(REASON_LABELS[value])
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        # The DPO's pages show the log's times in UTC to the second.
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)
