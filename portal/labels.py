"""Readable, translatable names for the codes that staff pages show: event types, outcomes, roles and the
names of an event's details.

The access log, its exports and the API keep the codes themselves. Pages show these names, and the DPO's
event table keeps each code in the cell's title and a data attribute.
"""

from __future__ import annotations

import json

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
    "code.failed": N_("Wrong code"),
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
    "staff.totp_enrolled": N_("Two-step sign-in set up"),
    "staff.role_changed": N_("Staff role changed"),
    "staff.disabled": N_("Staff account disabled"),
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
    """Return an event's details (canonical JSON) as (name, value) pairs, names in the request's language."""
    try:
        mapping = json.loads(details)
    except ValueError:
        return [("", details)]
    if not isinstance(mapping, dict):
        return [("", details)]
    items = []
    for key, value in mapping.items():
        name = gettext(DETAIL_LABELS[key]) if key in DETAIL_LABELS else key
        if isinstance(value, bool):
            text = gettext(N_("yes")) if value else gettext(N_("no"))
        else:
            text = "\u2013" if value is None else str(value)  # an en dash, as the pages show a missing value
        items.append((name, text))
    return items
