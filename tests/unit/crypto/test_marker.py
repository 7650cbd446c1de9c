"""Forensic markers: a share id encrypted as one AES-256 block."""

from __future__ import annotations

import uuid

import pytest

from portal.crypto.marker import decode_marker, encode_marker

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.mark.parametrize("share_id", [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)])
def test_marker_round_trip(share_id: uuid.UUID) -> None:
    marker = encode_marker(KEY, share_id)

    assert len(marker) == 16
    assert marker != share_id.bytes
    assert decode_marker(KEY, marker) == share_id


def test_marker_depends_on_key() -> None:
    share_id = uuid.uuid4()
    marker = encode_marker(KEY, share_id)

    assert encode_marker(OTHER_KEY, share_id) != marker
    assert decode_marker(OTHER_KEY, marker) != share_id


def test_marker_invalid_lengths() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        decode_marker(KEY, bytes(15))
    with pytest.raises(ValueError, match="32 bytes"):
        encode_marker(KEY[:16], uuid.uuid4())
