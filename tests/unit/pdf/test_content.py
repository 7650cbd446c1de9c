"""The byte-level content check: open ``q`` counted outside strings, unclear content left to qpdf."""

import io

import pikepdf
import pytest

from portal.pdf import Budgets, buffers, content, sanitize
from tests.unit.pdf.conftest import corpus_file


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"q 1 0 0 1 0 0 cm BT /F1 9 Tf (a) Tj ET Q", 0),
        (b"q q 0.1 0 0 0.1 0 0 cm", 2),
        (b"Q Q q", 1),
        (b"q BT (q Q q) Tj ET", 1),
        (b"q BT (nested (q) q) Tj ET", 1),
        (b"q BT (escaped \\) q) Tj ET", 1),
        (b"q BT <0051> Tj ET /q gs", 1),
        (b"q /Span <</MCID 0>> BDC EMC", 1),
        (b"q [(A) 120 (B)] TJ Q", 0),
    ],
)
def test_scan_counts_open_saves(data: bytes, expected: int) -> None:
    assert content.scan(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"q BT [(unterminated array) Tj ET",
        b"q BT (unterminated string Tj ET",
        b"q % a comment that hides Q\n",
        b"q BI /W 1 /H 1 /BPC 8 /CS /G ID \x00 EI Q",
        b"q <</Unclosed 1 BDC",
    ],
)
def test_scan_defers_unclear_content(data: bytes) -> None:
    assert content.scan(data) is None


def test_unbalanced_page_stored_closed() -> None:
    stored = sanitize(corpus_file("unbalanced-q-leaves-ctm-scaled.pdf"), Budgets())

    # Its pages hold inline images, so qpdf's parser counts them.
    with pikepdf.open(io.BytesIO(stored.pdf)) as pdf:
        for number, page in enumerate(pdf.pages, start=1):
            assert content.saves_by_parsing(pdf, page, number) == 0


def test_memory_file_round_trip() -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(200, 300))
    data = buffers.save_bytes(pdf)

    with buffers.open_bytes(data) as reopened:
        assert len(reopened.pages) == 1
        assert [float(value) for value in reopened.pages[0].obj.MediaBox] == [0, 0, 200, 300]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"q BT (Q) Tj (q q) Tj ET", 1),
        (b"q BT (a) Tj ET Q q", 1),
        (b"BT (a) Tj (b) Tj ET Q", 0),
    ],
)
def test_scan_plain_strings(data: bytes, expected: int) -> None:
    assert content.scan(data) == expected


@pytest.mark.parametrize("data", [b"q BT (a) Tj ) (b Tj ET", b"q BT (a) Tj (b Tj ET", b"q ) (a) Tj ("])
def test_scan_defers_misordered_parentheses(data: bytes) -> None:
    assert content.scan(data) is None
