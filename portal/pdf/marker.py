"""The forensic marker of a copy: /ID[0] and the XMP DocumentID carry the same 16 bytes.

The trailer /ID strings are never encrypted (ISO 32000-2, 7.6.1), so ``read_marker`` finds the marker in
an encrypted copy without the password. qpdf keeps an existing /ID[0] when it saves and writes /ID into
the final trailer or cross-reference stream dictionary, which is where ``read_marker`` looks first.
"""

import re
import secrets
import uuid
from datetime import UTC, datetime

import pikepdf

MARKER_BYTES = 16
_STARTXREF = re.compile(rb"startxref\s+(\d+)")
_ID_ENTRY = re.compile(rb"/ID\s*\[\s*(<[0-9A-Fa-f\s]*>|\()")
_SEARCH_WINDOW = 1 << 16


def set_marker(pdf: pikepdf.Pdf, marker: bytes) -> None:
    """Write ``marker`` as /ID[0] and a fresh XMP packet naming it as DocumentID.

    qpdf recomputes /ID[1] on save, so ``randomise_instance_id`` replaces it in the saved bytes.
    """
    if len(marker) != MARKER_BYTES:
        raise ValueError(f"marker must be {MARKER_BYTES} bytes, got {len(marker)}")

    pdf.trailer.ID = pikepdf.Array([pikepdf.String(marker), pikepdf.String(secrets.token_bytes(16))])

    packet = _xmp_packet(uuid.UUID(bytes=marker), uuid.uuid4())
    metadata = pdf.make_stream(packet)
    metadata.Type = pikepdf.Name.Metadata
    metadata.Subtype = pikepdf.Name.XML
    pdf.Root.Metadata = metadata


def randomise_instance_id(data: bytes, marker: bytes) -> bytes:
    """Replace /ID[1] in a saved file with 16 fresh random bytes, keeping every byte offset.

    qpdf derives /ID[1] from the time and file contents, so two copies made in the same second share it.
    The trailer /ID is written as two hex strings and is not an input to revision 6 encryption keys, so an
    in-place replacement of equal length leaves the file valid. qpdf writes the trailer (or the
    cross-reference stream) after the last ``startxref`` offset, so the search starts there.
    """
    pattern = re.compile(
        rb"/ID\s*\[\s*<" + marker.hex().encode() + rb">\s*<([0-9a-fA-F]{32})>", re.IGNORECASE
    )
    found = list(pattern.finditer(data, _last_xref_offset(data)))
    if not found:
        found = list(pattern.finditer(data))
    if not found:
        raise ValueError("the saved file has no /ID entry carrying the marker")

    output = bytearray(data)
    for match in found:
        output[match.start(1) : match.end(1)] = secrets.token_bytes(16).hex().encode("ascii")
    return bytes(output)


def _last_xref_offset(data: bytes) -> int:
    matches = list(_STARTXREF.finditer(data[-4096:]))
    if not matches:
        return 0
    offset = int(matches[-1].group(1))
    return offset if 0 <= offset < len(data) else 0


def read_marker(data: bytes) -> bytes | None:
    """Return /ID[0] of the last trailer of ``data`` if it is 16 bytes long, else ``None``.

    Only the unencrypted trailer (or cross-reference stream dictionary) is read, so no password is needed.
    """
    matches = list(_STARTXREF.finditer(data[-4096:]))
    candidates: list[bytes] = []
    if matches:
        offset = int(matches[-1].group(1))
        if 0 <= offset < len(data):
            candidates.append(data[offset : offset + _SEARCH_WINDOW])
    # Without a usable startxref, the last /ID entry in the file is the newest trailer's.
    candidates.append(data)

    for window in candidates:
        found = list(_ID_ENTRY.finditer(window))
        for match in reversed(found) if window is data else found:
            value = _parse_string(window, match.start(1))
            if value is not None and len(value) == MARKER_BYTES:
                return value
    return None


def _parse_string(data: bytes, start: int) -> bytes | None:
    if data[start : start + 1] == b"<":
        end = data.find(b">", start)
        digits = re.sub(rb"\s", b"", data[start + 1 : end])
        if len(digits) % 2:
            digits += b"0"
        try:
            return bytes.fromhex(digits.decode("ascii"))
        except ValueError:
            return None
    return _parse_literal(data, start)


def _parse_literal(data: bytes, start: int) -> bytes | None:
    """Decode a PDF literal string starting at ``(`` (escapes and balanced parentheses)."""
    output = bytearray()
    depth = 0
    index = start
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}

    while index < len(data) and len(output) <= 64:
        byte = data[index]
        if byte == ord("\\"):
            index += 1
            following = data[index] if index < len(data) else 0
            if following in escapes:
                output.append(escapes[following])
            elif ord("0") <= following <= ord("7"):
                digits = data[index : index + 3]
                count = 1
                while count < len(digits) and ord("0") <= digits[count] <= ord("7"):
                    count += 1
                output.append(int(digits[:count], 8) & 0xFF)
                index += count - 1
            elif following in (10, 13):
                if following == 13 and data[index + 1 : index + 2] == b"\n":
                    index += 1
            else:
                output.append(following)
        elif byte == ord("("):
            if depth:
                output.append(byte)
            depth += 1
        elif byte == ord(")"):
            depth -= 1
            if depth == 0:
                return bytes(output)
            output.append(byte)
        else:
            output.append(byte)
        index += 1
    return None


def _xmp_packet(document_id: uuid.UUID, instance_id: uuid.UUID) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/">\n'
        f"   <xmpMM:DocumentID>uuid:{document_id}</xmpMM:DocumentID>\n"
        f"   <xmpMM:InstanceID>uuid:{instance_id}</xmpMM:InstanceID>\n"
        f"   <xmp:MetadataDate>{now}</xmp:MetadataDate>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()
