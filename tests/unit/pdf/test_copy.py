"""Copies made by the pipeline directly: markers, encryption strength, scripts and rendered watermarks."""

import io
import os
import uuid

import pikepdf
import pypdf
import pytest

from portal.pdf import Budgets, PdfRejected, prepare_copy, read_marker, render_page, sanitize
from portal.pdf.pipeline import _verify_copy
from portal.pdf.protect import WeakEncryptionError, build_encryption, check_encryption, save_encrypted
from portal.pdf.watermark import GeometryCache, page_geometry
from tests.unit.pdf import helpers
from tests.unit.pdf.conftest import corpus_file

BUDGETS = Budgets()
ROTATION_FILES = [
    "rotate-90-single-page.pdf",
    "rotate-mixed-90-180-270-six-pages.pdf",
    "inherited-rotate-page-overrides.pdf",
    "boxes-crop-bleed-trim-all-rotations.pdf",
    "mediabox-negative-origin-linearized.pdf",
    "cropbox-smaller-than-mediabox.pdf",
    "unbalanced-q-leaves-ctm-scaled.pdf",
]


@pytest.fixture(scope="module")
def stored() -> bytes:
    return sanitize(corpus_file("hybrid-xref-objstm.pdf"), BUDGETS).pdf


def xmp_document_id(copy: bytes, password: str | None) -> str:
    with pikepdf.open(io.BytesIO(copy), password=password or "") as pdf:
        return pdf.Root.Metadata.read_bytes().decode().split("<xmpMM:DocumentID>")[1].split("<")[0]


def trailer_id(copy: bytes, password: str | None) -> tuple[bytes, bytes]:
    with pikepdf.open(io.BytesIO(copy), password=password or "") as pdf:
        return bytes(pdf.trailer.ID[0]), bytes(pdf.trailer.ID[1])


def test_copies_differ(stored: bytes) -> None:
    first_marker, second_marker = os.urandom(16), os.urandom(16)
    first = prepare_copy(helpers.copy_request([stored], marker=first_marker), BUDGETS)
    second = prepare_copy(helpers.copy_request([stored], marker=second_marker), BUDGETS)

    assert first != second
    assert trailer_id(first, helpers.PASSWORD)[0] == first_marker
    assert trailer_id(second, helpers.PASSWORD)[0] == second_marker
    assert trailer_id(first, helpers.PASSWORD)[1] != trailer_id(second, helpers.PASSWORD)[1]
    assert xmp_document_id(first, helpers.PASSWORD) == f"uuid:{uuid.UUID(bytes=first_marker)}"
    assert xmp_document_id(first, helpers.PASSWORD) != xmp_document_id(second, helpers.PASSWORD)


def test_same_marker_different_instance(stored: bytes) -> None:
    marker = os.urandom(16)
    first = prepare_copy(helpers.copy_request([stored], marker=marker), BUDGETS)
    second = prepare_copy(helpers.copy_request([stored], marker=marker), BUDGETS)

    assert first != second
    assert trailer_id(first, helpers.PASSWORD)[1] != trailer_id(second, helpers.PASSWORD)[1]


@pytest.mark.parametrize("password", [helpers.PASSWORD, None])
def test_read_marker_without_password(stored: bytes, password: str | None) -> None:
    marker = os.urandom(16)
    copy = prepare_copy(helpers.copy_request([stored], password=password, marker=marker), BUDGETS)

    assert read_marker(copy) == marker


def test_read_marker_plain_file() -> None:
    assert read_marker(helpers.cyclic_page_tree()) is None


def test_permission_copy_opens_without_password(stored: bytes) -> None:
    copy = prepare_copy(helpers.copy_request([stored], password=None), BUDGETS)

    with pikepdf.open(io.BytesIO(copy)) as pdf:
        assert pdf.encryption.R == 6
        assert pdf.encryption.bits == 256
        assert not pdf.allow.extract
        assert pdf.allow.print_highres


def test_weak_encryption_refused() -> None:
    pdf = pikepdf.new()
    pdf.add_blank_page()

    for revision in (2, 3, 4):
        weak = pikepdf.Encryption(owner="o" * 64, user="", R=revision)
        with pytest.raises(WeakEncryptionError):
            check_encryption(weak)
        with pytest.raises(WeakEncryptionError):
            save_encrypted(pdf, weak)


def test_encryption_settings_r6() -> None:
    first = build_encryption("code", allow_print=False, allow_copy=False)
    second = build_encryption("code", allow_print=False, allow_copy=False)

    assert first.R == 6
    assert first.aes
    assert len(first.owner) == 64
    assert first.owner != second.owner
    assert not first.allow.print_highres


@pytest.mark.parametrize("name", ["Zoë Łukasiewicz", "Αλέξανδρος Παπαδόπουλος", "Дмитрий Иванович"])
def test_names_extract(stored: bytes, name: str) -> None:
    copy = prepare_copy(helpers.copy_request([stored], name=name), BUDGETS)

    pages = helpers.watermark_lines(copy, helpers.PASSWORD, name)
    assert len(pages) == 30
    assert all(len(lines) == 2 for lines in pages)


@pytest.mark.parametrize(
    ("name", "drawn"),
    [
        # Joined Arabic forms (initial, medial, final; the alef joins neither side), last letter first.
        ("محمد العلي", "\ufef2\ufee0\ufecc\ufedf\u0627 \ufeaa\ufee4\ufea4\ufee3"),
        ("מיכל כהן", "ןהכ לכימ"),
    ],
)
def test_right_to_left_names_drawn_in_display_order(stored: bytes, name: str, drawn: str) -> None:
    copy = prepare_copy(helpers.copy_request([stored], name=name), BUDGETS)

    assert helpers.drawn_as(copy, helpers.PASSWORD, f"{drawn} · 2025-03-14 · {helpers.REFERENCE}")
    footer = f"Personal copy for {drawn} · 2025-03-14 · {helpers.REFERENCE} · Do not forward"
    assert helpers.drawn_as(copy, helpers.PASSWORD, footer)
    reader = pypdf.PdfReader(io.BytesIO(copy))
    reader.decrypt(helpers.PASSWORD)
    extracted = reader.pages[0].extract_text()
    # The ToUnicode map gives back the typed letters, not the joined forms that were drawn.
    assert all(word in extracted for word in name.split())
    assert not any("\ufb1d" <= char <= "\ufeff" for char in extracted)


@pytest.mark.parametrize(
    "name", ["Zoë Łukasiewicz", "Αλέξανδρος Παπαδόπουλος", "Дмитрий Иванович", "Nguyễn Thị Ánh"]
)
def test_left_to_right_names_drawn_as_typed(stored: bytes, name: str) -> None:
    copy = prepare_copy(helpers.copy_request([stored], name=name), BUDGETS)

    assert helpers.drawn_as(copy, helpers.PASSWORD, f"{name} · 2025-03-14 · {helpers.REFERENCE}")
    footer = f"Personal copy for {name} · 2025-03-14 · {helpers.REFERENCE} · Do not forward"
    assert helpers.drawn_as(copy, helpers.PASSWORD, footer)


def test_documents_concatenated() -> None:
    first = sanitize(corpus_file("rotate-90-single-page.pdf"), BUDGETS).pdf
    second = sanitize(corpus_file("inherited-mediabox-resources.pdf"), BUDGETS).pdf

    copy = prepare_copy(helpers.copy_request([first, second]), BUDGETS)

    pages = helpers.watermark_lines(copy, helpers.PASSWORD, helpers.RECIPIENT)
    assert len(pages) == 4
    assert all(len(lines) == 2 for lines in pages)


def test_every_page_has_own_watermark_stream() -> None:
    # Three pages of one size: one shared stream would let a single deleted object strip them all.
    document = sanitize(corpus_file("inherited-mediabox-resources.pdf"), BUDGETS).pdf
    copy = prepare_copy(helpers.copy_request([document]), BUDGETS)

    with pikepdf.open(io.BytesIO(copy), password=helpers.PASSWORD) as pdf:
        last_streams = [page.obj["/Contents"][-1] for page in pdf.pages]
        assert len(last_streams) == 3
        assert len({stream.objgen for stream in last_streams}) == len(last_streams)
        assert all(b"Tj" in stream.read_bytes() for stream in last_streams)


def test_copy_rejects_damaged_input() -> None:
    with pytest.raises(PdfRejected) as caught:
        prepare_copy(helpers.copy_request([b"not a pdf"]), BUDGETS)
    assert caught.value.code == "not_pdf"


@pytest.mark.parametrize("name", ROTATION_FILES)
def test_rendered_watermark_inside(name: str) -> None:
    stored_pdf = sanitize(corpus_file(name), BUDGETS).pdf
    copy = prepare_copy(helpers.copy_request([stored_pdf]), BUDGETS)

    with pikepdf.open(io.BytesIO(stored_pdf)) as pdf:
        page_count = len(pdf.pages)
    for index in range(page_count):
        rendered = helpers.render(copy, helpers.PASSWORD, index)
        original = helpers.render(stored_pdf, None, index)
        width, height = rendered.size

        everything, footer = helpers.magenta_mask_bbox(rendered, original)

        assert everything is not None, f"page {index + 1}: no watermark pixels"
        left, top, right, bottom = everything
        assert left > 0, f"page {index + 1}: {everything}"
        assert top > 0, f"page {index + 1}: {everything}"
        assert right < width - 1, f"page {index + 1}: {everything}"
        assert bottom < height - 1, f"page {index + 1}: {everything}"
        # Upright footer: a wide band of watermark pixels along the bottom edge as displayed.
        assert footer is not None, f"page {index + 1}: no footer along the bottom"
        assert footer[2] - footer[0] > width * 0.3, f"page {index + 1}: footer {footer}"
        # The diagonal spans most of the page in both directions.
        assert right - left > width * 0.5, f"page {index + 1}: {everything}"
        assert bottom - top > height * 0.5, f"page {index + 1}: {everything}"


def test_render_page_png(stored: bytes) -> None:
    copy = prepare_copy(helpers.copy_request([stored]), BUDGETS)

    png = render_page(copy, helpers.PASSWORD, 0, max_width_px=300)

    assert png.startswith(b"\x89PNG")
    with pytest.raises(PdfRejected) as caught:
        render_page(copy, None, 0)
    assert caught.value.code == "password_required"
    with pytest.raises(PdfRejected) as caught:
        render_page(copy, helpers.PASSWORD, 99)
    assert caught.value.code == "page_not_found"


@pytest.mark.parametrize("name", ROTATION_FILES)
def test_geometry_cache_matches(name: str) -> None:
    with pikepdf.open(io.BytesIO(corpus_file(name)), inherit_page_attributes=False) as pdf:
        cache = GeometryCache()
        for number, page in enumerate(pdf.pages, start=1):
            assert cache.get(page.obj, number) == page_geometry(page.obj, number)


def test_verify_copy_refuses_copy_without_password(stored: bytes) -> None:
    with pikepdf.open(io.BytesIO(stored)) as pdf:
        open_copy = save_encrypted(pdf, build_encryption(None, allow_print=True, allow_copy=False))

    with pytest.raises((WeakEncryptionError, pikepdf.PasswordError)):
        _verify_copy(open_copy, helpers.PASSWORD)
    _verify_copy(open_copy, None)


def test_verify_copy_refuses_unencrypted(stored: bytes) -> None:
    with pytest.raises(WeakEncryptionError):
        _verify_copy(stored, None)
