"""A subset of DejaVu Sans embedded as a Type0 font, so watermarks render any European script.

The subset is a CIDFontType2 with Identity-H encoding (two-byte glyph ids in the content stream) and a
ToUnicode CMap, so text extraction returns the recipient's name. Building a subset with fontTools takes
0.07 to 0.2 s of CPU time (2-core development machine), which a copy of a 200-page report cannot afford.
So one subset for the Latin, Greek and Cyrillic blocks (about 50 KiB compressed, about 0.2 s to build) is
built once per process and serves every text it covers. Other text gets a subset of its own characters,
cached per character set. Each copy gets its own font objects, shared by all its pages.

A content stream draws glyphs left to right in the order given, with no shaping. So every text passes
through ``visual`` before it is measured or encoded: Arabic letters take their joined forms (the
presentation forms that DejaVu Sans has) and right-to-left runs are put in display order by the Unicode
bidirectional algorithm. ``unprintable`` returns the characters of a text that the font cannot draw at all.
"""

import functools
import hashlib
import io
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from arabic_reshaper import ArabicReshaper
from arabic_reshaper.reshaper_config import config_for_true_type_font
from bidi import get_display
from bidi.mirror import MIRRORED
from fontTools import subset
from fontTools.ttLib import TTFont

FONT_PATH = Path(__file__).resolve().parent.parent / "fonts" / "DejaVuSans.ttf"
FALLBACK = "?"

# Basic Latin, Latin-1, Latin Extended-A and -B, Greek and Coptic, Cyrillic and its supplement, Latin
# Extended Additional (Vietnamese, Welsh), general punctuation and currency signs.
EUROPEAN_BLOCKS = (
    (0x0020, 0x007E),
    (0x00A0, 0x024F),
    (0x0370, 0x03FF),
    (0x0400, 0x052F),
    (0x1E00, 0x1EFF),
    (0x2010, 0x205E),
    (0x20A0, 0x20BF),
)


@dataclass(frozen=True)
class FontSubset:
    """A subset font program with the glyph id and advance width (1/1000 em) of each character."""

    program: bytes
    glyphs: dict[str, tuple[int, int]]
    tag: str
    ascent: int
    descent: int
    cap_height: int
    bbox: tuple[int, int, int, int]

    def encode(self, text: str) -> bytes:
        """Encode ``text`` (one line, in reading order) as big-endian glyph ids for an Identity-H ``Tj``."""
        return b"".join(
            self.glyphs.get(char, self.glyphs[FALLBACK])[0].to_bytes(2, "big") for char in visual(text)
        )

    def width(self, text: str) -> float:
        """Return the advance width of ``text`` in text-space units per point of font size."""
        return sum(self.glyphs.get(char, self.glyphs[FALLBACK])[1] for char in visual(text)) / 1000


def normalise(text: str) -> str:
    """Compose combining sequences (NFC) and replace control characters with spaces."""
    composed = unicodedata.normalize("NFC", text)
    return "".join(" " if unicodedata.category(char).startswith("C") else char for char in composed)


def subset_for(*texts: str) -> FontSubset:
    """Return a cached subset that covers every character that ``texts`` draw and DejaVu Sans has.

    Each text is one paragraph in reading order. A line break may end a run of right-to-left text early,
    which can turn a bracket the other way, so both forms of the ASCII brackets are included.
    """
    european = european_subset()
    characters = {char for text in texts for char in visual(text)}
    if characters <= european.glyphs.keys():
        return european
    return _build_subset("".join(sorted(characters | set(_BRACKETS) | {FALLBACK, " "})))


_BRACKETS = "()<>[]{}"
_ISOLATE_RIGHT_TO_LEFT = "\u2067"
_POP_ISOLATE = "\u2069"
# Marks that set or end a direction; they only steer the algorithm and have no glyph.
_DIRECTION_MARKS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Hebrew and Arabic presentation forms, which stand for the letters they are drawn from.
_PRESENTATION_FORMS = re.compile("[\ufb1d-\ufdff\ufe70-\ufeff]")


def _right_to_left(char: str) -> bool:
    return unicodedata.bidirectional(char) in ("R", "AL")


@functools.lru_cache(maxsize=4096)
def visual(text: str) -> str:
    """Return ``text`` (one line, in reading order) in the order and forms in which its glyphs are drawn.

    Text without right-to-left letters is returned as it is. Otherwise Arabic letters are replaced by the
    joined form each takes in its word, and the line is reordered for display in a left-to-right paragraph,
    as the portal's pages show it. Each run of right-to-left text is isolated first, so that a date or a
    reference after a name keeps its own order and place.
    """
    if not any(_right_to_left(char) for char in text):
        return text
    shaped = "".join(_drawable(char) for char in _reshaper().reshape(text))
    ordered = get_display(_isolate_right_to_left(shaped), base_dir="L")
    return _DIRECTION_MARKS.sub("", str(ordered))


def unprintable(text: str) -> list[str]:
    """Return the characters of ``text`` that the embedded font cannot draw, each once, in typed order.

    Coverage is decided on the glyphs that are drawn: ``text`` is normalised and shaped as a stamp would
    be, and a missing Arabic form is reported as the letter that was typed.
    """
    available = _font_characters()
    typed = normalise(text)
    missing: set[str] = set()
    for char in visual(typed):
        if ord(char) not in available:
            missing.update(text_of(char))
    found = [char for char in dict.fromkeys(typed) if char in missing]
    return found + sorted(missing - set(found))


def text_of(char: str) -> str:
    """Return the text a drawn character stands for: a presentation form stands for its letters."""
    return unicodedata.normalize("NFKC", char) if _PRESENTATION_FORMS.match(char) else char


def _isolate_right_to_left(text: str) -> str:
    """Wrap each run from a right-to-left letter to the last one before a left-to-right letter in RLI ... PDI.

    Digits and punctuation after the run stay outside it, so "محمد · 2026-12-05" keeps the date in
    left-to-right order after the name instead of joining the Arabic run. A run that contains one half of
    a bracket pair is widened to take in the other half. Brackets in a run are swapped for their mirror
    images here, because python-bidi's implementation reorders but does not mirror, and a run of
    right-to-left letters puts its brackets at a right-to-left level.
    """
    pieces = []
    position = 0
    for start, end in _right_to_left_runs(text):
        start, end = _with_whole_brackets(text, start, end, position)
        run = "".join(MIRRORED.get(char, char) for char in text[start:end])
        pieces += [text[position:start], _ISOLATE_RIGHT_TO_LEFT, run, _POP_ISOLATE]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _right_to_left_runs(text: str) -> list[tuple[int, int]]:
    runs = []
    start: int | None = None
    end = 0
    for index, char in enumerate(text):
        if _right_to_left(char):
            start = index if start is None else start
            end = index + 1
        elif start is not None and unicodedata.bidirectional(char) == "L":
            runs.append((start, end))
            start = None
    if start is not None:
        runs.append((start, end))
    return runs


_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _with_whole_brackets(text: str, start: int, end: int, floor: int) -> tuple[int, int]:
    """Widen ``text[start:end]`` to the partners of its unmatched brackets, not reaching below ``floor``."""
    opened: list[str] = []
    unmatched_closing = 0
    for char in text[start:end]:
        if char in _PAIRS:
            opened.append(_PAIRS[char])
        elif char in _PAIRS.values():
            if opened and opened[-1] == char:
                opened.pop()
            else:
                unmatched_closing += 1
    while opened and end < len(text) and unicodedata.bidirectional(text[end]) != "L":
        if text[end] == opened[-1]:
            opened.pop()
        end += 1
    while unmatched_closing and start > floor and unicodedata.bidirectional(text[start - 1]) != "L":
        start -= 1
        if text[start] in _PAIRS:
            unmatched_closing -= 1
    return start, end


def _drawable(char: str) -> str:
    """Fall back from a joined form that the font lacks to the letter itself, drawn unjoined."""
    if ord(char) in _font_characters():
        return char
    letter = text_of(char)
    if len(letter) == 1 and ord(letter) in _font_characters():
        return letter
    return char


@functools.cache
def _reshaper() -> ArabicReshaper:
    # The font decides which joined forms and ligatures exist; vowel marks are kept, not dropped.
    configuration = config_for_true_type_font(str(FONT_PATH))
    configuration["delete_harakat"] = False
    return ArabicReshaper(configuration=configuration)


@functools.cache
def _font_characters() -> frozenset[int]:
    """Return the code points that DejaVu Sans maps to a glyph, read once from its cmap."""
    return frozenset(TTFont(io.BytesIO(_font_bytes())).getBestCmap())


def preload() -> None:
    """Build the European subset and its font objects now, so that the first copy does not wait."""
    _template(european_subset())


@functools.cache
def european_subset() -> FontSubset:
    """Return the subset for the European blocks, built on first use and kept for the process."""
    characters = {chr(code) for first, last in EUROPEAN_BLOCKS for code in range(first, last + 1)}
    return _build_subset("".join(sorted(characters | {FALLBACK, " "})))


@functools.lru_cache(maxsize=65)
def _build_subset(characters: str) -> FontSubset:
    font = TTFont(io.BytesIO(_font_bytes()))
    available = font.getBestCmap()
    wanted = [ord(char) for char in characters if ord(char) in available]

    options = subset.Options()
    options.layout_features = []
    options.hinting = False
    options.notdef_outline = True
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6]
    options.drop_tables += ["FFTM"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted)
    subsetter.subset(font)

    cmap = font.getBestCmap()
    metrics = font["hmtx"]
    scale = 1000 / font["head"].unitsPerEm
    glyphs = {}
    for char in characters:
        name = cmap.get(ord(char))
        if name is not None:
            glyphs[char] = (font.getGlyphID(name), round(metrics[name][0] * scale))

    head = font["head"]
    hhea = font["hhea"]
    os2 = font["OS/2"]
    output = io.BytesIO()
    font.save(output)
    tag = "".join(chr(65 + byte % 26) for byte in hashlib.sha256(characters.encode()).digest()[:6])

    return FontSubset(
        program=output.getvalue(),
        glyphs=glyphs,
        tag=tag,
        ascent=round(hhea.ascent * scale),
        descent=round(hhea.descent * scale),
        cap_height=round(getattr(os2, "sCapHeight", 700) * scale),
        bbox=(
            round(head.xMin * scale),
            round(head.yMin * scale),
            round(head.xMax * scale),
            round(head.yMax * scale),
        ),
    )


@functools.lru_cache(maxsize=1)
def _font_bytes() -> bytes:
    return FONT_PATH.read_bytes()


def embed(pdf: pikepdf.Pdf, font: FontSubset) -> pikepdf.Object:
    """Add the Type0 font dictionary for ``font`` to ``pdf`` and return it as an indirect object.

    The objects are built once per subset in a template document and copied from there, so a copy pays
    for neither compressing the font program nor building its width array again.
    """
    return pdf.copy_foreign(_template(font))


def _template(font: FontSubset) -> pikepdf.Object:
    # Equal tags come from equal character sets, so the tag is the cache key.
    cached = _TEMPLATES.get(font.tag)
    if cached is None:
        if len(_TEMPLATES) >= MAX_TEMPLATES:
            oldest = next(iter(_TEMPLATES))
            _TEMPLATES.pop(oldest)[0].close()
        document = pikepdf.new()
        # The document stays open because copies read the font program from it until they are saved.
        cached = (document, _build_font_objects(document, font))
        _TEMPLATES[font.tag] = cached
    return cached[1]


MAX_TEMPLATES = 16
_TEMPLATES: dict[str, tuple[pikepdf.Pdf, pikepdf.Object]] = {}


def _build_font_objects(pdf: pikepdf.Pdf, font: FontSubset) -> pikepdf.Object:
    base_font = pikepdf.Name(f"/{font.tag}+DejaVuSans")
    program = pikepdf.Stream(pdf, zlib.compress(font.program, 9))
    program.Filter = pikepdf.Name.FlateDecode
    program.Length1 = len(font.program)

    descriptor = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.FontDescriptor,
            FontName=base_font,
            Flags=32,
            FontBBox=pikepdf.Array(list(font.bbox)),
            ItalicAngle=0,
            Ascent=font.ascent,
            Descent=font.descent,
            CapHeight=font.cap_height,
            StemV=80,
            FontFile2=program,
        )
    )

    # Consecutive glyph ids share one entry: ``first [w1 w2 ...]`` (ISO 32000-2, 9.7.4.3).
    widths = pikepdf.Array()
    for first, run in _width_runs(font):
        widths.append(first)
        widths.append(pikepdf.Array(run))

    descendant = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.CIDFontType2,
            BaseFont=base_font,
            CIDSystemInfo=pikepdf.Dictionary(
                Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
            ),
            FontDescriptor=descriptor,
            DW=1000,
            W=widths,
            CIDToGIDMap=pikepdf.Name.Identity,
        )
    )

    to_unicode = pikepdf.Stream(pdf, zlib.compress(_to_unicode_cmap(font), 9))
    to_unicode.Filter = pikepdf.Name.FlateDecode

    return pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type0,
            BaseFont=base_font,
            Encoding=pikepdf.Name("/Identity-H"),
            DescendantFonts=pikepdf.Array([descendant]),
            ToUnicode=to_unicode,
        )
    )


def _width_runs(font: FontSubset) -> list[tuple[int, list[int]]]:
    runs: list[tuple[int, list[int]]] = []
    for glyph_id, width in sorted(set(font.glyphs.values())):
        if runs and glyph_id == runs[-1][0] + len(runs[-1][1]):
            runs[-1][1].append(width)
        else:
            runs.append((glyph_id, [width]))
    return runs


def _to_unicode_cmap(font: FontSubset) -> bytes:
    # A joined Arabic form maps back to its letter, so extracted text contains the letters that were typed.
    pairs = sorted({glyph_id: text_of(char) for char, (glyph_id, _) in font.glyphs.items()}.items())
    lines = [
        "/CIDInit /ProcSet findresource begin",
        "12 dict begin",
        "begincmap",
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        "/CMapName /Adobe-Identity-UCS def",
        "/CMapType 2 def",
        "1 begincodespacerange",
        "<0000> <FFFF>",
        "endcodespacerange",
    ]
    # A bfchar block holds at most 100 entries.
    for start in range(0, len(pairs), 100):
        block = pairs[start : start + 100]
        lines.append(f"{len(block)} beginbfchar")
        for glyph_id, char in block:
            utf16 = char.encode("utf-16-be").hex().upper()
            lines.append(f"<{glyph_id:04X}> <{utf16}>")
        lines.append("endbfchar")
    lines += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    return "\n".join(lines).encode("ascii")
