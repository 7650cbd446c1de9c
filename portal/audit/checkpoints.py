"""Signed checkpoints of the running access log: make, store, copy off the host, repeat periodically.

`make_checkpoint` signs the Merkle root over every committed event with the key ring's Ed25519 key, as
a C2SP checkpoint (see `portal.audit.checkpoint`). It inserts the checkpoint into the insert-only
`checkpoint` table. When PORTAL_CHECKPOINT_DIR is set, it also writes it there as `checkpoint-<size>.txt`
for a backup job or a witness to copy off the host. Every checkpoint names the log with the origin stored in
`access_log_name` when the first one was signed (see `log_key`), whatever PORTAL_PUBLIC_URL is later.

Each process keeps the compact tree state (`IncrementalTree`) of the last size it signed, so a new
checkpoint reads only the events after it. A cold process rebuilds the state from the stored leaf hashes
and refuses to go on unless they reproduce the root of the latest stored checkpoint. Events that no
checkpoint covers yet are re-hashed from their row content before they are signed, so a row altered
before its first checkpoint is caught here and not signed.

What this module does not do: it does not prove that the database was never rolled back to an older
state. Only checkpoint copies kept elsewhere show that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal.audit.canonical import canonical_event_bytes
from portal.audit.checkpoint import Checkpoint, public_key_text, sign_checkpoint
from portal.audit.merkle import IncrementalTree, leaf_hash
from portal.audit.recorder import event_mapping
from portal.config import Settings
from portal.crypto.keyring import KeyRing
from portal.db import create_engine, create_sessionmaker
from portal.errors import PortalError
from portal.models import AccessEvent, AccessLogName, utcnow
from portal.models import Checkpoint as CheckpointRow
from portal.schema import require_latest_schema

log = logging.getLogger(__name__)

# Leaf hashes read per query while rebuilding the tree state; 32 bytes each.
LEAF_PAGE_SIZE = 50_000
# Rows re-hashed per query when new events are signed for the first time.
ROW_PAGE_SIZE = 2_000
# NOTE: a guess that balances the size of the unsigned tail against rows in the checkpoint table
# (52,560 a year at this interval).
DEFAULT_INTERVAL_MINUTES = 10
# The id of the one row of access_log_name.
LOG_NAME_ID = 1


class LogAccess(Protocol):
    """The part of `portal.core.Portal` that the access-log services use: settings, keys, transactions."""

    settings: Settings
    engine: AsyncEngine

    @property
    def keyring(self) -> Any: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]: ...


class CheckpointError(PortalError):
    """The log cannot be signed because stored rows, leaf hashes or checkpoints disagree.

    The message names the seq or tree size. It always means the database changed outside the portal
    or two portals with different keys share one database: investigate before signing again.
    """

    status_code = 500
    code = "access_log_altered"


@dataclass(frozen=True)
class LogKey:
    """The log's signing key with the names a verifier needs."""

    origin: str
    private_key: Ed25519PrivateKey

    @property
    def key_name(self) -> str:
        """The signed-note key name, equal to the origin as C2SP checkpoints recommend."""
        return self.origin

    @property
    def vkey(self) -> str:
        """The public key as one vkey line, for bundles and `portal audit verify --public-key`."""
        return public_key_text(self.private_key, self.key_name)


def log_origin(public_url: str) -> str:
    """Return the origin a new log is named with: `<host[:port]>/access-log` of the portal's address."""
    parts = urlsplit(public_url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port}/access-log" if parts.port else f"{host}/access-log"


async def log_name(portal: LogAccess) -> AccessLogName | None:
    """Return the log's stored name, or None before its first checkpoint."""
    async with portal.transaction() as db:
        return await db.get(AccessLogName, LOG_NAME_ID)


async def log_key(portal: LogAccess) -> LogKey:
    """Return the checkpoint signing key of this portal and the log's stored origin.

    A log without a name is named here after PORTAL_PUBLIC_URL. The name never changes after that, so
    processes with another public URL (a command in a shell without the server's settings, a new
    address) sign under the same name.
    """
    stored = await log_name(portal) or await _name_log(portal)
    return LogKey(origin=stored.origin, private_key=portal.keyring.checkpoint_signing_key())


async def _name_log(portal: LogAccess) -> AccessLogName:
    row = AccessLogName(
        id=LOG_NAME_ID, origin=log_origin(portal.settings.public_url), legacy_tree_size=0, created_at=utcnow()
    )
    if await _insert_once(portal, row):
        return row

    # Another process named the log first.
    stored = await log_name(portal)
    if stored is None:
        raise CheckpointError(
            "storing the access log's name failed, and access_log_name contains no other name"
        )
    return stored


class _TreeState:
    def __init__(self) -> None:
        self.tree: IncrementalTree | None = None
        self.lock = asyncio.Lock()


# One state per engine, so tests and tools that open several databases in one process never mix trees.
_STATES: weakref.WeakKeyDictionary[AsyncEngine, _TreeState] = weakref.WeakKeyDictionary()


def _state_for(engine: AsyncEngine) -> _TreeState:
    state = _STATES.get(engine)
    if state is None:
        state = _TreeState()
        _STATES[engine] = state
    return state


async def latest_checkpoint(portal: LogAccess) -> CheckpointRow | None:
    """Return the stored checkpoint with the largest tree size, or None before the first one."""
    async with portal.transaction() as db:
        return await db.scalar(select(CheckpointRow).order_by(CheckpointRow.tree_size.desc()).limit(1))


async def make_checkpoint(portal: LogAccess) -> CheckpointRow:
    """Sign, store and copy out a checkpoint over every committed event.

    Returns the existing latest checkpoint when no event was added since it.

    Raises:
        CheckpointError: stored leaf hashes do not reproduce a signed root, a new row does not match
            its leaf hash, or another process stored a different root for the same size.
    """
    state = _state_for(portal.engine)
    async with state.lock:
        latest = await latest_checkpoint(portal)
        if state.tree is None:
            state.tree = await _rebuild(portal, latest)

        # Work on a copy, so a failure part-way leaves the cached state at the last good size.
        tree = IncrementalTree.from_state(state.tree.size, state.tree.hashes)
        await _extend_from_rows(portal, tree)
        if latest is not None and latest.tree_size == tree.size:
            state.tree = tree
            await asyncio.to_thread(_write_copy, portal.settings.checkpoint_dir, latest)
            return latest

        row = await _store(portal, tree)
        state.tree = tree

    await asyncio.to_thread(_write_copy, portal.settings.checkpoint_dir, row)
    log.info("access-log checkpoint signed", extra={"tree_size": row.tree_size})
    return row


def forget_tree_state(engine: AsyncEngine) -> None:
    """Drop the cached tree state, so the next checkpoint rebuilds it from the database."""
    _STATES.pop(engine, None)


async def load_leaf_hashes(portal: LogAccess, size: int) -> list[bytes]:
    """Return the stored leaf hashes of seq 1..size, in order.

    Raises:
        CheckpointError: a seq is missing or out of place in that range.
    """
    leaves: list[bytes] = []
    after = 0
    while after < size:
        query = (
            select(AccessEvent.seq, AccessEvent.leaf_hash)
            .where(AccessEvent.seq > after, AccessEvent.seq <= size)
            .order_by(AccessEvent.seq)
            .limit(LEAF_PAGE_SIZE)
        )
        async with portal.transaction() as db:
            page = (await db.execute(query)).all()
        if not page:
            break
        for seq, stored in page:
            if seq != len(leaves) + 1:
                raise CheckpointError(
                    f"access_event has no seq {len(leaves) + 1}: the log has a gap before seq {seq}; "
                    "run 'portal audit verify --database'"
                )
            leaves.append(bytes(stored))
        after = page[-1][0]

    if len(leaves) != size:
        raise CheckpointError(
            f"access_event ends at seq {len(leaves)}, but seq 1..{size} were expected; "
            "run 'portal audit verify --database'"
        )
    return leaves


async def _rebuild(portal: LogAccess, latest: CheckpointRow | None) -> IncrementalTree:
    tree = IncrementalTree()
    if latest is None:
        return tree

    for stored in await load_leaf_hashes(portal, latest.tree_size):
        tree.append(stored)
    if tree.root() != bytes(latest.root_hash):
        raise CheckpointError(
            f"the stored leaf hashes of seq 1..{latest.tree_size} do not give the root of the checkpoint "
            "of that size; run 'portal audit verify --database' to find the altered rows"
        )
    return tree


async def _extend_from_rows(portal: LogAccess, tree: IncrementalTree) -> None:
    while True:
        query = (
            select(AccessEvent)
            .where(AccessEvent.seq > tree.size)
            .order_by(AccessEvent.seq)
            .limit(ROW_PAGE_SIZE)
        )
        async with portal.transaction() as db:
            rows = list((await db.scalars(query)).all())
        for row in rows:
            if row.seq != tree.size + 1:
                raise CheckpointError(
                    f"access_event has no seq {tree.size + 1}: the log has a gap before seq {row.seq}; "
                    "run 'portal audit verify --database'"
                )
            computed = leaf_hash(canonical_event_bytes(event_mapping(row)))
            if computed != bytes(row.leaf_hash):
                raise CheckpointError(
                    f"event seq {row.seq} does not match its stored leaf hash: the row was altered after it "
                    "was logged, so it is not signed"
                )
            tree.append(computed)
        if len(rows) < ROW_PAGE_SIZE:
            return


async def _store(portal: LogAccess, tree: IncrementalTree) -> CheckpointRow:
    key = await log_key(portal)
    head = Checkpoint(origin=key.origin, tree_size=tree.size, root_hash=tree.root())
    row = CheckpointRow(
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        note=sign_checkpoint(head, key.private_key, key.key_name),
        created_at=utcnow(),
    )
    if await _insert_once(portal, row):
        return row

    # Another process signed the same size first; the same events must give the same root.
    async with portal.transaction() as db:
        existing = await db.get(CheckpointRow, head.tree_size)
    if existing is None or bytes(existing.root_hash) != head.root_hash:
        raise CheckpointError(
            f"another process stored a different root for tree size {head.tree_size}; the log forked, "
            "so stop every portal process and run 'portal audit verify --database'"
        )
    return existing


async def _insert_once(portal: LogAccess, row: CheckpointRow | AccessLogName) -> bool:
    """Insert a row in its own transaction. Return False if a row with its primary key exists already."""
    try:
        async with portal.transaction() as db:
            db.add(row)
    except IntegrityError:
        return False
    return True


def _write_copy(folder: Path | None, row: CheckpointRow) -> None:
    if folder is None:
        return
    target = folder / f"checkpoint-{row.tree_size}.txt"
    if target.exists():
        return

    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".checkpoint-{row.tree_size}.{os.getpid()}.tmp"
    temporary.write_text(row.note, encoding="utf-8")
    # A rename is atomic, so a copy job never picks up half a file.
    os.replace(temporary, target)


@contextlib.asynccontextmanager
async def periodic_checkpoints(
    portal: LogAccess,
    interval_minutes: float = DEFAULT_INTERVAL_MINUTES,
    *,
    make: Callable[[LogAccess], Any] = make_checkpoint,
) -> AsyncIterator[asyncio.Task[None]]:
    """Sign a checkpoint every `interval_minutes` while the context is open, e.g. in the app lifespan.

    Failures are logged and retried at the next interval; the task is cancelled on exit.
    """
    task = asyncio.create_task(
        _checkpoint_loop(portal, interval_minutes * 60, make), name="access-log checkpoints"
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _checkpoint_loop(
    portal: LogAccess, interval_seconds: float, make: Callable[[LogAccess], Any]
) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await make(portal)
        except CheckpointError as error:
            log.error("access-log checkpoint rejected", extra={"reason": str(error)})
        except Exception:
            # Any other failure (database down) must not end the loop: the next interval retries.
            log.exception("access-log checkpoint failed; retrying at the next interval")


@dataclass
class LogOnly:
    """The database and keys of an installation, without the web app, blob store or PDF workers.

    Read-only tools use it, e.g. `portal audit verify --database`, so they never create a database or
    a key file, start workers, or record events.
    """

    settings: Settings
    keyring: KeyRing
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session whose transaction commits on success and rolls back on any exception."""
        async with self.sessionmaker() as db, db.begin():
            yield db


@contextlib.asynccontextmanager
async def open_log(settings: Settings) -> AsyncIterator[LogOnly]:
    """Open the installation's database and existing key ring for the access-log tools.

    Raises:
        KeyRingError: the key file is missing or invalid; it is never created here.
        PortalError: the database is not at the latest migration; it is never migrated here.
    """
    keyring = KeyRing.from_env(settings.kek_env) if settings.kek_env else KeyRing.load(settings.kek_file)
    engine = create_engine(settings.database_url)
    try:
        await require_latest_schema(engine)
        yield LogOnly(
            settings=settings, keyring=keyring, engine=engine, sessionmaker=create_sessionmaker(engine)
        )
    finally:
        await engine.dispose()
