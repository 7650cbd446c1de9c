"""Recipient profiles and security parameters from policies/*.toml, validated strictly.

Unknown keys, missing keys, wrong types and values outside the safe ranges stop start-up with a message
that names the file, the key and the reason.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portal.i18n import N_, gettext

MAX_EXPIRY_DAYS = 30

# The labels and descriptions of the profiles in the shipped policies/profiles.toml, so that the catalogue
# carries their translations. A unit test keeps this list equal to the file.
SHIPPED_PROFILE_TEXTS = (
    N_("Patient"),
    N_("The patient receives their own report at home."),
    N_("Referring GP"),
    N_("The referring doctor downloads the report for the patient's record."),
    N_("Colleague (second opinion)"),
    N_("A colleague looks at the report for a second opinion."),
    N_("Insurer"),
    N_("An insurer views the report to answer a claim; it cannot be downloaded."),
    N_("Patient, with date-of-birth check"),
    N_("The patient receives their report at home and also enters their date of birth."),
)


class PolicyError(Exception):
    """A policy file is missing or invalid."""


@dataclass(frozen=True)
class Profile:
    name: str
    label: str
    description: str
    expiry_days: int
    max_redemptions: int
    allow_download: bool
    max_downloads: int
    allow_view: bool
    pdf_password: str  # "code" | "none"
    allow_print: bool
    allow_copy: bool
    second_factor: str  # "none" | "date_of_birth"
    requires_approval: bool


@dataclass(frozen=True)
class SecurityPolicy:
    max_failed_attempts: int
    attempts_per_ip_per_minute: int
    recipient_idle_minutes: int
    recipient_absolute_minutes: int
    staff_idle_minutes: int
    staff_absolute_hours: int
    staff_require_totp: bool  # every staff member must enrol a TOTP second factor before using the portal
    upload_max_body_bytes: int
    upload_max_pages: int
    upload_max_objects: int
    upload_max_decoded_bytes: int
    upload_max_image_pixels: int
    worker_timeout_seconds: int
    worker_memory_bytes: int
    ip_prefix_v4: int
    ip_prefix_v6: int


@dataclass(frozen=True)
class Policies:
    profiles: dict[str, Profile]
    security: SecurityPolicy
    digest: str  # SHA-256 over the policy files in force, recorded in the access log at start-up


class TableReader:
    """Type-checked access to one TOML table, remembering which keys were read."""

    def __init__(self, file: Path, path: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise PolicyError(f"{file}: [{path}] must be a table.")
        self.file, self.path, self.table = file, path, table
        self.seen: set[str] = set()

    def _get(self, key: str) -> Any:
        if key not in self.table:
            raise PolicyError(f"{self.file}: [{self.path}] is missing the key {key!r}.")
        self.seen.add(key)
        return self.table[key]

    def integer(self, key: str, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(f"{self.file}: [{self.path}] {key} = {value!r} must be a whole number.")
        if not minimum <= value <= maximum:
            raise PolicyError(
                f"{self.file}: [{self.path}] {key} = {value} is out of range; use {minimum} to {maximum}."
            )
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise PolicyError(f"{self.file}: [{self.path}] {key} = {value!r} must be true or false.")
        return value

    def text(self, key: str, choices: tuple[str, ...] | None = None, max_length: int = 200) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise PolicyError(
                f"{self.file}: [{self.path}] {key} must be non-empty text of at most {max_length} characters."
            )
        if choices is not None and value not in choices:
            raise PolicyError(
                f"{self.file}: [{self.path}] {key} = {value!r} is not one of {', '.join(choices)}."
            )
        return value

    def table_at(self, key: str) -> TableReader:
        return TableReader(self.file, f"{self.path}.{key}" if self.path else key, self._get(key))

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise PolicyError(f"{self.file}: [{self.path}] has unknown key(s): {', '.join(unknown)}.")


def load_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise PolicyError(
            f"{file}: policy file not found. Restore it from the repository's policies/."
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"{file}: invalid TOML ({error}).") from None


def _parse_profile(file: Path, name: str, reader: TableReader) -> Profile:
    profile = Profile(
        name=name,
        label=reader.text("label", max_length=60),
        description=reader.text("description"),
        expiry_days=reader.integer("expiry_days", 1, MAX_EXPIRY_DAYS),
        max_redemptions=reader.integer("max_redemptions", 1, 10),
        allow_download=reader.boolean("allow_download"),
        max_downloads=reader.integer("max_downloads", 0, 20),
        allow_view=reader.boolean("allow_view"),
        pdf_password=reader.text("pdf_password", choices=("code", "none")),
        allow_print=reader.boolean("allow_print"),
        allow_copy=reader.boolean("allow_copy"),
        second_factor=reader.text("second_factor", choices=("none", "date_of_birth")),
        requires_approval=reader.boolean("requires_approval"),
    )
    reader.finish()

    if profile.allow_download and profile.max_downloads == 0:
        raise PolicyError(f"{file}: [profiles.{name}] allows downloads but max_downloads is 0; raise it.")
    if not profile.allow_download and not profile.allow_view:
        raise PolicyError(f"{file}: [profiles.{name}] allows neither view nor download; allow one.")
    return profile


def _parse_profiles(file: Path) -> dict[str, Profile]:
    root = TableReader(file, "", load_toml(file))
    profiles_table = root.table_at("profiles")
    root.finish()

    profiles: dict[str, Profile] = {}
    for name in list(profiles_table.table):
        if not name.isidentifier() or len(name) > 32:
            raise PolicyError(f"{file}: profile name {name!r} must be a short identifier such as 'patient'.")
        profiles[name] = _parse_profile(file, name, profiles_table.table_at(name))
    profiles_table.finish()

    if not profiles:
        raise PolicyError(f"{file}: no profiles defined; define at least one [profiles.NAME] table.")
    return profiles


def _parse_security(file: Path) -> SecurityPolicy:
    root = TableReader(file, "", load_toml(file))
    code = root.table_at("access_code")
    recipient = root.table_at("recipient_session")
    staff = root.table_at("staff_session")
    upload = root.table_at("upload")
    log = root.table_at("log")

    policy = SecurityPolicy(
        max_failed_attempts=code.integer("max_failed_attempts", 1, 10),
        attempts_per_ip_per_minute=code.integer("attempts_per_ip_per_minute", 1, 1000),
        recipient_idle_minutes=recipient.integer("idle_minutes", 1, 60),
        recipient_absolute_minutes=recipient.integer("absolute_minutes", 5, 240),
        staff_idle_minutes=staff.integer("idle_minutes", 5, 120),
        staff_absolute_hours=staff.integer("absolute_hours", 1, 24),
        staff_require_totp=staff.boolean("require_totp"),
        upload_max_body_bytes=upload.integer("max_body_bytes", 1_000_000, 200_000_000),
        upload_max_pages=upload.integer("max_pages", 1, 5000),
        upload_max_objects=upload.integer("max_objects", 100, 1_000_000),
        upload_max_decoded_bytes=upload.integer("max_decoded_bytes", 1_000_000, 2**31),
        upload_max_image_pixels=upload.integer("max_image_pixels", 1_000_000, 200_000_000),
        worker_timeout_seconds=upload.integer("worker_timeout_seconds", 5, 600),
        worker_memory_bytes=upload.integer("worker_memory_bytes", 256 * 2**20, 8 * 2**30),
        ip_prefix_v4=log.integer("ip_prefix_v4", 0, 32),
        ip_prefix_v6=log.integer("ip_prefix_v6", 0, 128),
    )
    for reader in (code, recipient, staff, upload, log, root):
        reader.finish()
    return policy


def load_policies(policy_dir: Path) -> Policies:
    """Load and validate every policy file in ``policy_dir``."""
    files = [policy_dir / "profiles.toml", policy_dir / "security.toml"]
    profiles = _parse_profiles(files[0])
    security = _parse_security(files[1])

    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return Policies(profiles=profiles, security=security, digest=digest.hexdigest())


def profile_label(policies: Policies, name: str) -> str:
    """Return the label of profile ``name`` in the request's language, or ``name`` for a removed profile.

    A shipped label comes from the catalogue; a label a clinic wrote itself is returned as written.
    """
    profile = policies.profiles.get(name)
    return gettext(profile.label) if profile is not None else name
