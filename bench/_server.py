"""Shared setup of the HTTP benchmarks: a portal on PostgreSQL, a bench profile, nginx and wrk.

The portal processes come from ``tests.load.servers``, the same launcher the load tests use. Everything
listens on 127.0.0.1 only. Run the benchmarks from the repository root, for example
``.venv/bin/python -m bench.http_download``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from portal.config import REPOSITORY_ROOT
from tests.load.recipient import redeem
from tests.load.servers import Deployment, free_port, temporary_database

NGINX = "/usr/sbin/nginx"
WRK = "wrk"
WRK_TIMEOUT_MARGIN_SECONDS = 60
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The bench profile copies the patient profile with the highest allowances the policy loader accepts.
BENCH_MAX_DOWNLOADS = 20
BENCH_MAX_REDEMPTIONS = 10
BENCH_OVERRIDES: dict[str, object] = {
    "label": "Benchmark",
    "description": "Many downloads per share, for benchmarks only.",
    "expiry_days": 1,
    "max_redemptions": BENCH_MAX_REDEMPTIONS,
    "max_downloads": BENCH_MAX_DOWNLOADS,
}


def bench_policy_dir(root: Path) -> Path:
    """Copy the repository's policies to ``root/policies`` and add the ``bench`` profile."""
    target = root / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", target)
    with (target / "profiles.toml").open("rb") as handle:
        patient = tomllib.load(handle)["profiles"]["patient"]

    lines = ["", "[profiles.bench]"]
    for key, value in {**patient, **BENCH_OVERRIDES}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    with (target / "profiles.toml").open("a", encoding="utf-8") as profiles:
        profiles.write("\n".join(lines) + "\n")
    return target


@contextlib.contextmanager
def portal_deployment(root: Path, admin_url: str, **extra_env: str) -> Iterator[Deployment]:
    """Yield a deployment with the bench profile on a fresh database, dropped with its servers afterwards."""
    with temporary_database(admin_url, prefix="portal_bench_") as database_url:
        deployment = Deployment(
            root=root, database_url=database_url, policy_dir=bench_policy_dir(root), extra_env=dict(extra_env)
        )
        try:
            yield deployment
        finally:
            deployment.stop_all()


async def upload(
    http: httpx.AsyncClient, base_url: str, headers: dict[str, str], pdf: bytes, title: str
) -> str:
    answer = await http.post(
        base_url + "/api/v1/documents",
        headers=headers,
        files={"file": ("report.pdf", pdf, "application/pdf")},
        data={"title": title, "patient_ref": "PAT-BENCH"},
    )
    if answer.status_code != 201:
        raise RuntimeError(f"upload of {title!r} failed with HTTP {answer.status_code}: {answer.text[:500]}")
    return str(answer.json()["id"])


async def share(
    http: httpx.AsyncClient, base_url: str, headers: dict[str, str], document_ids: list[str]
) -> str:
    """Create a share with the bench profile and return its access code."""
    answer = await http.post(
        base_url + "/api/v1/shares",
        headers=headers,
        json={
            "document_ids": document_ids,
            "profile": "bench",
            "recipient_name": "Bench Recipient",
            "purpose": "Benchmark",
        },
    )
    if answer.status_code != 201:
        raise RuntimeError(
            f"creating a bench share failed with HTTP {answer.status_code}: {answer.text[:500]}"
        )
    return str(answer.json()["access_code"])


async def session_for(http: httpx.AsyncClient, base_url: str, code: str, address: str) -> str:
    result = await redeem(http, base_url, code, forwarded_for=address)
    if result.status != 303 or result.session_cookie is None:
        raise RuntimeError(f"redeeming a bench code failed with HTTP {result.status}")
    return result.session_cookie


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: int  # connect, read, write and timeout errors plus responses with status >= 400
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used during a run, split by who used them, read from /proc (Linux only)."""

    portal_main: float  # main threads of the server's processes: the event loops of the uvicorn workers
    portal_threads: float  # every other thread under the server, e.g. the argon2 verifications
    postgres: float  # PostgreSQL backends connected to the bench database
    children: float  # children of this process that exited during the run, e.g. wrk
    machine_busy: float  # every process on the machine, including the ones above
    machine_total: float  # busy plus idle, over all cores

    @property
    def portal(self) -> float:
        return self.portal_main + self.portal_threads

    @property
    def others(self) -> float:
        """CPU seconds used by processes outside the benchmark: other work on a shared machine."""
        return max(self.machine_busy - self.portal - self.postgres - self.children, 0.0)


@dataclass(frozen=True)
class CpuSnapshot:
    threads: dict[tuple[int, int], float]  # (pid, thread id) -> CPU seconds, for the server's process tree
    backends: dict[int, float]  # pid -> CPU seconds, for PostgreSQL backends of the bench database
    children: float
    machine_busy: float
    machine_total: float

    def until(self, later: CpuSnapshot) -> CpuUse:
        """Return the CPU used between this snapshot and ``later``.

        Threads and backends count from zero if they started in between; one that ended in between is
        missed, so PostgreSQL backends that the connection pool closed during the run are undercounted.
        """
        main = other = 0.0
        for (pid, thread), seconds in later.threads.items():
            used = seconds - self.threads.get((pid, thread), 0.0)
            if pid == thread:
                main += used
            else:
                other += used
        postgres = sum(seconds - self.backends.get(pid, 0.0) for pid, seconds in later.backends.items())
        return CpuUse(
            portal_main=main,
            portal_threads=other,
            postgres=postgres,
            children=later.children - self.children,
            machine_busy=later.machine_busy - self.machine_busy,
            machine_total=later.machine_total - self.machine_total,
        )


def _cpu_seconds(stat: str) -> tuple[int, float]:
    """Return (parent pid, user + system CPU seconds) from the text of a /proc stat file."""
    # The command name in parentheses may contain spaces; the fields after it are fixed.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return None  # the process or thread ended while it was read


def cpu_snapshot(server_pid: int, database_name: str) -> CpuSnapshot:
    """Read the CPU time of the portal's threads, its PostgreSQL backends, waited children and the machine."""
    parents: dict[int, int] = {}
    backends: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        stat = _read(f"/proc/{entry}/stat") if entry.isdigit() else None
        if stat is None:
            continue
        parents[int(entry)], seconds = _cpu_seconds(stat)
        # A backend's command line is "postgres: <user> <database> <client> <state>".
        if f" {database_name} " in (_read(f"/proc/{entry}/cmdline") or ""):
            backends[int(entry)] = seconds

    tree = {server_pid}
    while added := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= added
    threads = {}
    for pid in tree:
        for thread in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
            stat = _read(f"/proc/{pid}/task/{thread}/stat")
            if stat is not None:
                threads[(pid, int(thread))] = _cpu_seconds(stat)[1]

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/stat", encoding="utf-8") as handle:
        counters = [int(value) for value in handle.readline().split()[1:8]]
    idle = counters[3] + counters[4]  # idle and iowait
    return CpuSnapshot(
        threads=threads,
        backends=backends,
        children=children.ru_utime + children.ru_stime,
        machine_busy=(sum(counters) - idle) / _CLOCK_TICKS,
        machine_total=sum(counters) / _CLOCK_TICKS,
    )


# A Lua ``done`` hook that prints the summary as one JSON line, so the script need not parse wrk's text.
_SUMMARY_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    script: str = "",
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout_seconds: int = 120,
) -> WrkResult:
    """Run wrk against ``url`` and return its summary. ``script`` is Lua code run before the summary hook."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, encoding="utf-8") as handle:
        handle.write(script + _SUMMARY_LUA)
    script_path = Path(handle.name)
    command = [
        WRK,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout_seconds}s",
        "--latency",
        "-s",
        str(script_path),
    ]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    try:
        output = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + WRK_TIMEOUT_MARGIN_SECONDS,
            env={**os.environ, **(env or {})},
        ).stdout
    finally:
        script_path.unlink(missing_ok=True)

    line = next(text for text in output.splitlines() if text.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=data["errors"],
        latency_p50_ms=data["p50_us"] / 1000,
        latency_p99_ms=data["p99_us"] / 1000,
    )


NGINX_CONFIG = """
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    default_type application/pdf;
    server {{
        listen 127.0.0.1:{port};
        root {files};
    }}
}}
"""


@contextlib.contextmanager
def nginx_serving(files: Path, workers: int) -> Iterator[str]:
    """Serve ``files`` statically with nginx on a free 127.0.0.1 port; yield the base URL."""
    root = files.parent / "nginx"
    root.mkdir()
    port = free_port()
    config = root / "nginx.conf"
    config.write_text(
        NGINX_CONFIG.format(workers=workers, root=root, port=port, files=files), encoding="utf-8"
    )
    # Run as root, nginx drops its workers to "nobody", which must be able to read the files.
    for path in (files.parent, files, *files.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(config), "-e", str(root / "error.log"), "-g", "daemon off;"],
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"nginx did not answer at {url} within {timeout_seconds} s")
