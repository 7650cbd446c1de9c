"""Evidence bundles of the running log: record the export, sign a checkpoint, write the zip archive.

The archive format and its offline verification live in `portal.audit.bundle`; this module feeds it
from the database. The bundle contains the matching events up to the checkpoint signed for it, so an
event recorded while the archive is written is left out, not left unproved.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any, BinaryIO

import anyio
import anyio.to_thread
from anyio.from_thread import run as run_from_thread

from portal.audit.bundle import BundleError, write_bundle
from portal.audit.canonical import format_time
from portal.audit.checkpoints import CheckpointError, load_leaf_hashes, log_key, make_checkpoint
from portal.audit.merkle import MerkleTree
from portal.audit.query import EXPORT_PAGE_SIZE, EventFilter, build_query, resolve_recipient
from portal.audit.recorder import Actor, event_mapping, record
from portal.core import Portal
from portal.models import AccessEvent, utcnow
from portal.models import Checkpoint as CheckpointRow

# Archives up to this size stay in memory; larger ones spill to a temporary file.
SPOOL_BYTES = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class BundleFile:
    """A written bundle: the open archive file (positioned at 0) and the checkpoint it proves against."""

    file: IO[bytes]
    checkpoint: CheckpointRow


async def build_bundle(portal: Portal, who: Actor, filters: EventFilter, out: BinaryIO) -> CheckpointRow:
    """Record `export.created`, sign a checkpoint that covers it and write the bundle to `out`.

    Raises:
        CheckpointError: the log cannot be signed, or a stored row no longer matches its leaf hash,
            because the database was altered.
        InvalidInput: a filter value is rejected (too vague a recipient, too wide a prefix).
    """
    filters = await resolve_recipient(portal, filters)
    async with portal.transaction() as db:
        await record(db, who, "export.created", details={"format": "bundle", **filters.as_dict()})

    checkpoint = await make_checkpoint(portal)
    leaves = await load_leaf_hashes(portal, checkpoint.tree_size)
    tree = await anyio.to_thread.run_sync(MerkleTree, leaves)
    bounded = dataclasses.replace(filters, max_seq=checkpoint.tree_size)
    key = await log_key(portal)

    def write() -> None:
        write_bundle(
            out,
            _events_from_thread(portal, bounded),
            tree,
            checkpoint.note,
            key.vkey,
            filters.as_dict(),
            signing_key=key.private_key,
            exported_at=format_time(utcnow()),
        )

    # Zip compression and proof building are CPU work; the event pages are fetched back on the loop.
    try:
        await anyio.to_thread.run_sync(write)
    except BundleError as error:
        raise CheckpointError(str(error)) from None
    return checkpoint


async def bundle_to_spooled_file(portal: Portal, who: Actor, filters: EventFilter) -> BundleFile:
    """Build a bundle into a temporary file that spills to disk above `SPOOL_BYTES`."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by the caller's stream
    try:
        checkpoint = await build_bundle(portal, who, filters, spool)  # type: ignore[arg-type]  # a binary file in practice
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return BundleFile(file=spool, checkpoint=checkpoint)


async def stream_file(file: IO[bytes]) -> AsyncIterator[bytes]:
    """Yield a file's bytes in chunks and close it at the end or on disconnect."""
    try:
        while chunk := await anyio.to_thread.run_sync(file.read, READ_CHUNK):
            yield chunk
    finally:
        file.close()


def _events_from_thread(portal: Portal, filters: EventFilter) -> Iterator[dict[str, Any]]:
    # Runs in the worker thread of write(); each page is read on the event loop by run_from_thread.
    after = 0
    while True:
        page = run_from_thread(_event_page, portal, filters, after)
        yield from page
        if len(page) < EXPORT_PAGE_SIZE:
            return
        after = page[-1]["seq"]


async def _event_page(portal: Portal, filters: EventFilter, after: int) -> list[dict[str, Any]]:
    query = (
        build_query(portal, filters)
        .where(AccessEvent.seq > after)
        .order_by(AccessEvent.seq)
        .limit(EXPORT_PAGE_SIZE)
    )
    async with portal.transaction() as db:
        rows = list((await db.scalars(query)).all())
    return [event_mapping(row) for row in rows]
