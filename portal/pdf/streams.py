"""Bounded size estimates for compressed PDF streams, computed without trusting pikepdf to decode.

pikepdf (libqpdf) has no limit on how far a stream inflates, so a 500 KB upload can expand to gigabytes.
The functions here count decoded bytes with a hard ceiling and stop as soon as the ceiling is passed. They
never hold more than one output chunk of a final filter in memory. Image codecs (DCT, JPX, CCITT, JBIG2)
are not decoded at all: their size is estimated from the dimensions in the dictionary or the JBIG2 header.
"""

import base64
import binascii
import re
import struct
import zlib

_CHUNK = 1 << 20
_IMAGE_FILTERS = frozenset({"/DCTDecode", "/DCT", "/JPXDecode", "/CCITTFaxDecode", "/CCF", "/JBIG2Decode"})
_WHITESPACE = re.compile(rb"[\x00\t\n\x0c\r ]+")


def inflate_length(data: bytes, limit: int, keep: bool = False) -> tuple[int, bytes]:
    """Count the bytes that zlib inflates from ``data``, stopping once ``limit`` is passed.

    Args:
        data: The compressed bytes.
        limit: The count at which inflating stops; a result above it means "over budget".
        keep: Whether to return the decoded bytes (for a filter chain that continues).

    Returns:
        The number of bytes produced (at most ``limit + 1`` plus one chunk) and, with ``keep``, the bytes.
        Corrupt data ends the count at the last good byte, as qpdf does when it recovers.
    """
    produced, kept, _ = _inflate(data, limit, limit if keep else -1)
    return produced, kept or b""


def inflate_content(data: bytes, limit: int, keep_limit: int) -> tuple[int, bytes | None]:
    """Count like ``inflate_length`` and also return the decoded bytes if they are complete and small.

    Returns:
        The number of bytes produced, and the decoded bytes when the data inflates without error to its
        end in at most ``keep_limit`` bytes (``None`` otherwise, so the caller decodes it another way).
    """
    produced, kept, clean = _inflate(data, limit, keep_limit)
    return produced, kept if clean else None


def _inflate(data: bytes, limit: int, keep_limit: int) -> tuple[int, bytes | None, bool]:
    """Inflate in chunks of at most 1 MiB; keep the output while it stays within ``keep_limit`` bytes."""
    inflater = zlib.decompressobj()
    produced = 0
    kept: list[bytes] | None = [] if keep_limit >= 0 else None
    pending = data
    failed = False

    while pending and produced <= limit:
        try:
            chunk = inflater.decompress(pending, _CHUNK)
        except zlib.error:
            failed = True
            break
        produced += len(chunk)
        if kept is not None and produced <= keep_limit:
            kept.append(chunk)
        else:
            kept = None
        pending = inflater.unconsumed_tail
        if not chunk and not pending:
            break

    clean = inflater.eof and not failed and produced <= limit
    return produced, None if kept is None else b"".join(kept), clean


def lzw_length(data: bytes, limit: int, early_change: int = 1) -> int:
    """Count the bytes that LZW decoding of ``data`` produces, stopping once ``limit`` is passed.

    Only the length of each dictionary entry is tracked, so counting needs no output buffer. LZW can
    expand by over 1000:1 (every code adds one byte to the longest string), which is why it is counted.
    """
    lengths = [1] * 258
    code_width = 9
    produced = 0
    previous = -1
    bit_buffer = 0
    bit_count = 0

    for byte in data:
        bit_buffer = (bit_buffer << 8) | byte
        bit_count += 8
        while bit_count >= code_width:
            bit_count -= code_width
            code = (bit_buffer >> bit_count) & ((1 << code_width) - 1)

            if code == 256:
                del lengths[258:]
                code_width = 9
                previous = -1
                continue
            if code == 257:
                return produced

            if code < len(lengths):
                entry = lengths[code]
            elif code == len(lengths) and previous >= 0:
                entry = lengths[previous] + 1
            else:
                return produced
            produced += entry
            if produced > limit:
                return produced

            if previous >= 0 and len(lengths) < 4096:
                lengths.append(lengths[previous] + 1)
            previous = code
            if len(lengths) + early_change >= (1 << code_width) and code_width < 12:
                code_width += 1

    return produced


def run_length_length(data: bytes, limit: int) -> int:
    """Count the bytes that RunLengthDecode produces, stopping once ``limit`` is passed."""
    produced = 0
    index = 0

    while index < len(data) and produced <= limit:
        length = data[index]
        if length == 128:
            break
        if length < 128:
            produced += length + 1
            index += length + 2
        else:
            produced += 257 - length
            index += 2

    return produced


def jbig2_dimensions(data: bytes) -> tuple[int, int] | None:
    """Read width and height from the page-information segment of an embedded JBIG2 stream.

    Embedded JBIG2 (ITU T.88 annex D.3) is a sequence of segment headers. The page-information segment
    (type 48) starts with the page width and height as 32-bit big-endian integers. A height of
    0xFFFFFFFF means "striped, height unknown" and is reported as the width, which still catches bombs.
    """
    offset = 0

    for _ in range(64):
        if offset + 6 > len(data):
            return None
        number = struct.unpack_from(">I", data, offset)[0]
        flags = data[offset + 4]
        segment_type = flags & 0x3F
        offset += 5

        referred = data[offset] >> 5
        if referred == 7:
            if offset + 4 > len(data):
                return None
            referred = struct.unpack_from(">I", data, offset)[0] & 0x1FFFFFFF
            offset += 4 + (referred + 8) // 8
        else:
            offset += 1
        reference_size = 4
        if number <= 65536:
            reference_size = 2
        if number <= 256:
            reference_size = 1
        offset += referred * reference_size
        offset += 4 if flags & 0x40 else 1

        if offset + 4 > len(data):
            return None
        data_length = struct.unpack_from(">I", data, offset)[0]
        offset += 4

        if segment_type == 48:
            if offset + 8 > len(data):
                return None
            width, height = struct.unpack_from(">II", data, offset)
            return width, width if height == 0xFFFFFFFF else height
        if data_length == 0xFFFFFFFF:
            return None
        offset += data_length

    return None


def decoded_length(raw: bytes, filters: list[str], parameters: list[dict[str, int]], limit: int) -> int:
    """Estimate the decoded size of a stream with a filter chain, stopping once ``limit`` is passed.

    The chain is followed while its filters are general-purpose. An image codec ends the chain: the caller
    adds an estimate from the image dimensions instead. Unknown filters end the chain with the size so far.
    """
    data = raw
    size = len(raw)

    for position, name in enumerate(filters):
        last = position == len(filters) - 1
        options = parameters[position] if position < len(parameters) else {}

        if name in ("/FlateDecode", "/Fl"):
            size, data = inflate_length(data, limit, keep=not last)
        elif name in ("/LZWDecode", "/LZW"):
            size = lzw_length(data, limit, options.get("/EarlyChange", 1))
            if not last:
                # NOTE: a chain that continues after LZW is estimated from the LZW output size only.
                return size
        elif name in ("/RunLengthDecode", "/RL"):
            size = run_length_length(data, limit)
            if not last:
                return size
        elif name in ("/ASCIIHexDecode", "/AHx"):
            data = _ascii_hex(data)
            size = len(data)
        elif name in ("/ASCII85Decode", "/A85"):
            data = _ascii85(data)
            size = len(data)
        else:
            # Image codecs, /Crypt and unknown filters: the caller estimates images from their dimensions.
            return size

        if size > limit:
            return size

    return size


def is_image_filter(name: str) -> bool:
    """Tell whether ``name`` is an image codec that this module does not decode."""
    return name in _IMAGE_FILTERS


def _ascii_hex(data: bytes) -> bytes:
    text = _WHITESPACE.sub(b"", data).split(b">", 1)[0]
    if len(text) % 2:
        text += b"0"
    try:
        return binascii.unhexlify(text)
    except binascii.Error:
        return b""


def _ascii85(data: bytes) -> bytes:
    text = _WHITESPACE.sub(b"", data).split(b"~>", 1)[0]
    if text.startswith(b"<~"):
        text = text[2:]
    try:
        return base64.a85decode(text)
    except ValueError:
        return b""
