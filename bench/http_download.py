"""Measure downloads of prepared copies over HTTP against nginx serving the same files statically.

Usage (from the repository root):
    .venv/bin/python -m bench.http_download [--sizes 5,50] [--connections 1,16,64] [--seconds 10]
        [--workers 2] [--store database|filesystem] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Uploads and the PDF job are capped at 30 MB, so a copy larger than ``MAX_PREPARED_MB`` is made by
replacing the copy of every share of that size with one blob of the requested size (``%PDF-1.7`` and
random bytes, like compressed photos), written through the portal's own ``BlobService`` under a new data
key. The download path (session, allowance, access-log events, decryption, streaming) is the same for it.

Each portal download needs a redeemed recipient session and counts against its share's download allowance,
so the script creates shares with a ``bench`` profile (20 downloads each) and gives wrk one session cookie
per share. Every wrk thread moves to its next cookie after 20 requests. nginx serves a byte-identical copy
with sendfile. Both listen on 127.0.0.1 and are measured with wrk on the same machine, so client and
server share the CPU. Figures are MB/s (10**6 bytes per second) of response bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select, update

from bench._server import (
    BENCH_MAX_DOWNLOADS,
    DEFAULT_ADMIN_URL,
    WrkResult,
    nginx_serving,
    portal_deployment,
    run_wrk,
    session_for,
    share,
    upload,
)
from portal.blobs import BlobService
from portal.config import Settings
from portal.core import open_blob_store, open_keyring
from portal.db import create_engine, create_sessionmaker
from portal.models import Share, ShareDocument
from tests.load.documents import photo_report
from tests.load.recipient import ACCESS_COOKIE
from tests.load.servers import PortalServer, client_address

# Uploads and the PDF job's input are capped at 30 MB, so larger copies are written straight to the
# blob store (``CopyReplacement``).
MAX_DOCUMENT_BYTES = 25_000_000
MAX_PREPARED_MB = 29
SHARE_CONCURRENCY = 4
SINGLE_DOWNLOADS = 3
# Measurements of one row: the second, with three times the shares, follows only when the allowance ran out.
ALLOWANCE_ATTEMPTS = 2
WRK_THREADS = 2

DOWNLOAD_LUA = """
local cookies = {}
local per_cookie = tonumber(os.getenv("BENCH_PER_COOKIE"))
local threads = tonumber(os.getenv("BENCH_THREADS"))
local counter = 0
local next_id = 0

setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

init = function(args)
  for line in io.lines(os.getenv("BENCH_COOKIES")) do table.insert(cookies, line) end
end

request = function()
  local index = math.floor(counter / per_cookie) * threads + id + 1
  counter = counter + 1
  local cookie = cookies[index] or cookies[#cookies]
  return wrk.format("GET", "/access/download", {["Cookie"] = "__Host-portal-access=" .. cookie})
end
"""


async def _prepare_document_ids(
    http: httpx.AsyncClient, server: PortalServer, headers: dict[str, str], size_mb: int
) -> list[str]:
    total = size_mb * 1_000_000
    parts = math.ceil(total / MAX_DOCUMENT_BYTES)
    ids = []
    for part in range(parts):
        pdf = photo_report(total // parts, seed=size_mb * 10 + part)
        ids.append(await upload(http, server.url, headers, pdf, f"Bench {size_mb} MB part {part + 1}"))
    return ids


class CopyReplacement:
    """One large copy blob, written with the portal's BlobService, that shares of some documents point to."""

    def __init__(self, server: PortalServer, size: int) -> None:
        self.settings = Settings.from_env(server.env)
        self.engine = create_engine(self.settings.database_url)
        self.blobs = BlobService(open_blob_store(self.settings, self.engine), open_keyring(self.settings))
        self.size = size
        self.blob_id: str | None = None

    async def point_shares(self, document_ids: list[str]) -> None:
        """Make every share of ``document_ids[0]`` serve the large blob, staging it on first use."""
        sessionmaker = create_sessionmaker(self.engine)
        async with sessionmaker() as db, db.begin():
            if self.blob_id is None:
                staged = await self.blobs.stage("copy", b"%PDF-1.7\n" + os.urandom(self.size - 9))
                db.add_all(staged.rows())
                await db.flush()
                self.blob_id = staged.blob_id
            shares = select(ShareDocument.share_id).where(
                ShareDocument.document_id == uuid.UUID(document_ids[0])
            )
            await db.execute(update(Share).where(Share.id.in_(shares)).values(copy_blob_id=self.blob_id))

    async def close(self) -> None:
        await self.engine.dispose()


async def _sessions(
    http: httpx.AsyncClient,
    server: PortalServer,
    headers: dict[str, str],
    document_ids: list[str],
    count: int,
    first_address: int,
) -> list[str]:
    limit = asyncio.Semaphore(SHARE_CONCURRENCY)

    async def one(index: int) -> str:
        async with limit:
            code = await share(http, server.url, headers, document_ids)
            return await session_for(http, server.url, code, client_address(first_address + index))

    return await asyncio.gather(*(one(index) for index in range(count)))


def _row(label: str, size_mb: int, connections: int, result: WrkResult) -> str:
    return (
        f"| {label} | {size_mb} MB | {connections} | {result.megabytes_per_second:,.0f} | "
        f"{result.requests_per_second:,.1f} | {result.latency_p50_ms:,.0f} | {result.latency_p99_ms:,.0f} | "
        f"{result.errors} |"
    )


async def _measure(arguments: argparse.Namespace, root: Path) -> list[str]:
    rows = []
    store_env = {"PORTAL_BLOB_STORE": arguments.store}
    with portal_deployment(root, arguments.database_url, **store_env) as deployment:
        server = deployment.server("portal", workers=arguments.workers)
        server.start()
        headers = deployment.clinician_token("bench@riverside.test")
        files = root / "static"
        files.mkdir()
        address = 0

        async with httpx.AsyncClient(timeout=120) as http:
            for size_mb in arguments.sizes:
                replacement = None
                if size_mb > MAX_PREPARED_MB:
                    replacement = CopyReplacement(server, size_mb * 1_000_000)
                document_ids = await _prepare_document_ids(
                    http, server, headers, min(size_mb, MAX_PREPARED_MB)
                )

                # One download first: the copy's real size and a single-stream rate to size the session pool.
                [cookie] = await _sessions(http, server, headers, document_ids, 1, address)
                address += 1
                if replacement is not None:
                    await replacement.point_shares(document_ids)
                # The best of a few downloads: the first one runs with cold caches and would size the pool
                # too small, so wrk would spend the end of its run on refused requests.
                single_rate = 0.0
                for _attempt in range(SINGLE_DOWNLOADS):
                    started = time.perf_counter()
                    answer = await http.get(
                        server.url + "/access/download", headers={"Cookie": f"{ACCESS_COOKIE}={cookie}"}
                    )
                    answer.raise_for_status()
                    single_rate = max(single_rate, len(answer.content) / (time.perf_counter() - started))
                (files / f"copy-{size_mb}.pdf").write_bytes(answer.content)
                size = len(answer.content)
                print(
                    f"{size_mb} MB: copy is {size:,} bytes, one download {single_rate / 1e6:,.0f} MB/s",
                    flush=True,
                )

                for connections in arguments.connections:
                    # Allowance for three times the single-stream rate on every core, plus one share per wrk
                    # thread. httpx reads a large body more slowly than wrk, so the estimate can fall short:
                    # then the row is measured again once, with three times the shares.
                    expected = (
                        arguments.seconds * single_rate * 3 * (os.cpu_count() or 1) / len(answer.content)
                    )
                    share_count = math.ceil(expected / BENCH_MAX_DOWNLOADS) + WRK_THREADS
                    for attempt in range(ALLOWANCE_ATTEMPTS):
                        cookies = await _sessions(http, server, headers, document_ids, share_count, address)
                        address += share_count
                        if replacement is not None:
                            await replacement.point_shares(document_ids)
                        cookie_file = root / f"cookies-{size_mb}-{connections}-{attempt}.txt"
                        cookie_file.write_text("\n".join(cookies) + "\n")

                        result = run_wrk(
                            server.url + "/access/download",
                            connections=connections,
                            seconds=arguments.seconds,
                            threads=WRK_THREADS,
                            script=DOWNLOAD_LUA,
                            env={
                                "BENCH_COOKIES": str(cookie_file),
                                "BENCH_PER_COOKIE": str(BENCH_MAX_DOWNLOADS),
                                "BENCH_THREADS": str(min(WRK_THREADS, connections)),
                            },
                        )
                        if not result.errors or attempt == ALLOWANCE_ATTEMPTS - 1:
                            break
                        print(
                            f"{result.errors} requests were refused with {share_count} shares; "
                            f"measuring again with {share_count * 3}",
                            flush=True,
                        )
                        share_count *= 3
                    rows.append(
                        _row(
                            f"portal ({arguments.store} store, {arguments.workers} workers)",
                            size_mb,
                            connections,
                            result,
                        )
                    )
                    print(rows[-1], f"[{share_count} shares]", flush=True)
                    if result.errors:
                        print(
                            f"warning: {result.errors} requests were refused or failed, so this row undercounts",
                            flush=True,
                        )
                if replacement is not None:
                    await replacement.close()
        server.stop()

        with nginx_serving(files, workers=arguments.workers) as nginx_url:
            for size_mb in arguments.sizes:
                for connections in arguments.connections:
                    result = run_wrk(
                        f"{nginx_url}/copy-{size_mb}.pdf",
                        connections=connections,
                        seconds=arguments.seconds,
                        threads=WRK_THREADS,
                    )
                    rows.append(
                        _row(f"nginx (sendfile, {arguments.workers} workers)", size_mb, connections, result)
                    )
                    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,50", help="copy sizes in MB, comma-separated")
    parser.add_argument("--connections", default="1,16,64", help="wrk connection counts, comma-separated")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (1 to 60)")
    parser.add_argument("--workers", type=int, default=2, help="portal and nginx worker processes")
    parser.add_argument(
        "--store", choices=["database", "filesystem"], default="database", help="portal blob store"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PORTAL_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL,
        help="PostgreSQL server to create the throwaway database on",
    )
    arguments = parser.parse_args()
    arguments.sizes = [int(value) for value in arguments.sizes.split(",")]
    arguments.connections = [int(value) for value in arguments.connections.split(",")]
    arguments.seconds = max(1, min(arguments.seconds, 60))

    with tempfile.TemporaryDirectory(prefix="http-download-") as folder:
        rows = asyncio.run(_measure(arguments, Path(folder)))
    print("\n| server | copy | connections | MB/s | downloads/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
