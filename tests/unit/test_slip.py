"""The slip's wording follows the share: redemptions allowed and the recipient's organisation."""

from __future__ import annotations

import datetime as dt
import io

import pikepdf
import pypdfium2
from fontTools.ttLib import TTFont

from portal.i18n import clinic_time_text, language_var, recipient_time_text
from portal.shares.slip import (
    copy_note,
    recipient_line,
    recipient_markup,
    slip_pdf,
    start_note,
    validity_note,
)


def test_validity_counts_redemptions() -> None:
    assert validity_note(uses=1, expires="2026-12-31 23:59 UTC") == (
        "The code works once and expires on 2026-12-31 23:59 UTC."
    )
    assert validity_note(uses=3, expires="2026-12-31 23:59 UTC") == (
        "The code works 3 times and expires on 2026-12-31 23:59 UTC."
    )


def test_expiry_in_clinic_time_zone() -> None:
    moment = dt.datetime(2026, 12, 31, 22, 59, tzinfo=dt.UTC)
    assert clinic_time_text(moment, "UTC") == "2026-12-31 22:59 UTC"
    assert clinic_time_text(moment, "Europe/Berlin") == "2026-12-31 23:59 CET"
    summer = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)
    assert clinic_time_text(summer, "Europe/Paris") == "2026-07-01 14:00 CEST"


def test_recipient_time_in_words() -> None:
    moment = dt.datetime(2026, 12, 31, 22, 59, tzinfo=dt.UTC)
    assert recipient_time_text(moment, "Europe/Berlin") == "31 December 2026 at 23:59 CET"
    for language, expected in (
        ("de", "31. Dezember 2026 um 23:59 Uhr CET"),
        ("fr", "31 décembre 2026 à 23:59 CET"),
    ):
        token = language_var.set(language)
        try:
            assert recipient_time_text(moment, "Europe/Berlin") == expected
        finally:
            language_var.reset(token)


def test_validity_translated() -> None:
    token = language_var.set("de")
    try:
        assert validity_note(uses=3, expires="2026-12-31 23:59 MEZ") == (
            "Der Code gilt 3-mal und läuft am 2026-12-31 23:59 MEZ ab."
        )
        assert validity_note(uses=1, expires="2026-12-31 23:59 MEZ") == (
            "Der Code gilt nur einmal und läuft am 2026-12-31 23:59 MEZ ab."
        )
    finally:
        language_var.reset(token)


def test_recipient_line_with_and_without_organisation() -> None:
    assert recipient_line("Zoë Łukasiewicz", None) == "For: Zoë Łukasiewicz"
    assert recipient_line("Dr Αλέξανδρος", "Riverside GP") == "For: Dr Αλέξανδρος, Riverside GP"


def riverside_slip(recipient: str) -> bytes:
    return slip_pdf(
        clinic="Riverside Dermatology",
        recipient=recipient,
        public_url="https://portal.example",
        printed_code="K7M29-QDX4H-TVB8N-RW3EA",
        validity=validity_note(uses=2, expires="2026-12-31 23:59 UTC"),
        needs_birth_date=False,
        copy_note="",
        reference="S-7K3M9Q",
        contact="+44 20 7946 0000",
    )


def test_pdf_slip_has_every_line() -> None:
    document = riverside_slip(recipient_line("Дмитрий", "Northside Insurance"))
    text = pypdfium2.PdfDocument(document)[0].get_textpage().get_text_range()
    for line in (
        "For: Дмитрий, Northside Insurance",
        "K7M29-QDX4H-TVB8N-RW3EA",
        "The code works 2 times and expires on 2026-12-31 23:59 UTC.",
        "Or scan the QR code with a phone camera",
    ):
        assert line in text


def test_pdf_slip_arabic_name_joined() -> None:
    document = riverside_slip(recipient_line("محمد العلي", None))
    with pikepdf.open(io.BytesIO(document)) as pdf:
        page = pdf.pages[0].obj
        program = page.Resources.Font.F1.DescendantFonts[0].FontDescriptor.FontFile2.read_bytes()
        content = page.Contents.read_bytes()
    font = TTFont(io.BytesIO(program))
    cmap = font.getBestCmap()
    # Joined forms, last letter first: the family name is drawn to the left of the given name.
    drawn = "For: \ufef2\ufee0\ufecc\ufedf\u0627 \ufeaa\ufee4\ufea4\ufee3"
    glyphs = b"".join(font.getGlyphID(cmap[ord(char)]).to_bytes(2, "big") for char in drawn)
    assert f"<{glyphs.hex()}> Tj".encode() in content


def test_copy_note_counts_downloads() -> None:
    assert copy_note(allows_download=True, password_is_code=False, downloads=1, uses=2) == (
        "You can download the report once."
    )
    assert copy_note(allows_download=True, password_is_code=False, downloads=1, uses=1) == (
        "You can read the report in the web browser and download it once, in the one session that the code "
        "opens. After you press Finish, or when the session times out, the code no longer opens the report."
    )
    assert copy_note(allows_download=True, password_is_code=True, downloads=3, uses=2) == (
        "You can download the report up to 3 times. "
        "The downloaded PDF opens with the same code, typed exactly as printed: capital letters and dashes. "
        "The code has no letter O, only the digit zero."
    )
    # A code that works once opens one session, so the downloads all belong to it.
    assert copy_note(allows_download=True, password_is_code=False, downloads=3, uses=1) == (
        "You can download the report up to 3 times in the one session that the code opens. After you press "
        "Finish, or when the session times out, the code no longer opens the report."
    )
    assert copy_note(allows_download=False, password_is_code=True, downloads=0) == (
        "You can read the report in the web browser. It cannot be downloaded."
    )


def test_pdf_slip_lines_stay_on_page() -> None:
    token = language_var.set("fr")
    try:
        note = copy_note(allows_download=True, password_is_code=True, downloads=3)
        document = slip_pdf(
            clinic="Centre de dermatologie de la Rive-Gauche",
            recipient=recipient_line(
                "Zoë Łukasiewicz", "Assurance mutuelle de Bretagne et des Pays de la Loire"
            ),
            public_url="https://portail-des-comptes-rendus.dermatologie-rive-gauche.example",
            printed_code="K7M29-QDX4H-TVB8N-RW3EA",
            validity=validity_note(uses=2, expires="2026-12-31 23:59"),
            needs_birth_date=True,
            copy_note=note,
            reference="S-7K3M9Q",
            contact="+33 1 23 45 67 89",
        )
    finally:
        language_var.reset(token)

    page = pypdfium2.PdfDocument(document)[0]
    textpage = page.get_textpage()
    right_edges = [textpage.get_charbox(index)[2] for index in range(textpage.count_chars())]
    assert max(right_edges) <= 595 - 56 + 1, "every character lies inside the right margin"
    text = textpage.get_text_range().replace("\r\n", " ").replace("\n", " ")
    assert "PDF" in text
    assert note.split()[-1] in text, "the copy note's last word is on the page"


def test_start_note_names_approval() -> None:
    start = dt.datetime(2026, 12, 24, 9, 0, tzinfo=dt.UTC)
    assert start_note(None, "UTC") == ""
    assert start_note(None, "UTC", awaiting_approval=True) == (
        "The code works once a second member of the clinic's staff has approved the share."
    )
    both = start_note(start, "UTC", awaiting_approval=True)
    assert both.startswith("The code works from 24 December 2026")
    assert both.endswith("has approved the share.")


def test_recipient_markup_isolates_names() -> None:
    line = recipient_markup("محمد العلي", "Praxis <Nord>")
    assert str(line) == "For: <bdi>محمد العلي</bdi>, <bdi>Praxis &lt;Nord&gt;</bdi>"
    assert str(recipient_markup("Ada & Co", None)) == "For: <bdi>Ada &amp; Co</bdi>"
