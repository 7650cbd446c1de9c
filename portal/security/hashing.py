"""Password and access-code hashing with argon2id, run off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
# on a 2-core server, two hashes per core cost about 5 % more CPU each than one. The threads are the
# hashes' own: handing work to a ThreadPoolExecutor cost the event loop 34 microseconds against 57 through
# anyio's worker threads and limiter.
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
# Its threads start with the first hash, and they serve every event loop of the process.
_HASH_THREADS = ThreadPoolExecutor(max_workers=_HASH_SLOTS, thread_name_prefix="argon2")

_Result = TypeVar("_Result")


async def _in_hash_thread(function: Callable[..., _Result], *args: object) -> _Result:
    return await asyncio.get_running_loop().run_in_executor(_HASH_THREADS, function, *args)


def _dummy_hash(hasher: PasswordHasher) -> str:
    if id(hasher) not in _dummy_hashes:
        _dummy_hashes[id(hasher)] = hasher.hash("not a real secret")
    return _dummy_hashes[id(hasher)]


async def hash_secret(hasher: PasswordHasher, secret: str) -> str:
    return await _in_hash_thread(hasher.hash, secret)


def _verify(hasher: PasswordHasher, encoded: str, secret: str) -> bool:
    try:
        return hasher.verify(encoded, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_secret(hasher: PasswordHasher, encoded: str | None, secret: str) -> bool:
    """Check ``secret`` against ``encoded``; with ``encoded=None`` spend the same time and return False."""
    if encoded is None:
        await _in_hash_thread(_verify, hasher, _dummy_hash(hasher), secret)
        return False
    return await _in_hash_thread(_verify, hasher, encoded, secret)


def needs_rehash(hasher: PasswordHasher, encoded: str) -> bool:
    try:
        return hasher.check_needs_rehash(encoded)
    except InvalidHashError:
        return True


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
