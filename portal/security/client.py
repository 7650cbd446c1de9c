"""Client address and user-agent family, reduced to what the access log may keep."""

from __future__ import annotations

import ipaddress

from litestar.connection import ASGIConnection


def client_ip(connection: ASGIConnection, trusted_proxy_hops: int) -> str | None:
    """Return the client's address, trusting ``X-Forwarded-For`` only through configured proxy hops.

    Each trusted proxy appends the address it received the request from, so with N trusted hops the client
    is the N-th entry from the right. Entries further left are client-controlled and never used.
    """
    peer = connection.client.host if connection.client else None
    if trusted_proxy_hops == 0:
        return peer

    forwarded = ",".join(connection.headers.getall("x-forwarded-for", []))
    hops = [part.strip() for part in forwarded.split(",") if part.strip()]
    if len(hops) < trusted_proxy_hops:
        return peer
    return hops[-trusted_proxy_hops]


def ip_prefix(address: str | None, v4_bits: int, v6_bits: int) -> str | None:
    """Reduce an address to its network prefix, e.g. 203.0.113.7 -> 203.0.113.0/24."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    # Masking the integer gives the same text as ``ip_network((ip, bits), strict=False)`` at half the CPU.
    bits = v4_bits if ip.version == 4 else v6_bits
    host_bits = ip.max_prefixlen - bits
    network = ipaddress.ip_address(int(ip) >> host_bits << host_bits)
    if network.version != ip.version:
        # 0.0.0.0/0 and other networks below 2**32 in IPv6: ip_address would read the integer as IPv4.
        network = ipaddress.IPv6Address(int(network))
    return f"{network}/{bits}"


def user_agent_family(user_agent: str | None) -> str | None:
    """Return a coarse browser family; the full string identifies people too well to keep."""
    if not user_agent:
        return None
    text = user_agent.lower()
    for marker, family in (
        ("edg/", "Edge"),
        ("firefox/", "Firefox"),
        ("chrome/", "Chrome"),
        ("chromium/", "Chrome"),
        ("safari/", "Safari"),
        ("curl/", "curl"),
        ("python-httpx", "httpx"),
        ("python-requests", "requests"),
    ):
        if marker in text:
            return family
    return "other"
