"""Expected failures, each with a stable code, an HTTP status and a message that says what to do.

Handlers raise these; ``portal.app`` maps them to an HTML page or a JSON body
``{"error": {"code", "message", "field", "request_id"}}`` in one place.
"""

from __future__ import annotations


class PortalError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class InvalidInput(PortalError):
    status_code = 400
    code = "invalid_input"


class UnprocessableInput(InvalidInput):
    """A field is well-formed JSON but its value is not in the form the API takes, such as a date."""

    status_code = 422


class NotFound(PortalError):
    status_code = 404
    code = "not_found"


class NotAuthenticated(PortalError):
    status_code = 401
    code = "not_authenticated"


class Forbidden(PortalError):
    status_code = 403
    code = "forbidden"


class UnsupportedMediaType(PortalError):
    status_code = 415
    code = "unsupported_media_type"


class UploadRejected(PortalError):
    status_code = 422
    code = "pdf_rejected"


class PayloadTooLarge(PortalError):
    status_code = 413
    code = "too_large"


class AccessDenied(PortalError):
    """A code could not be redeemed; recipients never learn which check failed."""

    status_code = 400
    code = "access_denied"


class CodeMistyped(PortalError):
    """The entered text fails the code's check character; no attempt was spent."""

    status_code = 400
    code = "code_mistyped"


class ShareUnavailable(PortalError):
    """The share behind a recipient session was revoked, expired or used up."""

    status_code = 410
    code = "share_unavailable"


class SecondFactorNeeded(PortalError):
    """The share asks for the recipient's date of birth and none was entered; nothing was spent."""

    status_code = 400
    code = "second_factor_needed"


class TooManyRequests(PortalError):
    status_code = 429
    code = "too_many_requests"
