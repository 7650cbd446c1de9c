"""Measure the access-log export on 1,000,000 events: the export path in-process and over HTTP.

For each database (SQLite, and PostgreSQL with --postgresql) the script builds a fresh portal
database, inserts synthetic shares and events with the helpers of ``bench/audit_breach.py`` (leaf
hashes from the canonical bytes, so the log still verifies), then measures each format twice:

- in-process: ``portal.audit.export.export_chunks``, the body of the HTTP route's streamed response
  (``iterate_event_rows`` pages, formatted by ``RowFormatter``), consumed without a network;
- HTTP: ``GET /api/v1/audit/events?format=...`` with a DPO token against ``portal serve`` (uvicorn, one
  worker) on 127.0.0.1, downloaded by curl to /dev/null. The server's resident memory is sampled every
  0.1 s from /proc, so "flat memory" shows as a small difference between its start and its peak.

Usage (from the repository root):
    .venv/bin/python -m bench.audit_export_http [--events 1000000] [--shares 20000]
        [--postgresql postgresql://postgres@127.0.0.1:5432/postgres]

The HTTP export also records an ``export.created`` event and signs a checkpoint over the whole log
before the first byte, which costs a few seconds on 1,000,000 events; the table shows the time to the
first byte separately.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.audit_breach import _insert_events, _insert_shares
from portal.audit.export import export_chunks
from portal.audit.query import EventFilter
from portal.config import Settings
from portal.core import Portal, start_portal
from portal.models import StaffUser
from portal.staff.service import create_token
from tests.load.servers import free_port

FORMATS = ("jsonl", "csv")
CURL_TIMEOUT_SECONDS = 600
READY_TIMEOUT_SECONDS = 300
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds_of(pid: int) -> float:
    """Return the user and system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 2**20


async def measure_in_process(portal: Portal, export_format: str) -> dict[str, float]:
    """Consume ``export_chunks`` for every event; return events/s, MB, CPU seconds and RSS figures."""
    start_rss = current_rss_mib()
    peak_rss = start_rss
    size = 0
    lines = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    async for chunk in export_chunks(portal, EventFilter(), export_format):
        size += len(chunk)
        lines += chunk.count(b"\n")
        peak_rss = max(peak_rss, current_rss_mib())
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    events = lines - (1 if export_format == "csv" else 0)
    return {
        "events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "events_per_cpu_second": events / cpu_seconds,
        "megabytes": size / 1e6,
        "rss_start_mib": start_rss,
        "rss_peak_mib": peak_rss,
    }


@contextlib.contextmanager
def portal_server(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """Run ``portal serve`` with one worker on a free 127.0.0.1 port; yield its URL and pid."""
    port = free_port()
    command = [sys.executable, "-m", "portal.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while (
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "--max-time", "2", url + "/access"], check=False
            ).returncode
            != 0
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError(
                    f"portal serve did not start within {READY_TIMEOUT_SECONDS} s:\n{log_tail}"
                )
            time.sleep(0.2)
        yield url, _uvicorn_pid(process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        process.wait(timeout=30)


def _uvicorn_pid(leader: int) -> int:
    # With --workers 1 the server may serve in the leader itself or in one child; sample the larger.
    children = Path(f"/proc/{leader}/task/{leader}/children").read_text(encoding="ascii").split()
    candidates = [leader, *map(int, children)]
    return max(candidates, key=current_rss_mib)


def measure_http(url: str, token: str, export_format: str, server_pid: int) -> dict[str, float]:
    """Download the export with curl; return events/s, time to first byte and the server's RSS."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                samples.append(current_rss_mib(server_pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    start_rss = current_rss_mib(server_pid)
    cpu_started = cpu_seconds_of(server_pid)
    sampler.start()
    output = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
            "--header",
            f"Authorization: Bearer {token}",
            "--write-out",
            "%{time_starttransfer} %{time_total} %{size_download}",
            f"{url}/api/v1/audit/events?format={export_format}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=CURL_TIMEOUT_SECONDS,
    ).stdout
    done.set()
    sampler.join()
    server_cpu_seconds = cpu_seconds_of(server_pid) - cpu_started
    first_byte, total, size = (float(value) for value in output.split())
    return {
        "seconds": total,
        "first_byte_seconds": first_byte,
        "streaming_seconds": total - first_byte,
        "megabytes": size / 1e6,
        "server_cpu_seconds": server_cpu_seconds,
        "rss_start_mib": start_rss,
        "rss_peak_mib": max(samples, default=start_rss),
    }


async def prepare(portal: Portal, events: int, shares: int) -> str:
    """Insert the synthetic log and a DPO account; return an API token for it."""
    share_ids = await _insert_shares(portal, shares)
    seconds = await _insert_events(portal, events, share_ids)
    print(f"  inserted {events:,} events in {seconds:.1f} s", flush=True)

    email = f"dpo-{secrets.token_hex(4)}@clinic.test"
    async with portal.transaction() as db:
        # The account never signs in, so its password hash is a placeholder.
        db.add(StaffUser(email=email, role="dpo", password_hash=""))
    async with portal.transaction() as db:
        return await create_token(db, email, "export benchmark", 1)


async def run_in_process(settings: Settings, events: int, shares: int) -> tuple[str, list[str]]:
    portal = await start_portal(settings, pdf_workers=1)
    rows = []
    try:
        token = await prepare(portal, events, shares)
        for export_format in FORMATS:
            figures = await measure_in_process(portal, export_format)
            rows.append(
                f"| in-process export_chunks | {export_format} | {figures['events']:,.0f} "
                f"| {figures['seconds']:.1f} | {figures['events_per_second']:,.0f} "
                f"| {figures['events_per_cpu_second']:,.0f} | {figures['megabytes']:.0f} | - "
                f"| {figures['rss_start_mib']:.0f} → {figures['rss_peak_mib']:.0f} |"
            )
            print(rows[-1], flush=True)
    finally:
        await portal.close()
    return token, rows


def run(database_url: str, data_dir: Path, args: argparse.Namespace) -> list[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTAL_")}
    env.update(
        {
            "PORTAL_DATA_DIR": str(data_dir),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_PUBLIC_URL": "http://127.0.0.1",
            "PORTAL_PDF_WORKERS": "1",
        }
    )
    settings = Settings.from_env(env)
    token, rows = asyncio.run(run_in_process(settings, args.events, args.shares))

    with portal_server(env, data_dir / "serve.log") as (url, pid):
        for export_format in FORMATS:
            figures = measure_http(url, token, export_format, pid)
            rate = args.events / figures["streaming_seconds"]
            rows.append(
                f"| HTTP, portal serve + curl | {export_format} | {args.events:,} "
                f"| {figures['seconds']:.1f} (first byte {figures['first_byte_seconds']:.1f}) "
                f"| {rate:,.0f} after the first byte "
                f"| {args.events / figures['server_cpu_seconds']:,.0f} (server, whole request) "
                f"| {figures['megabytes']:.0f} | server "
                f"| {figures['rss_start_mib']:.0f} → {figures['rss_peak_mib']:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def print_table(database: str, rows: list[str]) -> None:
    print()
    print(f"{database}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(
        "| Path | Format | Events | Seconds | Events/s | Events/CPU s | MB | RSS of | RSS MiB start → peak |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for row in rows:
        print(row)
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events to insert")
    parser.add_argument("--shares", type=int, default=20_000, help="synthetic shares the events belong to")
    parser.add_argument("--postgresql", help="server URL to create a temporary database on")
    parser.add_argument("--skip-sqlite", action="store_true", help="measure only PostgreSQL")
    args = parser.parse_args()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"# peak RSS of this process before the runs: {peak_mib} MiB")

    with tempfile.TemporaryDirectory(prefix="export-bench-") as folder:
        if not args.skip_sqlite:
            print("SQLite", flush=True)
            rows = run(f"sqlite:///{folder}/bench.db", Path(folder) / "sqlite", args)
            print_table("SQLite", rows)

        if args.postgresql:
            name = "portal_bench_" + secrets.token_hex(4)
            with psycopg.connect(args.postgresql, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            try:
                print("PostgreSQL", flush=True)
                url = args.postgresql.rsplit("/", 1)[0] + f"/{name}"
                print_table("PostgreSQL", run(url, Path(folder) / "postgresql", args))
            finally:
                with psycopg.connect(args.postgresql, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
