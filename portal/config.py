"""Settings read from the environment, failing closed.

Every setting has a production-safe default or stops start-up with a message that names the variable and
the fix. Secrets are never read from plain environment variables when a ``*_FILE`` variant exists.
"""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable and what to set."""


def _env_bool(environ: dict[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() == "true":
        return True
    if raw.lower() == "false":
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean. Set it to true or false.")


def _env_int(environ: dict[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number. Set it to a number such as {default}."
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} is out of range. Set it between {minimum} and {maximum}.")
    return value


def _env_url(environ: dict[str, str], name: str, default: str) -> str:
    raw = environ.get(name) or default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL. Set it to the address recipients open.")
    return raw.rstrip("/")


# The clinic name pages and slips show until PORTAL_CLINIC_NAME is set.
DEFAULT_CLINIC_NAME = "Clinic"


@dataclass(frozen=True)
class Settings:
    """Runtime settings of one portal process."""

    data_dir: Path
    database_url: str
    kek_file: Path
    policy_dir: Path
    public_url: str
    clinic_name: str
    clinic_contact: str
    trusted_proxy_hops: int = 0
    pdf_workers: int = 2
    debug: bool = False
    checkpoint_dir: Path | None = None
    blob_store: str = "filesystem"
    checkpoint_minutes: int = 10
    kek_env: str | None = field(default=None, repr=False)
    # E-mail to a share's creator when the share is first opened or locks; off unless PORTAL_NOTIFY_EMAILS=true.
    notify_emails: bool = False
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    # The clinic's time zone (an IANA name): recipients' pages and slips show times in it.
    timezone: str = "UTC"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = dict(os.environ if environ is None else environ)

        data_dir = Path(env.get("PORTAL_DATA_DIR") or "./var").resolve()
        database_url = env.get("PORTAL_DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / 'portal.db'}"
        database_url = normalise_database_url(database_url)

        kek_env = env.get("PORTAL_KEK") or None
        kek_file = Path(env.get("PORTAL_KEK_FILE") or data_dir / "keys" / "keyring.json")

        policy_dir = Path(env.get("PORTAL_POLICY_DIR") or REPOSITORY_ROOT / "policies").resolve()
        if not policy_dir.is_dir():
            raise ConfigError(
                f"PORTAL_POLICY_DIR={str(policy_dir)!r} is not a folder. Point it at the policies/ folder."
            )

        checkpoint_raw = env.get("PORTAL_CHECKPOINT_DIR")
        blob_store = env.get("PORTAL_BLOB_STORE") or "filesystem"
        if blob_store not in ("filesystem", "database"):
            raise ConfigError(
                f"PORTAL_BLOB_STORE={blob_store!r} is unknown. Set it to filesystem (one machine) or database "
                "(several machines sharing one PostgreSQL)."
            )
        cpus = os.cpu_count() or 1
        timezone = env.get("PORTAL_TIMEZONE") or "UTC"
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"PORTAL_TIMEZONE={timezone!r} is not a known time zone. Use a name such as Europe/Berlin, "
                "or UTC."
            ) from None

        return cls(
            data_dir=data_dir,
            database_url=database_url,
            kek_file=kek_file,
            kek_env=kek_env,
            policy_dir=policy_dir,
            public_url=_env_url(env, "PORTAL_PUBLIC_URL", "http://127.0.0.1:8000"),
            clinic_name=env.get("PORTAL_CLINIC_NAME") or DEFAULT_CLINIC_NAME,
            timezone=timezone,
            clinic_contact=env.get("PORTAL_CLINIC_CONTACT") or "",
            trusted_proxy_hops=_env_int(env, "PORTAL_TRUSTED_PROXY_HOPS", 0, 0, 5),
            pdf_workers=_env_int(env, "PORTAL_PDF_WORKERS", min(2, cpus), 1, 64),
            debug=_env_bool(env, "PORTAL_DEBUG", False),
            checkpoint_dir=Path(checkpoint_raw).resolve() if checkpoint_raw else None,
            blob_store=blob_store,
            **_smtp_settings(env)._asdict(),
        )


class _SmtpSettings(NamedTuple):
    notify_emails: bool
    smtp_host: str
    smtp_port: int
    smtp_from: str


def _smtp_settings(env: dict[str, str]) -> _SmtpSettings:
    """Read the notification settings; enabling notifications without a server or sender stops start-up."""
    enabled = _env_bool(env, "PORTAL_NOTIFY_EMAILS", False)
    host = (env.get("PORTAL_SMTP_HOST") or "").strip()
    sender = (env.get("PORTAL_SMTP_FROM") or "").strip()
    port = _env_int(env, "PORTAL_SMTP_PORT", 25, 1, 65535)
    if not enabled:
        return _SmtpSettings(False, host, port, sender)

    if not host or any(character in host for character in " /\r\n"):
        raise ConfigError(
            f"PORTAL_SMTP_HOST={host!r} is missing or invalid while PORTAL_NOTIFY_EMAILS=true. "
            "Set it to the mail relay's host name or address, or set PORTAL_NOTIFY_EMAILS=false."
        )
    if sender.count("@") != 1 or any(character in sender for character in " <>,;\r\n"):
        raise ConfigError(
            f"PORTAL_SMTP_FROM={sender!r} is not a plain e-mail address. Set it to the sender, e.g. portal@clinic.example."
        )
    return _SmtpSettings(True, host, port, sender)


def normalise_database_url(url: str) -> str:
    """Select the async driver for the URL forms an operator is likely to write."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError(
        f"PORTAL_DATABASE_URL uses an unsupported scheme ({url.split(':', 1)[0]!r}). "
        "Use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE."
    )
