"""The one exception type that PDF processing raises for files it rejects."""


class PdfRejected(Exception):
    """An expected rejection of a PDF, safe to show to the uploader.

    Attributes:
        code: Stable machine-readable reason, such as ``"not_pdf"`` or ``"password_required"``.
        message: An English sentence: what is wrong, on which value, and what to do.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["PdfRejected"], tuple[str, str]]:
        return (PdfRejected, (self.code, self.message))
