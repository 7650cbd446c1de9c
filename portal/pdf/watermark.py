"""The per-recipient watermark, drawn into each page's own content stream.

Each page's original content is wrapped in ``q ... Q`` (``sanitize`` has already closed whatever ``q`` it
left open), and the watermark is appended after it: a diagonal line across the visible box and a footer
line, both upright as the page is displayed. Nothing is decoded or merged: streams are only prepended and
appended, so pages whose content pikepdf cannot decode keep their bytes. The text uses one embedded font
per copy.
"""

import math
from dataclasses import dataclass

import pikepdf

from portal.pdf.errors import PdfRejected
from portal.pdf.fonts import FontSubset
from portal.pdf.objects import entry

# A distinctive magenta that rendering tests look for; the alpha values keep the page readable.
COLOUR = (0.85, 0.05, 0.55)
DIAGONAL_ALPHA = 0.3
FOOTER_ALPHA = 0.8
MIN_FONT_POINTS = 6.0
FOOTER_POINTS = (7.0, 14.0)
_DEFAULT_MEDIA_BOX = (0.0, 0.0, 612.0, 792.0)
_MAX_TREE_DEPTH = 64


@dataclass(frozen=True)
class PageGeometry:
    """The visible box of a page in user space, its display rotation and its user unit."""

    box: tuple[float, float, float, float]
    rotate: int
    user_unit: float

    @property
    def display_size(self) -> tuple[float, float]:
        """Width and height of the page as displayed, in user-space units."""
        width = self.box[2] - self.box[0]
        height = self.box[3] - self.box[1]
        return (height, width) if self.rotate in (90, 270) else (width, height)

    def display_matrix(self) -> tuple[float, float, float, float, float, float]:
        """Return the ``cm`` matrix mapping display space (origin bottom left, upright) to user space.

        Viewers turn the page clockwise by /Rotate degrees, so each case undoes that turn and moves the
        display origin to the corner of the visible box that is shown bottom left.
        """
        x0, y0, x1, y1 = self.box
        if self.rotate == 90:
            return (0, 1, -1, 0, x1, y0)
        if self.rotate == 180:
            return (-1, 0, 0, -1, x1, y1)
        if self.rotate == 270:
            return (0, -1, 1, 0, x0, y1)
        return (1, 0, 0, 1, x0, y0)


@dataclass(frozen=True)
class WatermarkText:
    """The two lines of a watermark, already normalised for the font."""

    diagonal: str
    footer: str


@dataclass(frozen=True)
class PageResources:
    """Names under which the shared font and transparency states are added to each page."""

    font: pikepdf.Object
    diagonal_state: pikepdf.Object
    footer_state: pikepdf.Object


def inherited(page: pikepdf.Dictionary, key: str) -> pikepdf.Object | None:
    """Look ``key`` up on the page, then on its /Pages ancestors (bounded, loop-safe)."""
    # ``in`` before each lookup: see ``portal.pdf.objects``.
    node: pikepdf.Object | None = page
    seen = set()
    for _ in range(_MAX_TREE_DEPTH):
        if not isinstance(node, pikepdf.Dictionary):
            return None
        if key in node:
            return node[key]
        if "/Parent" not in node:
            return None
        if node.is_indirect:
            if node.objgen in seen:
                return None
            seen.add(node.objgen)
        node = node["/Parent"]
    return None


def page_geometry(
    page: pikepdf.Dictionary,
    page_number: int,
    ancestors: dict[tuple[tuple[int, int], str], pikepdf.Object | None] | None = None,
) -> PageGeometry:
    """Compute the visible box (CropBox ∩ MediaBox), rotation and user unit of a page.

    Args:
        page: The page dictionary.
        page_number: The 1-based page number, for messages.
        ancestors: A cache of values inherited from /Pages nodes, shared by the pages of one document.

    Raises:
        PdfRejected: ``no_visible_area`` when the boxes do not overlap.
    """
    media = _rectangle(_lookup(page, "/MediaBox", ancestors)) or _DEFAULT_MEDIA_BOX
    crop = _rectangle(_lookup(page, "/CropBox", ancestors)) or media
    box = (max(media[0], crop[0]), max(media[1], crop[1]), min(media[2], crop[2]), min(media[3], crop[3]))
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        raise PdfRejected(
            "no_visible_area",
            f"Page {page_number} has no visible area: its CropBox and MediaBox do not overlap. "
            "Save the file again from the program that made it, or remove that page, and upload it again.",
        )

    rotate = (round(_scalar(_lookup(page, "/Rotate", ancestors), 0.0) / 90) * 90) % 360
    user_unit = _scalar(page["/UserUnit"], 1.0) if "/UserUnit" in page else 1.0
    if not 0 < user_unit < 1e6:
        user_unit = 1.0
    return PageGeometry(box=box, rotate=rotate, user_unit=user_unit)


class GeometryCache:
    """Page geometries of one document, computed once per distinct set of box values.

    A page's geometry depends only on its own /MediaBox, /CropBox, /Rotate and /UserUnit entries and,
    for those it lacks, on its /Parent chain. The cache key contains the serialised form of each entry the
    page has (an indirect value serialises as its object number, which names one value) and the /Parent
    object number when any entry is missing, so equal keys give equal geometries. Pages of a 2,000-page
    report then cost one key lookup each instead of about ten pikepdf calls.
    """

    def __init__(self) -> None:
        self._geometries: dict[tuple[object, ...], PageGeometry] = {}
        self._ancestors: dict[tuple[tuple[int, int], str], pikepdf.Object | None] = {}

    def get(self, page: pikepdf.Dictionary, page_number: int) -> PageGeometry:
        """Return the page's geometry, computing it with ``page_geometry`` on the first page of its kind.

        Raises:
            PdfRejected: ``no_visible_area``, as ``page_geometry``.
        """
        present = page.keys()
        values = [_key_value(page[key]) if key in present else _MISSING for key in _GEOMETRY_KEYS]
        if _MISSING in values:
            parent = page["/Parent"] if "/Parent" in present else None
            if not isinstance(parent, pikepdf.Dictionary) or not parent.is_indirect:
                # A direct /Parent has no object number to name it by.
                return page_geometry(page, page_number, self._ancestors)
            values.append(parent.objgen)

        key = tuple(values)
        geometry = self._geometries.get(key)
        if geometry is None:
            geometry = page_geometry(page, page_number, self._ancestors)
            self._geometries[key] = geometry
        return geometry


_GEOMETRY_KEYS = ("/MediaBox", "/CropBox", "/Rotate", "/UserUnit")
_MISSING = object()


def _key_value(value: object) -> object:
    # pikepdf returns numbers, booleans and null as Python values, which are hashable as they are.
    # Values that compare equal (1, 1.0, True) also convert to the same float in ``page_geometry``.
    return value.unparse() if isinstance(value, pikepdf.Object) else value


def _lookup(
    page: pikepdf.Dictionary,
    key: str,
    ancestors: dict[tuple[tuple[int, int], str], pikepdf.Object | None] | None,
) -> pikepdf.Object | None:
    if key in page:
        return page[key]
    if ancestors is None or "/Parent" not in page:
        return inherited(page, key)

    parent = page["/Parent"]
    if not isinstance(parent, pikepdf.Dictionary) or not parent.is_indirect:
        return inherited(page, key)
    cache_key = (parent.objgen, key)
    if cache_key not in ancestors:
        ancestors[cache_key] = inherited(parent, key)
    return ancestors[cache_key]


class PageStamper:
    """Watermarks the pages of one copy, sharing every object that pages of one kind can share.

    Pages with equal geometry and resource names draw the same operators, which are laid out once. Each
    page still gets its own watermark stream at the end of its /Contents: a stream shared by all pages
    would let one deleted object remove the watermark from every page. A resources dictionary shared by
    several pages is extended once. A resources dictionary without /Font or /ExtGState gets
    one indirect dictionary, shared by all such pages, instead of a new dictionary per page.
    """

    def __init__(self, pdf: pikepdf.Pdf, text: WatermarkText, font: FontSubset, font_object: pikepdf.Object):
        self._pdf = pdf
        self._text = text
        self._font = font
        self._shared = shared_resources(pdf, font_object)
        self._opening = pdf.make_stream(b"q\n")
        self._font_group = pdf.make_indirect(pikepdf.Dictionary(WmFont=font_object))
        self._state_group = pdf.make_indirect(
            pikepdf.Dictionary(WmDiagonal=self._shared.diagonal_state, WmFooter=self._shared.footer_state)
        )
        self._geometries = GeometryCache()
        self._names: dict[tuple[int, int], tuple[str, str, str]] = {}
        self._operators: dict[tuple[PageGeometry, tuple[str, str, str]], bytes] = {}

    def stamp(self, page: pikepdf.Dictionary, page_number: int) -> None:
        """Add the watermark to one page.

        Raises:
            PdfRejected: ``no_visible_area`` when the page has no visible area.
        """
        geometry = self._geometries.get(page, page_number)
        names = self._add_resources(page)

        key = (geometry, names)
        operators = self._operators.get(key)
        if operators is None:
            operators = watermark_content(geometry, self._text, self._font, names)
            self._operators[key] = operators
        wrap_page(self._pdf, page, self._opening, operators)

    def _add_resources(self, page: pikepdf.Dictionary) -> tuple[str, str, str]:
        resources = entry(page, "/Resources")
        if not isinstance(resources, pikepdf.Dictionary):
            return add_resources(self._pdf, page, self._shared)

        # Every page that refers to this indirect dictionary gets what the first one added.
        shared = resources.is_indirect
        if shared and resources.objgen in self._names:
            return self._names[resources.objgen]

        if "/Font" in resources:
            font_name = _add_named(resources, "/Font", "/WmFont", self._shared.font)
        else:
            resources["/Font"] = self._font_group
            font_name = "/WmFont"
        if "/ExtGState" in resources:
            diagonal_name = _add_named(resources, "/ExtGState", "/WmDiagonal", self._shared.diagonal_state)
            footer_name = _add_named(resources, "/ExtGState", "/WmFooter", self._shared.footer_state)
        else:
            resources["/ExtGState"] = self._state_group
            diagonal_name, footer_name = "/WmDiagonal", "/WmFooter"

        names = (font_name, diagonal_name, footer_name)
        if shared:
            self._names[resources.objgen] = names
        return names


def add_resources(pdf: pikepdf.Pdf, page: pikepdf.Dictionary, shared: PageResources) -> tuple[str, str, str]:
    """Add the watermark font and graphics states to the page's resources; return their names.

    A page that inherits /Resources from its /Pages node gets its own copy first, because adding a
    /Resources entry to the page would otherwise hide the inherited one.
    """
    resources = entry(page, "/Resources")
    if not isinstance(resources, pikepdf.Dictionary):
        source = inherited(page, "/Resources")
        resources = pikepdf.Dictionary()
        if isinstance(source, pikepdf.Dictionary):
            for key, value in source.items():
                resources[key] = value
        page.Resources = resources

    font_name = _add_named(resources, "/Font", "/WmFont", shared.font)
    if "/ExtGState" not in resources:
        # Most pages have no graphics states of their own: one assignment adds both.
        resources["/ExtGState"] = pikepdf.Dictionary(
            WmDiagonal=shared.diagonal_state, WmFooter=shared.footer_state
        )
        return font_name, "/WmDiagonal", "/WmFooter"
    diagonal_name = _add_named(resources, "/ExtGState", "/WmDiagonal", shared.diagonal_state)
    footer_name = _add_named(resources, "/ExtGState", "/WmFooter", shared.footer_state)
    return font_name, diagonal_name, footer_name


def shared_resources(pdf: pikepdf.Pdf, font_object: pikepdf.Object) -> PageResources:
    """Create the transparency states once per copy; every page refers to the same objects."""
    diagonal = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.ExtGState, ca=DIAGONAL_ALPHA, CA=DIAGONAL_ALPHA)
    )
    footer = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.ExtGState, ca=FOOTER_ALPHA, CA=FOOTER_ALPHA)
    )
    return PageResources(font=font_object, diagonal_state=diagonal, footer_state=footer)


def watermark_content(
    geometry: PageGeometry, text: WatermarkText, font: FontSubset, names: tuple[str, str, str]
) -> bytes:
    """Build the content-stream operators that draw the diagonal line and the footer on one page."""
    font_name, diagonal_name, footer_name = names
    width, height = geometry.display_size
    point = 1 / geometry.user_unit
    red, green, blue = COLOUR

    diagonal_size, diagonal_origin, angle, diagonal_scale = _diagonal_layout(
        width, height, text.diagonal, font, point
    )
    footer_size, footer_origin, footer_scale = _footer_layout(width, height, text.footer, font, point)
    cosine, sine = math.cos(angle), math.sin(angle)

    lines = [
        "q",
        "{} {} {} {} {} {} cm".format(*(_number(value) for value in geometry.display_matrix())),
        f"{_number(red)} {_number(green)} {_number(blue)} rg 0 Tr",
        f"{diagonal_name} gs",
        f"BT {font_name} {_number(diagonal_size)} Tf {_number(diagonal_scale * 100)} Tz "
        f"{_number(cosine)} {_number(sine)} {_number(-sine)} {_number(cosine)} "
        f"{_number(diagonal_origin[0])} {_number(diagonal_origin[1])} Tm "
        f"<{font.encode(text.diagonal).hex()}> Tj ET",
        f"{footer_name} gs",
        f"BT {font_name} {_number(footer_size)} Tf {_number(footer_scale * 100)} Tz 1 0 0 1 "
        f"{_number(footer_origin[0])} {_number(footer_origin[1])} Tm "
        f"<{font.encode(text.footer).hex()}> Tj ET",
        "Q",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def wrap_page(pdf: pikepdf.Pdf, page: pikepdf.Dictionary, opening: pikepdf.Stream, watermark: bytes) -> None:
    """Wrap the page content in ``q ... Q`` and append the watermark in a new stream of the page's own.

    ``opening`` is one shared stream holding ``q``. The original content must close every ``q`` it opens
    (``sanitize`` stores it so), or the watermark would inherit its transform.
    """
    closing = pdf.make_stream(b"\nQ\n" + watermark)

    contents = entry(page, "/Contents")
    if isinstance(contents, pikepdf.Array):
        page["/Contents"] = pikepdf.Array([opening, *contents, closing])
    elif isinstance(contents, pikepdf.Stream):
        page["/Contents"] = pikepdf.Array([opening, contents, closing])
    else:
        page["/Contents"] = pikepdf.Array([opening, closing])


def _diagonal_layout(
    width: float, height: float, text: str, font: FontSubset, point: float
) -> tuple[float, tuple[float, float], float, float]:
    angle = math.atan2(height, width)
    cosine, sine = math.cos(angle), math.sin(angle)
    advance = font.width(text)
    glyph_height = (font.ascent - font.descent) / 1000

    # Largest size whose rotated bounding box fills at most 80 % of the box in each direction.
    size = min(
        0.8 * width / (advance * cosine + glyph_height * sine),
        0.8 * height / (advance * sine + glyph_height * cosine),
        96 * point,
    )

    # On very small pages the text keeps a readable height and is condensed (Tz) to fit instead.
    scale = 1.0
    if size < MIN_FONT_POINTS * point:
        size = MIN_FONT_POINTS * point
        scale = min(
            (0.8 * width / size - glyph_height * sine) / (advance * cosine),
            (0.8 * height / size - glyph_height * cosine) / (advance * sine),
        )
        scale = max(scale, 0.01)

    middle = (font.ascent + font.descent) / 2000 * size
    half = advance * scale * size / 2
    origin = (width / 2 - half * cosine + middle * sine, height / 2 - half * sine - middle * cosine)
    return size, origin, angle, scale


def _footer_layout(
    width: float, height: float, text: str, font: FontSubset, point: float
) -> tuple[float, tuple[float, float], float]:
    low, high = FOOTER_POINTS
    size = min(max(min(width, height) / 60, low * point), high * point)
    advance = font.width(text)
    scale = 1.0
    if advance * size > 0.94 * width:
        size = max(0.94 * width / advance, MIN_FONT_POINTS * point)
        scale = min(0.94 * width / (advance * size), 1.0)

    margin = max(-font.descent / 1000 * size + 0.01 * height, 0.35 * size)
    x = max((width - advance * scale * size) / 2, 0.0)
    return size, (x, margin), scale


def _add_named(resources: pikepdf.Dictionary, category: str, base: str, value: pikepdf.Object) -> str:
    group = entry(resources, category)
    if not isinstance(group, pikepdf.Dictionary):
        group = pikepdf.Dictionary()
        resources[category] = group

    name = base
    suffix = 0
    while name in group and group[name] != value:
        suffix += 1
        name = f"{base}{suffix}"
    group[name] = value
    return name


def _rectangle(value: pikepdf.Object | None) -> tuple[float, float, float, float] | None:
    if not isinstance(value, pikepdf.Array):
        return None

    # The serialised form converts four plain numbers in one call. Anything else (an indirect
    # element, a wrong count) takes the item-by-item path.
    parts = value.unparse().strip(b"[] ").split()
    try:
        if len(parts) != 4:
            raise ValueError("not four plain numbers")
        x0, y0, x1, y1 = (float(part) for part in parts)
    except ValueError:
        if len(value) != 4:
            return None
        try:
            x0, y0, x1, y1 = (float(item) for item in value)
        except (TypeError, ValueError):
            return None

    if not all(math.isfinite(item) for item in (x0, y0, x1, y1)):
        return None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _scalar(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
