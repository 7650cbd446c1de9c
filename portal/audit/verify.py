"""Verifying the access log in the database against its own signed checkpoints.

`verify_database` reads every event row in seq order and checks, stopping at the first failure:

1. seq runs 1, 2, 3 ... without a gap or repeat;
2. each row's canonical bytes give the leaf hash stored beside it;
3. each stored checkpoint note verifies with the log key, names this log's stored origin and states the
   size and root of its row (checkpoints signed before the name was stored may name the origin of the
   address that signed them);
4. the Merkle root recomputed from the rows at every checkpoint size equals that checkpoint's root;
5. each checkpoint is consistent with the one before it (RFC 9162 consistency proof between the two
   signed roots).

A row edited together with its leaf hash passes check 2 but fails check 4 at the first checkpoint that
covers it. Events after the latest checkpoint are checked by 1 and 2 only, so the report counts them.

What this does not show: that no checkpoint row was deleted, or that the whole database was not
replaced by an older copy. Compare with checkpoint copies kept off the host for that.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal.audit.canonical import EventInvalid, canonical_event_bytes
from portal.audit.checkpoint import CheckpointInvalid, open_checkpoint
from portal.audit.checkpoints import LogAccess, log_name
from portal.audit.merkle import MerkleTree, empty_root, leaf_hash, verify_consistency
from portal.audit.recorder import event_mapping
from portal.models import AccessEvent, AccessLogName
from portal.models import Checkpoint as CheckpointRow

ROW_PAGE_SIZE = 5_000


@dataclass(frozen=True)
class DatabaseReport:
    """The result of `verify_database`.

    Attributes:
        ok: True only if every check passed.
        events: number of event rows read before the first failure (all of them when ok).
        checkpoints: number of stored checkpoints verified before the first failure.
        unsigned: events after the latest checkpoint, which no signature covers yet.
        first_failure: the first failed check, naming the seq or tree size; None when ok.
    """

    ok: bool
    events: int
    checkpoints: int
    unsigned: int
    first_failure: str | None


class _Failure(Exception):
    pass


async def verify_database(portal: LogAccess) -> DatabaseReport:
    """Check the access_event rows and stored checkpoints of this portal's database; see the module doc."""
    leaves: list[bytes] = []
    verified: list[CheckpointRow] = []
    try:
        await _check_rows(portal, leaves)
        rows = await _stored_checkpoints(portal)
        if rows:
            name = await log_name(portal)
            if name is None:
                raise _Failure(
                    "the log has checkpoints but access_log_name contains no name, so its row was deleted"
                )
            _check_checkpoints(portal, name, rows, leaves, verified)
    except _Failure as failure:
        return DatabaseReport(False, len(leaves), len(verified), 0, str(failure))

    signed = verified[-1].tree_size if verified else 0
    return DatabaseReport(True, len(leaves), len(verified), len(leaves) - signed, None)


async def _check_rows(portal: LogAccess, leaves: list[bytes]) -> None:
    while True:
        query = (
            select(AccessEvent)
            .where(AccessEvent.seq > len(leaves))
            .order_by(AccessEvent.seq)
            .limit(ROW_PAGE_SIZE)
        )
        async with portal.transaction() as db:
            rows = list((await db.scalars(query)).all())

        for row in rows:
            expected = len(leaves) + 1
            if row.seq != expected:
                raise _Failure(
                    f"seq {expected} is missing: the next row is seq {row.seq}, so events were deleted"
                )
            try:
                computed = leaf_hash(canonical_event_bytes(event_mapping(row)))
            except (EventInvalid, ValueError) as error:
                raise _Failure(
                    f"event seq {row.seq} is not a valid event ({error}): the row was altered"
                ) from None
            if computed != bytes(row.leaf_hash):
                raise _Failure(
                    f"event seq {row.seq} does not match its stored leaf hash: "
                    "the row was altered after it was logged"
                )
            leaves.append(computed)

        if len(rows) < ROW_PAGE_SIZE:
            return


async def _stored_checkpoints(portal: LogAccess) -> list[CheckpointRow]:
    async with portal.transaction() as db:
        return list((await db.scalars(select(CheckpointRow).order_by(CheckpointRow.tree_size))).all())


def _check_checkpoints(
    portal: LogAccess,
    name: AccessLogName,
    rows: list[CheckpointRow],
    leaves: list[bytes],
    verified: list[CheckpointRow],
) -> None:
    public_key = portal.keyring.checkpoint_signing_key().public_key()
    tree = MerkleTree(leaves)

    previous: CheckpointRow | None = None
    for row in rows:
        where = f"checkpoint at tree size {row.tree_size}"
        # The origin is also the key name. A checkpoint signed before the name was stored may carry the origin
        # of the public URL of the process that signed it.
        origin = row.note.split("\n", 1)[0] if row.tree_size <= name.legacy_tree_size else name.origin
        try:
            head = open_checkpoint(row.note, public_key, origin, origin)
        except CheckpointInvalid as error:
            raise _Failure(f"{where}: {error}") from None
        if head.tree_size != row.tree_size or head.root_hash != bytes(row.root_hash):
            raise _Failure(f"{where}: the signed note states another size or root than its row")

        if row.tree_size > tree.size:
            raise _Failure(
                f"{where}: it covers {row.tree_size} events but the log has only {tree.size}; "
                f"events after seq {tree.size} were deleted"
            )
        recomputed = tree.range_root(0, row.tree_size) if row.tree_size else empty_root()
        if recomputed != head.root_hash:
            first = previous.tree_size + 1 if previous else 1
            raise _Failure(
                f"{where}: the root recomputed from the rows differs from the signed root, so an event in "
                f"seq {first}..{row.tree_size} was altered together with its leaf hash"
            )

        if previous is not None:
            proof = tree.consistency_proof(previous.tree_size, row.tree_size)
            if not verify_consistency(
                previous.tree_size, row.tree_size, bytes(previous.root_hash), head.root_hash, proof
            ):
                raise _Failure(
                    f"{where} is not consistent with the checkpoint at tree size {previous.tree_size}"
                )

        verified.append(row)
        previous = row
