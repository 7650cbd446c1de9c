"""The watermark font: one prebuilt subset for European names, a subset of its own for other text."""

import pikepdf

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
