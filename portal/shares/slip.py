"""The handout slip: the code in large type, the portal address and a QR code.

The QR code encodes ``<portal>/access#code=<code>``. Browsers never send the fragment to the server, and
the page's script copies it into the form, so the code still travels only in a POST body.
"""

from __future__ import annotations

import datetime as dt
import io

import pikepdf
import segno
from markupsafe import Markup, escape

from portal.config import Settings
from portal.i18n import _, ngettext, recipient_time_text, using_language
from portal.models import Share
from portal.pdf import fonts

PAGE_WIDTH = 595.0
MARGIN = 56.0
LINE_SPACING = 1.8
WRAPPED_LINE_SPACING = 1.3


def copy_note(*, allows_download: bool, password_is_code: bool, downloads: int = 1, uses: int = 1) -> str:
    """Return the sentences on the copy: how often it can be downloaded and how it opens, or that it is view-only.

    A code that works once opens one session, and every download happens in it. The sentence states this,
    so that "up to 3 times" does not read as three sessions.
    """
    if not allows_download:
        return _("You can read the report in the web browser. It cannot be downloaded.")
    if uses == 1:
        count = ngettext(
            "You can read the report in the web browser and download it once, in the one session that the code "
            "opens. After you press Finish, or when the session times out, the code no longer opens the report.",
            "You can download the report up to {count} times in the one session that the code opens. After "
            "you press Finish, or when the session times out, the code no longer opens the report.",
            downloads,
        ).format(count=downloads)
    else:
        count = ngettext(
            "You can download the report once.", "You can download the report up to {count} times.", downloads
        ).format(count=downloads)
    if password_is_code:
        return (
            count
            + " "
            + _(
                "The downloaded PDF opens with the same code, typed exactly as printed: capital letters and dashes. "
                "The code has no letter O, only the digit zero."
            )
        )
    return count


def validity_note(*, uses: int, expires: str) -> str:
    """Return the sentence on how many times the code works and when it expires (``expires`` is formatted)."""
    return ngettext(
        "The code works once and expires on {date}.",
        "The code works {count} times and expires on {date}.",
        uses,
    ).format(count=uses, date=expires)


def start_note(not_before: dt.datetime | None, timezone: str, *, awaiting_approval: bool = False) -> str:
    """Return the sentences on when a code begins to work, or "" for a code that works now.

    A code starts later when the share has a start time, or when its profile needs a second staff member's
    approval that has not been given yet.
    """
    sentences = []
    if not_before is not None:
        sentences.append(
            _("The code works from {date}.").format(date=recipient_time_text(not_before, timezone))
        )
    if awaiting_approval:
        sentences.append(
            _("The code works once a second member of the clinic's staff has approved the share.")
        )
    return " ".join(sentences)


def recipient_line(name: str, organisation: str | None) -> str:
    """Return the slip's "For:" line, with the recipient's organisation where the share has one."""
    if organisation:
        return _("For: {name}, {organisation}").format(name=name, organisation=organisation)
    return _("For: {name}").format(name=name)


def recipient_markup(name: str, organisation: str | None) -> Markup:
    """Return the "For:" line for a page, the name and organisation each in ``<bdi>``.

    The isolation keeps a right-to-left name from pulling the comma or the organisation to its side.
    """
    line = escape(_("For: {name}, {organisation}") if organisation else _("For: {name}"))
    isolated = Markup("<bdi>{}</bdi>")
    return line.format(name=isolated.format(name), organisation=isolated.format(organisation or ""))


def access_link(public_url: str, printed_code: str) -> str:
    return f"{public_url}/access#code={printed_code}"


def qr_svg(link: str) -> str:
    """Return the QR code as inline SVG markup (allowed by the strict CSP, unlike data: images)."""
    return segno.make(link, error="m").svg_inline(scale=5, border=2, omitsize=True)


def slip_pdf(
    *,
    clinic: str,
    recipient: str,
    public_url: str,
    printed_code: str,
    validity: str,
    needs_birth_date: bool,
    copy_note: str,
    reference: str,
    contact: str,
    start: str = "",
) -> bytes:
    """Build a one-page A4 slip; text in embedded DejaVu Sans, the QR code drawn as filled squares."""
    lines = [
        (16, _("{clinic}: your report").format(clinic=clinic)),
        (12, recipient),
        (12, _("Open this address in a web browser:")),
        (13, f"{public_url}/access"),
        (12, _("and enter this access code:")),
        (22, printed_code),
        (11, copy_note),
        (11, _("You will also be asked for your date of birth.") if needs_birth_date else ""),
        (11, start),
        (11, validity),
        (10, _("Reference: {reference}").format(reference=reference)),
        (10, _("Questions: {contact}").format(contact=contact) if contact else ""),
    ]
    caption = _("Or scan the QR code with a phone camera: it opens the page with the code filled in.")
    font = fonts.subset_for(*(line for _size, line in lines), caption)

    pdf = pikepdf.new()
    font_object = fonts.embed(pdf, font)
    width = PAGE_WIDTH - 2 * MARGIN
    commands = [b"BT"]
    y = 780.0
    for size, line in lines:
        if not line:
            continue
        for number, (part_size, part) in enumerate(wrap(line, size, font, width)):
            y -= part_size * (WRAPPED_LINE_SPACING if number else LINE_SPACING)
            commands.append(_text_command(font, part_size, y, part))
    qr_bottom = y - 200
    y = qr_bottom - 5
    for number, (part_size, part) in enumerate(wrap(caption, 10, font, width)):
        y -= part_size * (WRAPPED_LINE_SPACING if number else LINE_SPACING)
        commands.append(_text_command(font, part_size, y, part))
    commands.append(b"ET")
    commands.append(_qr_commands(access_link(public_url, printed_code), x=MARGIN, y=qr_bottom, size=170))

    page = pikepdf.Dictionary(
        Type=pikepdf.Name.Page,
        MediaBox=[0, 0, 595, 842],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font_object)),
        Contents=pdf.make_stream(b"\n".join(commands)),
    )
    pdf.pages.append(pikepdf.Page(page))
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def wrap(text: str, size: float, font: fonts.FontSubset, width: float) -> list[tuple[float, str]]:
    """Break ``text`` at spaces into lines no wider than ``width`` points at ``size``, as (size, line) pairs.

    A single word wider than ``width`` (a long address) is set in a smaller size that fits instead.
    """
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and font.width(candidate) * size > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return [(min(size, width / max(font.width(line), 1e-6)), line) for line in lines]


def _text_command(font: fonts.FontSubset, size: float, y: float, text: str) -> bytes:
    return f"/F1 {size:.2f} Tf 1 0 0 1 {MARGIN:.0f} {y:.1f} Tm <{font.encode(text).hex()}> Tj".encode()


def _qr_commands(link: str, *, x: float, y: float, size: float) -> bytes:
    matrix = [list(row) for row in segno.make(link, error="m").matrix_iter(scale=1, border=2)]
    module = size / len(matrix)
    squares = []
    for row_index, row in enumerate(matrix):
        for column_index, dark in enumerate(row):
            if dark:
                left = x + column_index * module
                bottom = y + size - (row_index + 1) * module
                squares.append(f"{left:.2f} {bottom:.2f} {module:.2f} {module:.2f} re")
    return ("0 g\n" + "\n".join(squares) + "\nf").encode()


def slip_texts(share: Share, timezone: str) -> dict[str, str]:
    """Return the slip's sentences about ``share`` in the current language, for the page and the PDF."""
    return {
        "recipient": recipient_line(share.recipient_name, share.recipient_org),
        "copy_note": copy_note(
            allows_download=share.allow_download,
            password_is_code=share.copy_password_is_code,
            downloads=share.max_downloads,
            uses=share.max_redemptions,
        ),
        "validity": validity_note(
            uses=share.max_redemptions, expires=recipient_time_text(share.expires_at, timezone)
        ),
        "start_note": start_note(
            share.not_before,
            timezone,
            awaiting_approval=share.approval_required and share.approved_at is None,
        ),
    }


def share_slip_pdf(share: Share, printed_code: str, settings: Settings) -> bytes:
    """Build the slip of ``share`` in the recipient's language. CPU-bound: run it in a thread."""
    with using_language(share.language):
        texts = slip_texts(share, settings.timezone)
        return slip_pdf(
            clinic=settings.clinic_name,
            recipient=texts["recipient"],
            public_url=settings.public_url,
            printed_code=printed_code,
            validity=texts["validity"],
            needs_birth_date=share.second_factor_hash is not None,
            copy_note=texts["copy_note"],
            reference=share.reference,
            contact=settings.clinic_contact,
            start=texts["start_note"],
        )
