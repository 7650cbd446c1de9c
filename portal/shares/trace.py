"""``portal trace FILE.pdf``: name the share a leaked copy was made for.

The copy's ``/ID[0]`` holds the share id encrypted under the key ring's marker key. The trailer is not
encrypted, so no password is needed. A file whose marker does not decode to a known share is not one of
ours, or was rewritten by a tool that replaced its ``/ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from portal.config import Settings
from portal.crypto.marker import decode_marker
from portal.models import Share
from portal.pdf.pipeline import read_marker

MAX_TRACE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class TraceResult:
    share_id: str
    reference: str
    recipient_name: str
    profile: str
    created_at: str


async def trace_copy(portal: object, data: bytes) -> TraceResult | None:
    """Return the share a copy was made for, or None if the file carries no marker of this portal."""
    marker = read_marker(data)
    if marker is None or len(marker) != 16:
        return None
    share_id = decode_marker(portal.keyring.secret("marker"), marker)  # type: ignore[attr-defined]
    async with portal.transaction() as db:  # type: ignore[attr-defined]
        share = await db.get(Share, share_id)
    if share is None:
        return None
    return TraceResult(
        share_id=str(share.id),
        reference=share.reference,
        recipient_name=share.recipient_name,
        profile=share.profile,
        created_at=share.created_at.strftime("%Y-%m-%d %H:%M UTC"),
    )


def _trace(args: argparse.Namespace) -> int:
    from portal.retention.cli import open_maintenance_portal

    path = Path(args.file)
    if not path.is_file():
        print(f"portal: {path} is not a file. Give the path of the PDF to trace.", file=sys.stderr)
        return 2
    if path.stat().st_size > MAX_TRACE_BYTES:
        print(f"portal: {path} is larger than 200 MB, so it is not a copy from this portal.", file=sys.stderr)
        return 2

    data = path.read_bytes()

    async def run() -> int:
        portal = await open_maintenance_portal(Settings.from_env())
        try:
            result = await trace_copy(portal, data)
        finally:
            await portal.close()
        if result is None:
            print(f"{path}: not a copy made by this portal (no marker from this portal's key).")
            return 1
        print(f"{path}: share {result.reference} ({result.share_id})")
        print(f"  recipient: {result.recipient_name} (profile {result.profile})")
        print(f"  created:   {result.created_at}")
        return 0

    return asyncio.run(run())


def register(commands: argparse._SubParsersAction) -> None:
    trace = commands.add_parser("trace", help="name the share a copy of a report was made for")
    trace.add_argument("file", help="the PDF copy to trace (no password needed)")
    trace.set_defaults(handler=_trace)
