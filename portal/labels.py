"""Readable, translatable names for the codes that staff pages show: event types, outcomes, roles, and the
names and fixed values of an event's details.

The access log, its exports and the API keep the codes themselves. Pages show these names, and the DPO's
event table keeps each code in the cell's title and a data attribute.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable

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

# Names of the fixed values that details other than roles and reasons store, by the detail's key.
STEP_LABELS = {
    "password": N_("password"),
    "second_factor": N_("second factor"),
    "totp_enrolment": N_("setting up two-step sign-in"),
}
# ``second_factor`` on a password sign-in: whether the account still has to enter its second factor.
SECOND_FACTOR_LABELS = {"none": N_("not set up"), "pending": N_("asked for next")}
METHOD_LABELS = {"totp": N_("authenticator app code"), "recovery_code": N_("recovery code")}
STAGE_LABELS = {"activated": N_("invitation accepted")}
FORMAT_LABELS = {"csv": "CSV", "jsonl": "JSON Lines", "bundle": N_("evidence bundle")}
VIA_LABELS = {
    "cli": N_("command line"),
    "reset_link": N_("reset link"),
    "self_service": N_("own password page"),
}
# Export filters that the log keeps only as "given", never as the text the DPO entered.
GIVEN_LABELS = {"given": N_("given")}

_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(\+00:00|Z)")

# The keys that events put in their details. Ids, numbers, hashes and times are shown as logged.
DETAIL_LABELS = {
    "reason": N_("reason"),
    "step": N_("step"),
    "method": N_("method"),
    "via": N_("via"),
    "format": N_("format"),
    "second_factor": N_("second factor"),
    "known_account": N_("known account"),
    "failed_attempts": N_("failed attempts"),
    "staff_id": N_("staff id"),
    "token_id": N_("token id"),
    "hold_id": N_("legal hold id"),
    "kek_id": N_("key id"),
    "invitation_id": N_("invitation"),
    "replaced": N_("earlier invitations ended"),
    "stage": N_("stage"),
    "role": N_("role"),
    "from": N_("previous role"),
    "to": N_("new role"),
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
    "totp_reset": N_("two-step sign-in reset"),
    "unreadable": N_("unreadable keys"),
    # The filters of an export (portal.audit.query.EventFilter.as_dict).
    "share_id": N_("share"),
    "share_reference": N_("share reference"),
    "event_type": N_("event type"),
    "ip_prefix": N_("IP prefix"),
    "since": N_("from"),
    "until": N_("until"),
    "patient_ref": N_("patient reference"),
    "recipient": N_("recipient"),
    # The counts of a scheduled purge (portal.retention.purge.PurgeReport).
    "shares_expired": N_("shares expired"),
    "copies_deleted": N_("copies deleted"),
    "documents_erased": N_("reports erased"),
    "documents_held": N_("reports kept on legal hold"),
    "orphan_blobs_deleted": N_("orphaned files deleted"),
    "orphan_blobs_unchecked": N_("orphaned files not checked"),
    "temporary_files_deleted": N_("temporary files deleted"),
    "sessions_deleted": N_("sessions deleted"),
    "session_ips_cleared": N_("session IP addresses cleared"),
    "throttle_counters_deleted": N_("throttle counters deleted"),
    "access_events_past_clock": N_("log events past their retention period"),
}

# Names of the reasons that the access log stores in the ``reason`` detail: refused codes and sign-ins,
# rejected uploads, erasures and interrupted downloads.
REASON_LABELS = {
    "wrong_code": N_("wrong code"),
    "unknown": N_("unknown code"),
    "locked": N_("share locked"),
    "revoked": N_("share revoked"),
    "expired": N_("share expired"),
    "used": N_("code used up"),
    "throttled_address": N_("too many attempts from this address"),
    "throttled_account": N_("too many failed attempts for this account"),
    "not_enrolled": N_("two-step sign-in not set up"),
    "replayed": N_("code already used"),
    "malformed_code": N_("malformed code"),
    "used_code": N_("recovery code already used"),
    "patient_request": N_("patient's request"),
    "uploaded_in_error": N_("uploaded in error"),
    "clinic_decision": N_("clinic's decision"),
    "retention": N_("retention period ended"),
    "document_erased": N_("report erased"),
    "integrity_check_failed": N_("stored copy failed its integrity check"),
    "empty": N_("empty file"),
    "not_pdf": N_("not a PDF"),
    "too_large": N_("file too large"),
    "too_many_pages": N_("too many pages"),
    "too_many_objects": N_("too many PDF objects"),
    "too_deep": N_("structure nested too deeply"),
    "image_too_large": N_("image too large"),
    "decoded_size_exceeded": N_("decoded content too large"),
    "password_required": N_("password-protected"),
    "unsupported_encryption": N_("unsupported encryption"),
    "damaged": N_("damaged"),
    "active_content": N_("active content"),
    "xfa_dynamic": N_("dynamic XFA form"),
    "page_not_found": N_("page not found"),
    "no_visible_area": N_("page without visible area"),
    "timeout": N_("processing timed out"),
    "memory_limit": N_("processing memory limit exceeded"),
    "internal_error": N_("processing failed"),
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


# The names of each detail's fixed values. A value missing here, such as a code a later version adds, is
# shown as logged.
VALUE_LABELS: dict[str, dict[str, str]] = {
    "reason": REASON_LABELS,
    "step": STEP_LABELS,
    "second_factor": SECOND_FACTOR_LABELS,
    "method": METHOD_LABELS,
    "stage": STAGE_LABELS,
    "format": FORMAT_LABELS,
    "via": VIA_LABELS,
    "role": ROLE_LABELS,
    "from": ROLE_LABELS,
    "to": ROLE_LABELS,
    "event_type": EVENT_LABELS,
    "patient_ref": GIVEN_LABELS,
    "recipient": GIVEN_LABELS,
}


def detail_items(details: str, profile_label: Callable[[str], str] | None = None) -> list[tuple[str, str]]:
    """Return an event's details (canonical JSON) as (name, value) pairs in the request's language.

    Names, fixed values and yes/no are translated, times shortened, and a ``profile`` goes through
    ``profile_label``. Ids, counts and hashes stay as logged.
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
        if key == "profile" and isinstance(value, str) and profile_label is not None:
            items.append((name, profile_label(value)))
        else:
            items.append((name, _detail_value(key, value)))
    return items


def _detail_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return gettext(N_("yes")) if value else gettext(N_("no"))
    if value is None:
        return "\u2013"  # an en dash, as the pages show a missing value
    names = VALUE_LABELS.get(key, {})
    if isinstance(value, str) and value in names:
        return gettext(names[value])
    if isinstance(value, str) and _ISO_TIME.fullmatch(value):
        # The DPO's pages show the log's times in UTC to the second.
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)
