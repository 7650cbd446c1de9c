"""Shortcuts on the code-redemption path return exactly what the library calls they replace return."""

from __future__ import annotations

import ipaddress
import random
import secrets

import pytest
from litestar.datastructures import Cookie

from portal.audit.recorder import clip_text
from portal.security.client import ip_prefix
from portal.security.sessions import COOKIE_FOR_KIND, session_cookie

ADDRESSES = [
    "203.0.113.7",
    "0.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "2001:db8:4:7::1",
    "::ffff:192.0.2.1",
    "fe80::1",
]
PREFIX_BITS = [(24, 48), (32, 64), (0, 0), (16, 56), (32, 128), (8, 1)]


def _network_text(address: str, v4_bits: int, v6_bits: int) -> str:
    ip = ipaddress.ip_address(address)
    bits = v4_bits if ip.version == 4 else v6_bits
    return str(ipaddress.ip_network((ip, bits), strict=False))


@pytest.mark.parametrize(("v4_bits", "v6_bits"), PREFIX_BITS)
def test_prefix_matches_ip_network(v4_bits: int, v6_bits: int) -> None:
    generator = random.Random(7)
    addresses = list(ADDRESSES)
    for _index in range(500):
        addresses.append(str(ipaddress.IPv4Address(generator.getrandbits(32))))
        # Shifted, so short addresses such as ::5 that print like IPv4 integers come up too.
        addresses.append(str(ipaddress.IPv6Address(generator.getrandbits(128) >> generator.randint(0, 128))))
    for address in addresses:
        assert ip_prefix(address, v4_bits, v6_bits) == _network_text(address, v4_bits, v6_bits), address


def test_prefix_of_invalid_address_is_none() -> None:
    assert ip_prefix("203.0.113.300", 24, 48) is None
    assert ip_prefix("", 24, 48) is None
    assert ip_prefix(None, 24, 48) is None


@pytest.mark.parametrize("kind", sorted(COOKIE_FOR_KIND))
def test_session_cookie_header_matches_litestar(kind: str) -> None:
    for _index in range(200):
        raw_id = secrets.token_urlsafe(32)
        expected = Cookie(
            key=COOKIE_FOR_KIND[kind], value=raw_id, path="/", secure=True, httponly=True, samesite="strict"
        )
        assert session_cookie(kind, raw_id).to_encoded_header() == expected.to_encoded_header()


def test_unusual_cookie_value_goes_through_litestar() -> None:
    header = session_cookie("recipient", 'a "quoted" value').to_encoded_header()[1]
    assert header.startswith(b'__Host-portal-access="a \\"quoted\\" value";')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("Zoë Łukasiewicz 😀", "Zoë Łukasiewicz 😀"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("pair \ud83d\ude00 written apart", "pair \ufffd\ufffd written apart"),
    ],
)
def test_clip_text_replaces_only_surrogates(text: str, expected: str) -> None:
    assert clip_text(text, 100) == expected
    assert clip_text(text, 5) == expected[:5]
