"""Streamed CSV and JSON Lines exports, recorded in the access log before the first line is sent.

Every export also signs a checkpoint that covers its own `export.created` event, so each export leaves
a signed tree head behind (and a copy in PORTAL_CHECKPOINT_DIR when that is set).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from litestar.response import Stream

from portal.audit.checkpoints import CheckpointError, make_checkpoint
from portal.audit.evidence import bundle_to_spooled_file, stream_file
from portal.audit.exporters import ExportLabels, RowFormatter
from portal.audit.query import EventFilter, iterate_labelled_rows, resolve_recipient
from portal.audit.recorder import Actor, record
from portal.core import Portal
from portal.errors import InvalidInput
from portal.i18n import _

log = logging.getLogger(__name__)

# Events per chunk of the response body: about 200 KB of JSON Lines.
CHUNK_EVENTS = 500
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


async def export_stream(portal: Portal, who: Actor, filters: EventFilter, export_format: str) -> Stream:
    """Record the export, sign a checkpoint and return the events as a streamed CSV or JSONL response.

    Raises:
        InvalidInput: the format or a filter value is rejected.
    """
    if export_format not in FORMATS:
        raise InvalidInput(
            _("format='{value}' is unknown. Use jsonl or csv.").format(value=export_format[:20]),
            field="format",
        )
    filters = await resolve_recipient(portal, filters)
    async with portal.transaction() as db:
        await record(db, who, "export.created", details={"format": export_format, **filters.as_dict()})
    await checkpoint_quietly(portal)

    return Stream(
        export_chunks(portal, filters, export_format),
        media_type=FORMATS[export_format],
        headers={"Content-Disposition": f'attachment; filename="access-log.{export_format}"'},
    )


async def export_chunks(portal: Portal, filters: EventFilter, export_format: str) -> AsyncIterator[bytes]:
    """Yield the matching events as CSV or JSON Lines in UTF-8, about `CHUNK_EVENTS` events per chunk.

    Each event carries the `LOOKUP_FIELDS` after its own fields: the share reference and the staff
    e-mail address, looked up per page of rows when the export runs and not covered by any leaf hash.
    The CSV header comes first, also when no event matches. Memory stays at one page of rows.

    Raises:
        ValueError: ``export_format`` is neither "jsonl" nor "csv".
        EventInvalid: a stored event breaks the event schema; the chunks already yielded stay valid.
    """
    if export_format not in FORMATS:
        raise ValueError(f"export format {export_format!r} is unknown; use jsonl or csv")

    formatter = RowFormatter()
    header = export_format == "csv"
    async for page, labels in iterate_labelled_rows(portal, filters):
        for start in range(0, len(page), CHUNK_EVENTS):
            rows = page[start : start + CHUNK_EVENTS]
            if export_format == "jsonl":
                yield formatter.jsonl(rows, labels)
            else:
                yield formatter.csv(rows, header=header, labels=labels)
                header = False
    if header:
        yield formatter.csv([], header=True, labels=ExportLabels())


async def bundle_stream(portal: Portal, who: Actor, filters: EventFilter) -> Stream:
    """Build an evidence bundle (zip) and return it as a streamed download.

    Raises:
        CheckpointError: the log cannot be signed because the database was altered.
        InvalidInput: a filter value is rejected.
    """
    bundle = await bundle_to_spooled_file(portal, who, filters)
    filename = f"access-log-bundle-{bundle.checkpoint.tree_size}.zip"
    return Stream(
        stream_file(bundle.file),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


async def checkpoint_quietly(portal: Portal) -> None:
    """Sign a checkpoint for a plain export. A rejection is logged and does not stop the export.

    A plain export is not evidence by itself, and the DPO needs it most when the log looks altered.
    Bundles call `make_checkpoint` directly and fail instead.
    """
    try:
        await make_checkpoint(portal)
    except CheckpointError as error:
        log.error("access-log checkpoint rejected during an export", extra={"reason": str(error)})
