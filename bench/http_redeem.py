"""Measure code redemptions per second against the argon2 ceiling, and page latency under load.

Usage (from the repository root):
    .venv/bin/python -m bench.http_redeem [--seconds 10] [--connections 16] [--workers 2]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

The argon2 ceiling is the number of CPU cores divided by the time of one ``CODE_HASHER.verify`` in this
process: no server can redeem codes faster than it can check their hashes. The verification is timed before
and after the run, in wall time and in CPU time; the two differ when other work shares the machine. The
ceiling uses the median of both sets. The
script also runs one verifying thread per core with nothing else running: hashes running side by side share
cache and memory bandwidth, so that rate is below the ceiling.

wrk posts valid codes with their CSRF token and cookie; each request carries its own ``X-Forwarded-For``
address (the portal runs with PORTAL_TRUSTED_PROXY_HOPS=1) so the per-address attempt throttle does not cap
the run. Every share allows 10 redemptions; each wrk thread moves to its next code after 10 requests.

During the redemption run the script reads the CPU time of the portal's processes, of the PostgreSQL
backends of the bench database, of wrk and of the whole machine from /proc. CPU milliseconds per redemption
show where the time goes; CPU used by other processes shows whether the run had the machine to itself.

The second part runs ``wrk --latency`` with 64 connections against GET /access and GET /access/share
(with one recipient session cookie) and reports p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from bench._server import (
    BENCH_MAX_REDEMPTIONS,
    DEFAULT_ADMIN_URL,
    cpu_snapshot,
    portal_deployment,
    run_wrk,
    session_for,
    share,
    upload,
)
from portal.security.hashing import CODE_HASHER
from tests.helpers import simple_pdf
from tests.load.recipient import ACCESS_COOKIE, CSRF_COOKIE, cookie_from
from tests.load.servers import client_address

VERIFY_RUNS = 40
SHARE_CONCURRENCY = 4
WRK_THREADS = 2
PAGE_CONNECTIONS = 64

REDEEM_LUA = """
local codes = {}
local per_code = tonumber(os.getenv("BENCH_PER_CODE"))
local threads = tonumber(os.getenv("BENCH_THREADS"))
local token = os.getenv("BENCH_CSRF_TOKEN")
local counter = 0
local next_id = 0

setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

init = function(args)
  for line in io.lines(os.getenv("BENCH_CODES")) do table.insert(codes, line) end
end

request = function()
  local index = math.floor(counter / per_code) * threads + id + 1
  -- Addresses from 198.18.0.0/15, one per request, so the per-address throttle never applies.
  local address = (counter * threads + id) % (512 * 250)
  counter = counter + 1
  local code = codes[index] or codes[#codes]
  local body = "code=" .. code .. "&_csrf_token=" .. token
  local ip = string.format("198.%d.%d.%d", 18 + math.floor(address / 250 / 256),
                           math.floor(address / 250) % 256, address % 250 + 1)
  return wrk.format("POST", "/access", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "__Host-csrftoken=" .. os.getenv("BENCH_CSRF_COOKIE"),
    ["X-Forwarded-For"] = ip,
  }, body)
end
"""


@dataclass(frozen=True)
class VerifyTiming:
    wall: float  # median seconds of one verification, as a client of the portal would wait for it
    cpu: float  # median CPU seconds of the same verifications; lower than wall when other work took the core
    walls: tuple[float, ...]  # every verification's wall time


def verification_timing() -> VerifyTiming:
    """Time one access-code verification with the portal's argon2 parameters, VERIFY_RUNS times."""
    encoded = CODE_HASHER.hash("K7M29QDX4HTVB8NRW3EA")
    walls, cpus = [], []
    for _run in range(VERIFY_RUNS):
        started, started_cpu = time.perf_counter(), time.thread_time()
        CODE_HASHER.verify(encoded, "K7M29QDX4HTVB8NRW3EA")
        walls.append(time.perf_counter() - started)
        cpus.append(time.thread_time() - started_cpu)
    return VerifyTiming(wall=statistics.median(walls), cpu=statistics.median(cpus), walls=tuple(walls))


def parallel_verification_rate(threads: int) -> float:
    """Verifications per second with ``threads`` threads verifying at once and nothing else running."""
    encoded = CODE_HASHER.hash("K7M29QDX4HTVB8NRW3EA")

    def verify_many() -> None:
        for _run in range(VERIFY_RUNS):
            CODE_HASHER.verify(encoded, "K7M29QDX4HTVB8NRW3EA")

    workers = [threading.Thread(target=verify_many) for _index in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * VERIFY_RUNS / (time.perf_counter() - started)


async def _codes(http: httpx.AsyncClient, base_url: str, headers: dict[str, str], count: int) -> list[str]:
    document_id = await upload(http, base_url, headers, simple_pdf(2), "Bench report")
    limit = asyncio.Semaphore(SHARE_CONCURRENCY)

    async def one() -> str:
        async with limit:
            return await share(http, base_url, headers, [document_id])

    return await asyncio.gather(*(one() for _index in range(count)))


async def _measure(arguments: argparse.Namespace, root: Path) -> None:
    verify = verification_timing()
    cores = os.cpu_count() or 1
    ceiling = cores / verify.wall
    all_cores = parallel_verification_rate(cores)
    print(
        f"argon2id verify (19 MiB, t=2, p=1): median {verify.wall * 1000:.1f} ms "
        f"({verify.cpu * 1000:.1f} ms CPU) over {VERIFY_RUNS} runs; "
        f"ceiling {cores} cores / {verify.wall * 1000:.1f} ms = {ceiling:.1f} redemptions/s",
        flush=True,
    )

    with portal_deployment(root, arguments.database_url) as deployment:
        server = deployment.server("portal", workers=arguments.workers)
        server.start()
        headers = deployment.clinician_token("bench@riverside.test")

        async with httpx.AsyncClient(timeout=120) as http:
            share_count = math.ceil(ceiling * arguments.seconds * 1.5 / BENCH_MAX_REDEMPTIONS) + WRK_THREADS
            codes = await _codes(http, server.url, headers, share_count)
            form = await http.get(server.url + "/access")
            csrf_cookie = cookie_from(form, CSRF_COOKIE)
            token = form.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
            session = await session_for(http, server.url, codes[-1], client_address(0))
        code_file = root / "codes.txt"
        code_file.write_text("\n".join(quote(code) for code in codes[:-1]) + "\n")

        database_name = deployment.database_url.rsplit("/", 1)[1]
        server_pid = server.process.pid if server.process else 0
        cpu_before = cpu_snapshot(server_pid, database_name)
        result = run_wrk(
            server.url + "/access",
            connections=arguments.connections,
            seconds=arguments.seconds,
            threads=WRK_THREADS,
            script=REDEEM_LUA,
            env={
                "BENCH_CODES": str(code_file),
                "BENCH_PER_CODE": str(BENCH_MAX_REDEMPTIONS),
                "BENCH_THREADS": str(min(WRK_THREADS, arguments.connections)),
                "BENCH_CSRF_TOKEN": quote(token),
                "BENCH_CSRF_COOKIE": csrf_cookie or "",
            },
        )
        cpu = cpu_before.until(cpu_snapshot(server_pid, database_name))
        verify_after = verification_timing()
        # One verification's time moves by up to 15 % between idle measurements on this kind of machine,
        # so the ceiling the run is judged by uses the median of the timings before and after it.
        ceiling = cores / statistics.median(verify.walls + verify_after.walls)

        redeemed = result.requests - result.errors
        rate = redeemed / result.seconds
        per_redemption = 1000 / max(redeemed, 1)
        print("\n| measure | value |\n|---|---|")
        print(
            f"| argon2id verify, median (before / after the run) | {verify.wall * 1000:.1f} / "
            f"{verify_after.wall * 1000:.1f} ms "
            f"(CPU {verify.cpu * 1000:.1f} / {verify_after.cpu * 1000:.1f} ms) |"
        )
        print(
            f"| ceiling ({cores} cores ÷ median of the {2 * VERIFY_RUNS} verifications before and after) | "
            f"{ceiling:.1f} /s |"
        )
        print(
            f"| argon2id alone, {cores} threads verifying at once | {all_cores:.1f} /s "
            f"({all_cores / ceiling:.2f}x ceiling) |"
        )
        print(
            f"| redemptions ({arguments.connections} connections, {arguments.workers} workers, "
            f"{arguments.seconds} s) | {redeemed} ({rate:.1f} /s, {rate / ceiling:.2f}x ceiling) |"
        )
        print(f"| refused or failed requests | {result.errors} |")
        print(
            f"| redemption latency p50 / p99 | {result.latency_p50_ms:.0f} / {result.latency_p99_ms:.0f} ms |"
        )
        print(
            f"| CPU per redemption: portal event loops + other threads / PostgreSQL / wrk | "
            f"{cpu.portal_main * per_redemption:.1f} + {cpu.portal_threads * per_redemption:.1f} / "
            f"{cpu.postgres * per_redemption:.1f} / {cpu.children * per_redemption:.1f} ms |"
        )
        print(
            f"| machine CPU busy; used by other processes | {cpu.machine_busy / cpu.machine_total:.0%}; "
            f"{cpu.others / cpu.machine_total:.0%} |"
        )

        heading = f"page ({PAGE_CONNECTIONS} connections, {arguments.seconds} s)"
        print(f"\n| {heading} | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|")
        for label, path, page_headers in (
            ("GET /access", "/access", {}),
            ("GET /access/share", "/access/share", {"Cookie": f"{ACCESS_COOKIE}={session}"}),
        ):
            page = run_wrk(
                server.url + path,
                connections=PAGE_CONNECTIONS,
                seconds=arguments.seconds,
                threads=WRK_THREADS,
                headers=page_headers,
            )
            print(
                f"| {label} | {page.requests_per_second:,.0f} | {page.latency_p50_ms:.1f} | "
                f"{page.latency_p99_ms:.1f} | {page.errors} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (1 to 60)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for redemptions")
    parser.add_argument("--workers", type=int, default=2, help="portal worker processes")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PORTAL_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL,
        help="PostgreSQL server to create the throwaway database on",
    )
    arguments = parser.parse_args()
    arguments.seconds = max(1, min(arguments.seconds, 60))
    with tempfile.TemporaryDirectory(prefix="http-redeem-") as folder:
        asyncio.run(_measure(arguments, Path(folder)))


if __name__ == "__main__":
    main()
