"""Bounded decoded-size counting for Flate, LZW, RunLength and JBIG2 headers."""

import struct
import zlib

from portal.pdf import streams


def test_inflate_stops_at_limit() -> None:
    compressed = zlib.compress(b"\0" * 50 * 2**20)

    produced, _ = streams.inflate_length(compressed, limit=2**20)

    assert 2**20 < produced <= 3 * 2**20


def test_inflate_counts_exactly() -> None:
    assert streams.inflate_length(zlib.compress(b"x" * 12345), limit=10**9)[0] == 12345


def test_run_length_counts() -> None:
    # 3 literal bytes, then 100 repeats of one byte, then end of data.
    data = bytes([2]) + b"abc" + bytes([257 - 100]) + b"z" + bytes([128])

    assert streams.run_length_length(data, limit=10**9) == 103


def test_lzw_counts_clear_and_literals() -> None:
    # 9-bit codes: clear (256), 'A' (65), 'B' (66), new entry 258 ("AB"), end (257).
    codes = [256, 65, 66, 258, 257]
    bits = "".join(format(code, "09b") for code in codes)
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")

    assert streams.lzw_length(data, limit=10**9) == 4


def test_jbig2_page_dimensions() -> None:
    segment = struct.pack(">IBBBI", 0, 48, 0, 1, 19) + struct.pack(">II", 100_000, 90_000) + bytes(11)

    assert streams.jbig2_dimensions(segment) == (100_000, 90_000)
