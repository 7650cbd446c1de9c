"""The watermark font: one prebuilt subset for European names, a subset of its own for other text."""

import pikepdf
import pytest

from portal.pdf import fonts


def test_european_names_share_subset() -> None:
    european = fonts.european_subset()

    for name in ("Zoë Łukasiewicz", "Αλέξανδρος Παπαδόπουλος", "Дмитрий Иванович", "Nguyễn Thị Ánh"):
        assert fonts.subset_for(name) is european


def test_other_script_own_subset() -> None:
    subset = fonts.subset_for("山田 花子")

    assert subset is not fonts.european_subset()
    # DejaVu Sans has no CJK glyphs, so these characters are drawn as the fallback.
    assert "山" not in subset.glyphs
    assert subset.encode("山") == subset.encode(fonts.FALLBACK)


def test_embed_into_each_document() -> None:
    european = fonts.european_subset()
    first, second = pikepdf.new(), pikepdf.new()

    font = fonts.embed(first, european)
    other = fonts.embed(second, european)

    assert font.is_indirect
    assert font.Subtype == pikepdf.Name.Type0
    assert font.DescendantFonts[0].FontDescriptor.FontFile2.read_bytes() == european.program
    assert other.is_indirect
    assert other.DescendantFonts[0].FontDescriptor.FontFile2.read_bytes() == european.program


# Arabic letters in the joined form each takes in "محمد العلي": initial, medial, final, and the alef
# that joins neither side, which DejaVu Sans draws from the letter itself.
MEEM_INITIAL, HAH_MEDIAL, MEEM_MEDIAL, DAL_FINAL = "\ufee3", "\ufea4", "\ufee4", "\ufeaa"
ALEF, LAM_INITIAL, AIN_MEDIAL, LAM_MEDIAL, YEH_FINAL = "\u0627", "\ufedf", "\ufecc", "\ufee0", "\ufef2"
# Drawn left to right, so each word's letters come last to first and the family name is on the left.
ARABIC_DRAWN = (
    YEH_FINAL
    + LAM_MEDIAL
    + AIN_MEDIAL
    + LAM_INITIAL
    + ALEF
    + " "
    + DAL_FINAL
    + MEEM_MEDIAL
    + HAH_MEDIAL
    + MEEM_INITIAL
)


def test_arabic_joined_and_right_to_left() -> None:
    assert fonts.visual("محمد العلي") == ARABIC_DRAWN


def test_hebrew_right_to_left() -> None:
    assert fonts.visual("מיכל כהן") == "ןהכ לכימ"


def test_right_to_left_name_in_mixed_line() -> None:
    # The date after the name keeps its order and place instead of joining the name's run.
    assert fonts.visual("Personal copy for מיכל כהן · 2026-12-05 · S-ABC") == (
        "Personal copy for ןהכ לכימ · 2026-12-05 · S-ABC"
    )
    assert fonts.visual("محمد العلي · 2026-12-05 · S-ABC") == f"{ARABIC_DRAWN} · 2026-12-05 · S-ABC"
    # Brackets around a right-to-left word face the same way once the word is drawn.
    assert fonts.visual("Anna (מיכל) Berg") == "Anna (לכימ) Berg"


@pytest.mark.parametrize(
    "text",
    ["Zoë Łukasiewicz", "Αλέξανδρος Παπαδόπουλος", "Дмитрий Иванович", "Nguyễn Thị Ánh", "O'Neil (Jr.)"],
)
def test_left_to_right_text_drawn_as_typed(text: str) -> None:
    assert fonts.visual(text) == text
    assert fonts.unprintable(text) == []
    european = fonts.european_subset()
    assert european.encode(text) == b"".join(european.glyphs[char][0].to_bytes(2, "big") for char in text)


def test_arabic_subset_maps_forms_back_to_letters() -> None:
    subset = fonts.subset_for("محمد العلي")

    assert {MEEM_INITIAL, YEH_FINAL} <= subset.glyphs.keys()
    cmap = fonts._to_unicode_cmap(subset).decode()
    # Text extraction yields the typed letters, not the presentation forms.
    assert f"<{subset.glyphs[MEEM_INITIAL][0]:04X}> <0645>" in cmap
    assert "<FE" not in cmap


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("李小龙", ["李", "小", "龙"]),
        ("Anna 🌻 Schmidt", ["🌻"]),
        ("Li 李 and 李", ["李"]),
        ("محمد العلي", []),
        ("מיכל כהן", []),
        ("پژمان", []),
    ],
)
def test_unprintable_characters(text: str, missing: list[str]) -> None:
    assert fonts.unprintable(text) == missing
