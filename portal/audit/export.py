"""Streamed CSV and JSON Lines exports, recorded in the access log before the first line is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from litestar.response import Stream

from portal.audit.exporters import csv_rows, jsonl_lines
from portal.audit.query import EventFilter, iterate_events
from portal.audit.recorder import Actor, record
from portal.core import Portal
from portal.errors import InvalidInput
from portal.i18n import _

_BATCH = 500
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


async def export_stream(portal: Portal, who: Actor, filters: EventFilter, export_format: str) -> Stream:
    if export_format not in FORMATS:
        raise InvalidInput(
            _("format='{value}' is unknown. Use jsonl or csv.").format(value=export_format[:20]),
            field="format",
        )
    async with portal.transaction() as db:
        await record(db, who, "export.created", details={"format": export_format, **filters.as_dict()})

    formatter = jsonl_lines if export_format == "jsonl" else csv_rows

    async def body() -> AsyncIterator[bytes]:
        # csv_rows starts every call with the header line; only the first batch keeps it.
        first_batch = True
        batch: list[dict[str, Any]] = []
        async for event in iterate_events(portal, filters):
            batch.append(event)
            if len(batch) >= _BATCH:
                yield _encode(formatter(batch), skip_header=export_format == "csv" and not first_batch)
                first_batch = False
                batch = []
        if batch or first_batch:
            yield _encode(formatter(batch), skip_header=export_format == "csv" and not first_batch)

    return Stream(
        body(),
        media_type=FORMATS[export_format],
        headers={"Content-Disposition": f'attachment; filename="access-log.{export_format}"'},
    )


def _encode(lines: Iterator[str], skip_header: bool) -> bytes:
    if skip_header:
        next(lines, None)
    return "".join(lines).encode("utf-8")
