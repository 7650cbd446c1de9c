"""Password and access-code hashing with argon2id, run off the event loop."""

from __future__ import annotations

import hashlib
import os

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from portal.config import ConfigError

# Staff passwords: argon2-cffi's defaults (64 MiB, t=3, p=4), the RFC 9106 second recommendation.
STAFF_PASSWORD_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, salt_len=16)

# Access codes carry 70 bits of randomness, so OWASP's minimum argon2id setting (19 MiB, t=2, p=1) is
# enough and keeps a verification near 30 ms.
CODE_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, salt_len=16)

# Hashes verified against when the account or locator is unknown, so unknown and wrong cost the same time.
_dummy_hashes: dict[int, str] = {}


# Hashing runs in threads because argon2 releases the GIL, so one process can use every core. The processes
# of one server together run at most one hash per core (``portal serve --workers N`` sets
# PORTAL_SERVER_PROCESSES), and further requests wait in FIFO order. With anyio's shared default of 40
# threads, a burst of attempts would hold 40 x 19 MiB per process and each hash would run slower. Measured
# on a 2-core server, two hashes per core cost about 5 % more CPU each than one.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _server_processes() -> int:
    """Return PORTAL_SERVER_PROCESSES, the number of portal processes on this host (1 when unset)."""
    value = os.environ.get("PORTAL_SERVER_PROCESSES", "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"PORTAL_SERVER_PROCESSES={value!r} is invalid. Set it to the number of portal processes on this "
            "host, a whole number of at least 1, or leave it unset for one process."
        )
    return int(value)


_HASH_SLOTS = max(1, _CORES // _server_processes())
_hash_limiter: RunVar[CapacityLimiter] = RunVar("argon2_hash_limiter")


def _limiter() -> CapacityLimiter:
    """Return this event loop's limiter, created on first use because a limiter belongs to one loop."""
    try:
        return _hash_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(_HASH_SLOTS)
        _hash_limiter.set(limiter)
        return limiter


def _dummy_hash(hasher: PasswordHasher) -> str:
    if id(hasher) not in _dummy_hashes:
        _dummy_hashes[id(hasher)] = hasher.hash("not a real secret")
    return _dummy_hashes[id(hasher)]


async def hash_secret(hasher: PasswordHasher, secret: str) -> str:
    return await anyio.to_thread.run_sync(hasher.hash, secret, limiter=_limiter())


def _verify(hasher: PasswordHasher, encoded: str, secret: str) -> bool:
    try:
        return hasher.verify(encoded, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_secret(hasher: PasswordHasher, encoded: str | None, secret: str) -> bool:
    """Check ``secret`` against ``encoded``; with ``encoded=None`` spend the same time and return False."""
    if encoded is None:
        await anyio.to_thread.run_sync(_verify, hasher, _dummy_hash(hasher), secret, limiter=_limiter())
        return False
    return await anyio.to_thread.run_sync(_verify, hasher, encoded, secret, limiter=_limiter())


def needs_rehash(hasher: PasswordHasher, encoded: str) -> bool:
    try:
        return hasher.check_needs_rehash(encoded)
    except InvalidHashError:
        return True


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
