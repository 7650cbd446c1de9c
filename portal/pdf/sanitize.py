"""Removal of active content by a walk over every object of a PDF.

pikepdf normalises names when it parses them, so an obfuscated ``/J#61vaScript`` arrives here as
``/JavaScript``. The walk edits objects in place. Leftovers that lose their last reference (such as the
embedded file streams themselves) are dropped on save, because qpdf writes only reachable objects.

Most objects hold nothing of interest, and visiting every dictionary from Python took about 0.2 s for the
4,000 objects of a 2,000-page report. So the walk first reads each object's serialised form from qpdf
(``unparse``, with normalised names and nested direct objects) and visits only objects in which
``_ACTIVE_HINT`` finds a key or value that some check below acts on. The pattern matches more than the
checks need (a key name inside a string, say), never less.
"""

import re
from collections.abc import Iterator

import pikepdf

from portal.i18n import N_
from portal.pdf.errors import PdfRejected

# Action types that run code, reach the network or the file system, or play media. The names are stored
# with the document in English and translated when a page shows them.
ACTION_KINDS = {
    "/JavaScript": N_("JavaScript"),
    "/Launch": N_("launch actions"),
    "/URI": N_("web links"),
    "/SubmitForm": N_("form submission"),
    "/ImportData": N_("data import actions"),
    "/GoToR": N_("links to other files"),
    "/GoToE": N_("links to embedded files"),
    "/RichMediaExecute": N_("multimedia"),
    "/Rendition": N_("multimedia"),
    "/Sound": N_("multimedia"),
    "/Movie": N_("multimedia"),
    "/GoTo3DView": N_("multimedia"),
}
ANNOTATION_KINDS = {
    "/FileAttachment": N_("embedded files"),
    "/RichMedia": N_("multimedia"),
    "/Movie": N_("multimedia"),
    "/Sound": N_("multimedia"),
    "/Screen": N_("multimedia"),
    "/3D": N_("multimedia"),
}
_ACTION_KEYS = ("/A", "/PA", "/Next")

# A name ends at white space, a delimiter or the end of the text (ISO 32000-2, 7.2.3).
_NAME_END = rb"(?![^\x00\t\n\x0c\r ()<>\[\]{}/%])"
# A value may be an indirect reference, which the serialised form does not resolve.
_REFERENCE = rb"\d+ \d+ R"


def _value_pattern(key: bytes, names: list[str]) -> bytes:
    alternatives = b"|".join(re.escape(name[1:].encode()) for name in names)
    return key + rb"\s*(?:/(?:" + alternatives + rb")" + _NAME_END + rb"|" + _REFERENCE + rb")"


_ACTIVE_HINT = re.compile(
    rb"/(?:AA|A|PA|Next|JS|EF|RichMediaContent|XFA|OpenAction|Annots|Metadata|PieceInfo)"
    + _NAME_END
    + rb"|"
    + _value_pattern(rb"/S", list(ACTION_KINDS))
    + rb"|"
    + _value_pattern(rb"/Subtype", list(ANNOTATION_KINDS))
    + rb"|"
    + _value_pattern(rb"/Type", ["/EmbeddedFile"])
)
_SIGNATURE_HINT = re.compile(_value_pattern(rb"/FT", ["/Sig"]))


class Hints:
    """The objects whose serialised form matches a hint pattern, gathered during one walk over all objects.

    ``check_budgets`` already serialises every object, so ``sanitize`` hands this collector to it
    and the removal below need not serialise the document a second time.
    """

    def __init__(self) -> None:
        self.active: list[pikepdf.Object] = []
        self.signatures: list[pikepdf.Object] = []

    def visit(self, obj: pikepdf.Object, text: bytes) -> None:
        """Record ``obj`` if its serialised form ``text`` matches a hint."""
        if _ACTIVE_HINT.search(text):
            self.active.append(obj)
        if _SIGNATURE_HINT.search(text):
            self.signatures.append(obj)

    @classmethod
    def of(cls, pdf: pikepdf.Pdf) -> "Hints":
        """Walk every object of ``pdf`` and collect the hinted ones."""
        hints = cls()
        for obj, text in _serialised_objects(pdf):
            hints.visit(obj, text)
        return hints


def remove_active_content(pdf: pikepdf.Pdf, hints: Hints | None = None) -> tuple[list[str], bool]:
    """Remove scripts, actions, embedded files, XFA and metadata.

    Args:
        pdf: The document, edited in place.
        hints: The hinted objects of ``pdf``, when a walk over all its objects has already found them.

    Returns:
        The kinds of content removed, in order, and whether the document carried a digital signature
        (a filled /Sig field or /Perms), which the removal itself does not touch.

    Raises:
        PdfRejected: ``xfa_dynamic`` for a dynamic XFA form, whose pages only ask the reader to wait.
    """
    removed: list[str] = []
    signed = _signed_document(pdf)
    _reject_dynamic_xfa(pdf)
    _clean_document(pdf, removed)

    if hints is None:
        hints = Hints.of(pdf)
    signed = signed or any(_is_signature(obj) for obj in hints.signatures)
    for obj in hints.active:
        for dictionary in _dictionaries(obj):
            _clean_dictionary(dictionary, removed)

    return list(dict.fromkeys(removed)), signed


def find_active_content(pdf: pikepdf.Pdf, hints: Hints | None = None) -> list[str]:
    """List active content still present in ``pdf`` (empty when clean); used to verify saved files.

    Args:
        pdf: The document to check.
        hints: The objects that matched a hint before ``remove_active_content`` edited ``pdf``. The
            removal only deletes entries and array items, and empties dictionaries, so an object that
            matched no hint before matches none after, and checking the hinted ones again is enough.
            Without ``hints`` every object is serialised and checked.
    """
    found = find_document_level(pdf)
    if hints is None:
        hints = Hints.of(pdf)
    for obj in hints.active:
        for dictionary in _dictionaries(obj):
            found.extend(_active_in(dictionary))
    return found


def find_document_level(pdf: pikepdf.Pdf) -> list[str]:
    """List the active content that the catalog, its name tree and form, and the trailer refer to."""
    found: list[str] = []
    root = pdf.Root
    for key in ("/OpenAction", "/AA", "/Perms"):
        if key in root:
            found.append(f"catalog {key}")
    names = root.get("/Names")
    if isinstance(names, pikepdf.Dictionary):
        for key in ("/JavaScript", "/EmbeddedFiles"):
            if key in names:
                found.append(f"names {key}")
    form = root.get("/AcroForm")
    if isinstance(form, pikepdf.Dictionary) and "/XFA" in form:
        found.append("XFA form")
    if "/Info" in pdf.trailer:
        found.append("document information dictionary")
    return found


def _signed_document(pdf: pikepdf.Pdf) -> bool:
    if "/Perms" in pdf.Root:
        return True
    form = pdf.Root.get("/AcroForm")
    if not isinstance(form, pikepdf.Dictionary):
        return False
    flags = form.get("/SigFlags", 0)
    return isinstance(flags, int) and bool(int(flags) & 1)


def _is_signature(obj: pikepdf.Object) -> bool:
    return isinstance(obj, pikepdf.Dictionary) and obj.get("/FT") == pikepdf.Name.Sig and "/V" in obj


def _reject_dynamic_xfa(pdf: pikepdf.Pdf) -> None:
    form = pdf.Root.get("/AcroForm")
    if not isinstance(form, pikepdf.Dictionary) or "/XFA" not in form:
        return

    # A dynamic XFA form has no AcroForm fields to fall back on.
    # Its PDF pages only contain a "please wait" placeholder.
    needs_rendering = bool(pdf.Root.get("/NeedsRendering", False))
    fields = form.get("/Fields")
    has_fields = isinstance(fields, pikepdf.Array) and len(fields) > 0
    if needs_rendering or not has_fields:
        raise PdfRejected(
            "xfa_dynamic",
            "The PDF is a dynamic XFA form whose pages only show a placeholder outside Adobe Reader. "
            "Open it in Adobe Reader, print it to a new PDF, and upload that file.",
        )


def _clean_document(pdf: pikepdf.Pdf, removed: list[str]) -> None:
    root = pdf.Root

    if "/OpenAction" in root:
        del root["/OpenAction"]
        removed.append(N_("automatic actions"))
    if "/Perms" in root:
        del root["/Perms"]
    if "/Collection" in root:
        del root["/Collection"]
        removed.append(N_("embedded files"))
    if "/NeedsRendering" in root:
        del root["/NeedsRendering"]

    names = root.get("/Names")
    if isinstance(names, pikepdf.Dictionary):
        if "/JavaScript" in names:
            del names["/JavaScript"]
            removed.append(N_("JavaScript"))
        if "/EmbeddedFiles" in names:
            del names["/EmbeddedFiles"]
            removed.append(N_("embedded files"))

    form = root.get("/AcroForm")
    if isinstance(form, pikepdf.Dictionary) and "/XFA" in form:
        del form["/XFA"]
        removed.append(N_("XFA form"))

    # Titles, authors and subjects often name the patient.
    if "/Metadata" in root or "/Info" in pdf.trailer:
        removed.append(N_("document metadata"))
    if "/Metadata" in root:
        del root["/Metadata"]
    if "/Info" in pdf.trailer:
        del pdf.trailer["/Info"]


def _clean_dictionary(dictionary: pikepdf.Dictionary, removed: list[str]) -> None:
    if "/AA" in dictionary:
        del dictionary["/AA"]
        removed.append(N_("automatic actions"))

    for key in _ACTION_KEYS:
        value = dictionary.get(key)
        if value is None:
            continue
        kinds = _dangerous_actions(value)
        if kinds:
            del dictionary[key]
            removed.extend(kinds)

    # An action that is still reachable some other way is emptied in place.
    kind = ACTION_KINDS.get(str(dictionary.get("/S", "")))
    if kind is not None:
        for key in list(dictionary.keys()):
            del dictionary[key]
        removed.append(kind)

    if "/EF" in dictionary:
        del dictionary["/EF"]
        removed.append(N_("embedded files"))
    if "/RichMediaContent" in dictionary:
        del dictionary["/RichMediaContent"]
        removed.append(N_("multimedia"))
    if "/JS" in dictionary:
        del dictionary["/JS"]
        removed.append(N_("JavaScript"))
    for key in ("/Metadata", "/PieceInfo"):
        if key in dictionary:
            del dictionary[key]

    annotations = dictionary.get("/Annots")
    if isinstance(annotations, pikepdf.Array):
        _clean_annotations(annotations, removed)


def _clean_annotations(annotations: pikepdf.Array, removed: list[str]) -> None:
    kept = []
    for annotation in annotations:
        kind = None
        if isinstance(annotation, pikepdf.Dictionary):
            kind = ANNOTATION_KINDS.get(str(annotation.get("/Subtype", "")))
        if kind is None:
            kept.append(annotation)
        else:
            removed.append(kind)
    if len(kept) != len(annotations):
        annotations[:] = kept


def _dangerous_actions(value: pikepdf.Object) -> list[str]:
    """Return the kinds of dangerous actions in ``value`` (an action, or an array of them)."""
    actions = list(value) if isinstance(value, pikepdf.Array) else [value]
    kinds = []
    for action in actions:
        if isinstance(action, pikepdf.Dictionary):
            kind = ACTION_KINDS.get(str(action.get("/S", "")))
            if kind is not None:
                kinds.append(kind)
    return kinds


def _active_in(dictionary: pikepdf.Dictionary) -> list[str]:
    found = []
    for key in ("/AA", "/JS", "/EF", "/RichMediaContent", "/XFA", "/OpenAction"):
        if key in dictionary:
            found.append(key)
    action = str(dictionary.get("/S", ""))
    if action in ACTION_KINDS:
        found.append(f"action {action}")
    subtype = str(dictionary.get("/Subtype", ""))
    if subtype in ANNOTATION_KINDS and dictionary.get("/Type", pikepdf.Name.Annot) == pikepdf.Name.Annot:
        found.append(f"annotation {subtype}")
    if dictionary.get("/Type") == pikepdf.Name.EmbeddedFile:
        found.append("embedded file stream")
    return found


def _serialised_objects(pdf: pikepdf.Pdf) -> Iterator[tuple[pikepdf.Object, bytes]]:
    """Yield each array, dictionary and stream with its serialised form (for a stream, its dictionary's)."""
    for obj in pdf.objects:
        top = obj.stream_dict if isinstance(obj, pikepdf.Stream) else obj
        if isinstance(top, (pikepdf.Dictionary, pikepdf.Array)):
            yield obj, top.unparse(resolved=True)


def _dictionaries(root: pikepdf.Object) -> Iterator[pikepdf.Dictionary]:
    """Yield ``root`` (or its stream dictionary) and every direct dictionary nested inside it."""
    start = root.stream_dict if isinstance(root, pikepdf.Stream) else root
    stack = [start]
    while stack:
        obj = stack.pop()
        if isinstance(obj, pikepdf.Dictionary):
            yield obj
            children = list(obj.values())
        elif isinstance(obj, pikepdf.Array):
            children = list(obj)
        else:
            continue
        for child in children:
            if isinstance(child, (pikepdf.Dictionary, pikepdf.Array)) and not child.is_indirect:
                stack.append(child)
