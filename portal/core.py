"""The services one portal process shares between requests: database, keys, blobs, PDF workers."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal.access import batched
from portal.audit.recorder import LOCK_LOG, LOCK_LOG_PARAMS, SYSTEM, record
from portal.blobs import BlobService
from portal.config import Settings
from portal.crypto.errors import KeyRingError
from portal.crypto.keyring import KeyRing
from portal.db import create_engine, create_sessionmaker
from portal.models import BLOB_CHUNK_TABLE, AccessEvent, DataKey
from portal.pdf.budgets import Budgets
from portal.pdf.worker import PdfWorkerPool
from portal.pgbatch import BatchPool
from portal.policies import Policies, load_policies
from portal.schema import migrate
from portal.storage.base import BlobStore
from portal.storage.database import DatabaseBlobStore
from portal.storage.filesystem import FileBlobStore

log = logging.getLogger(__name__)

# Connections per process for the batched statements of code redemptions and downloads. A batch uses one
# for about a millisecond, so five serve far more redemptions per second than the CPU can hash.
BATCH_CONNECTIONS = 5


@dataclass
class Portal:
    settings: Settings
    policies: Policies
    keyring: KeyRing
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    blobs: BlobService
    pdf: PdfWorkerPool
    # Connections for the batched steps of code redemptions and downloads on PostgreSQL, None on SQLite.
    batches: BatchPool | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Open a session whose transaction commits on success and rolls back on any exception."""
        async with self.sessionmaker() as db, db.begin():
            yield db

    async def close(self) -> None:
        await self.pdf.close()
        if self.batches is not None:
            await self.batches.close()
        await self.engine.dispose()


async def _policy_changed(db: AsyncSession, digest: str) -> bool:
    """Return whether the last ``policy.loaded`` event names another policy digest, or none exists.

    Every process start and command opens the portal, and an event per start would bury the log in
    copies. The event marks the moment a policy took effect, so the same policy again records nothing.
    The log's write lock is taken first, so two processes starting together record a new policy once.
    """
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(LOCK_LOG, LOCK_LOG_PARAMS)
    last = await db.scalar(
        select(AccessEvent.details)
        .where(AccessEvent.event_type == "policy.loaded")
        .order_by(AccessEvent.seq.desc())
        .limit(1)
    )
    return last is None or json.loads(last).get("policy_sha256") != digest


def budgets_from(policies: Policies) -> Budgets:
    security = policies.security
    return Budgets(
        max_pages=security.upload_max_pages,
        max_objects=security.upload_max_objects,
        max_decoded_bytes=security.upload_max_decoded_bytes,
        max_image_pixels=security.upload_max_image_pixels,
        timeout_seconds=float(security.worker_timeout_seconds),
        memory_bytes=security.worker_memory_bytes,
    )


def open_keyring(settings: Settings) -> KeyRing:
    """Load the key ring, creating it with mode 0600 on first start of an embedded installation."""
    if settings.kek_env:
        return KeyRing.from_env(settings.kek_env)
    if settings.kek_file.exists():
        return KeyRing.load(settings.kek_file)

    settings.kek_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring = KeyRing.create(settings.kek_file)
    log.warning(
        "created a new key file; back it up separately from the database",
        extra={"key_file": str(settings.kek_file)},
    )
    return keyring


async def prepare_storage(settings: Settings) -> None:
    """Create the data folder, schema and key file if they are missing (first start).

    Raises:
        KeyRingError: the database contains data keys wrapped under key ids that the key ring lacks, as after
            a restore without the key file or with the key file of another installation.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(settings.data_dir, 0o700)
    await migrate(settings.database_url)
    stored = await _stored_kek_ids(settings.database_url)
    if stored and not settings.kek_env and not settings.kek_file.exists():
        # A new key ring could not unwrap a single stored data key, so none is created.
        raise KeyRingError(
            f"The key file {settings.kek_file} was not found, but the database contains data keys wrapped "
            f"under key {', '.join(sorted(stored))}. Restore the key file that belongs to this database to "
            "that path, or set PORTAL_KEK_FILE to where it is."
        )
    keyring = open_keyring(settings)
    missing = stored - set(keyring.kek_ids)
    if missing:
        source = "PORTAL_KEK" if settings.kek_env else f"the key file {settings.kek_file}"
        raise KeyRingError(
            f"The key ring in {source} lacks key {', '.join(sorted(missing))}, which wraps data keys in the "
            "database, so stored reports could not be read. Use the key file that belongs to this database, "
            "for example the one from the same backup."
        )


async def _stored_kek_ids(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return set((await connection.scalars(select(DataKey.kek_id).distinct())).all())
    finally:
        await engine.dispose()


def open_blob_store(settings: Settings, engine: AsyncEngine) -> BlobStore:
    if settings.blob_store == "database":
        return DatabaseBlobStore(engine, BLOB_CHUNK_TABLE)
    return FileBlobStore(settings.blob_dir)


async def start_portal(
    settings: Settings,
    *,
    pdf_workers: int | None = None,
    policies: Policies | None = None,
    keyring: KeyRing | None = None,
    lazy_pdf: bool = False,
) -> Portal:
    """Open every service the app needs, creating the data folder, keys and schema on first start.

    ``create_app`` passes the policies and key ring it already loaded, so start-up reads each file once.
    The server starts its PDF workers here, so a worker that cannot start stops start-up. With ``lazy_pdf``
    they start for the first PDF job instead, because commands and tests may send none.
    """
    policies = policies or load_policies(settings.policy_dir)
    await prepare_storage(settings)
    keyring = keyring or open_keyring(settings)

    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)

    store = open_blob_store(settings, engine)
    pool = PdfWorkerPool(pdf_workers or settings.pdf_workers, budgets_from(policies), lazy=lazy_pdf)
    await pool.start()

    batches = None
    if batched.uses_batches(engine.dialect):
        batches = batched.open_pool(settings.database_url, engine.dialect, max_size=BATCH_CONNECTIONS)
        await batches.open()

    portal = Portal(
        settings=settings,
        policies=policies,
        keyring=keyring,
        engine=engine,
        sessionmaker=sessionmaker,
        blobs=BlobService(store, keyring),
        pdf=pool,
        batches=batches,
    )
    async with portal.transaction() as db:
        if await _policy_changed(db, policies.digest):
            await record(db, SYSTEM, "policy.loaded", details={"policy_sha256": policies.digest})

    if settings.uses_sqlite:
        database_file = settings.database_url.split("///", 1)[1]
        if os.path.exists(database_file):
            os.chmod(database_file, 0o600)
    log.info(
        "portal ready",
        extra={
            "data_dir": str(settings.data_dir),
            "database": engine.dialect.name,
            "key_file": str(settings.kek_file),
        },
    )
    return portal
