"""Real portal processes on loopback sharing one PostgreSQL database, for load and fault tests.

Each ``PortalServer`` is one ``portal serve`` process in its own process group, so a test can stop it, or
kill it with SIGKILL together with its PDF worker processes, and start it again on the same port. A
``Deployment`` holds what the processes share: the database, the key file and the policy folder. Every
process gets its own data folder, so nothing but PostgreSQL and the key file connects them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from portal.config import REPOSITORY_ROOT

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
CLI_TIMEOUT_SECONDS = 60.0
STAFF_PASSWORD = "load test passphrase, long enough"


class ServerFailed(RuntimeError):
    """A portal process exited early or did not answer in time; the message quotes its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def client_address(index: int) -> str:
    """Return the ``index``-th address of 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks."""
    if not 0 <= index < 512 * 250:
        raise ValueError(f"client index {index} is outside 0..{512 * 250 - 1}; use fewer simulated clients")
    network, host = divmod(index, 250)
    return f"198.{18 + network // 256}.{network % 256}.{host + 1}"


def plain_postgres_url(url: str) -> str:
    """Return ``url`` in the form psycopg accepts (``postgresql://``)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def temporary_database(admin_url: str, prefix: str = "portal_load_") -> Iterator[str]:
    """Create an empty database on the server of ``admin_url``, yield its URL and drop it afterwards."""
    admin = plain_postgres_url(admin_url)
    name = prefix + secrets.token_hex(6)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PortalServer:
    """One ``portal serve`` process on 127.0.0.1, started and stopped as a process group."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    workers: int = 1
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until ``GET /access`` answers 200."""
        command = [
            sys.executable,
            "-m",
            "portal.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        with self.log_path.open("ab") as log:
            # A new session makes the server the leader of its own process group, so its PDF worker
            # processes and uvicorn workers can be signalled together through the server's pid.
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=REPOSITORY_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/access", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise ServerFailed(f"{self.name} did not answer within {READY_TIMEOUT_SECONDS} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """Send SIGKILL to the server's process group (server, uvicorn workers, PDF workers)."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            self.process = None

    def stop(self) -> None:
        """Ask the process group to shut down gracefully; kill it if it takes too long."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.process = None

    def _signal_group(self, signal_number: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal_number)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Deployment:
    """Portal processes that share one PostgreSQL database, key file and policy folder."""

    root: Path
    database_url: str
    policy_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    servers: list[PortalServer] = field(default_factory=list)

    @property
    def kek_file(self) -> Path:
        return self.root / "keys" / "keyring.json"

    def environment(self, data_dir: Path) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PORTAL_") or key == "PORTAL_CORPUS_DIR"
        }
        env.update(
            {
                "PORTAL_DATA_DIR": str(data_dir),
                "PORTAL_DATABASE_URL": self.database_url,
                "PORTAL_KEK_FILE": str(self.kek_file),
                "PORTAL_BLOB_STORE": "database",
                "PORTAL_PUBLIC_URL": "http://127.0.0.1",
                "PORTAL_PDF_WORKERS": "1",
                # Tests send each simulated recipient's address in X-Forwarded-For, as a TLS proxy would,
                # so the per-address attempt throttle sees many clients instead of one loopback address.
                "PORTAL_TRUSTED_PROXY_HOPS": "1",
                "PORTAL_CLINIC_NAME": "Riverside Dermatology",
            }
        )
        if self.policy_dir is not None:
            env["PORTAL_POLICY_DIR"] = str(self.policy_dir)
        env.update(self.extra_env)
        return env

    def server(self, name: str, *, workers: int = 1, port: int | None = None) -> PortalServer:
        """Create (not start) a server with its own data folder and log file."""
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        server = PortalServer(
            name=name,
            port=port or free_port(),
            env=self.environment(data_dir),
            log_path=self.root / f"{name}.log",
            workers=workers,
        )
        self.servers.append(server)
        return server

    def cli(self, *arguments: str, stdin: str = "") -> str:
        """Run one ``portal`` command against the shared database and return its standard output."""
        data_dir = self.root / "cli"
        data_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "portal.cli", *arguments],
            env=self.environment(data_dir),
            cwd=REPOSITORY_ROOT,
            input=stdin.encode(),
            capture_output=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise ServerFailed(
                f"portal {arguments[0]} failed: {result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout.decode()

    def clinician_token(self, email: str) -> dict[str, str]:
        """Add a clinician account and return an Authorization header with a new API token for it."""
        self.cli(
            "users", "add", email, "--role", "clinician", "--password-stdin", stdin=STAFF_PASSWORD + "\n"
        )
        token = self.cli("tokens", "create", "--user", email, "--label", "load test").strip().splitlines()[-1]
        return {"Authorization": f"Bearer {token}"}

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
