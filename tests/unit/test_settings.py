"""Settings and policy files fail closed with messages that name the variable, file and key."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from portal.app import create_app
from portal.config import REPOSITORY_ROOT, ConfigError, Settings
from portal.policies import PolicyError, load_policies

CLINIC_SET = {"PORTAL_CLINIC_NAME": "Riverside Dermatology", "PORTAL_CLINIC_CONTACT": "+44 20 7946 0000"}


def test_defaults_use_embedded_database(tmp_path: Path) -> None:
    settings = Settings.from_env({"PORTAL_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'portal.db'}"
    assert settings.kek_file == tmp_path / "keys" / "keyring.json"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORTAL_DEBUG", "yes", "PORTAL_DEBUG='yes' is not a boolean"),
        ("PORTAL_TRUSTED_PROXY_HOPS", "many", "PORTAL_TRUSTED_PROXY_HOPS='many' is not a whole number"),
        ("PORTAL_TRUSTED_PROXY_HOPS", "9", "out of range"),
        ("PORTAL_PUBLIC_URL", "portal.example", "PORTAL_PUBLIC_URL='portal.example' is not an http(s) URL"),
        ("PORTAL_DATABASE_URL", "mysql://x/y", "PORTAL_DATABASE_URL uses an unsupported scheme"),
        ("PORTAL_POLICY_DIR", "/nonexistent/policies", "PORTAL_POLICY_DIR"),
        ("PORTAL_TIMEZONE", "Mars/Olympus", "PORTAL_TIMEZONE='Mars/Olympus' is not a known time zone"),
    ],
)
def test_invalid_setting_names_variable(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({"PORTAL_DATA_DIR": str(tmp_path), variable: value})


def test_postgres_url_gets_async_driver(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"PORTAL_DATA_DIR": str(tmp_path), "PORTAL_DATABASE_URL": "postgresql://u@h:5432/d"}
    )
    assert settings.database_url == "postgresql+psycopg://u@h:5432/d"


def test_shipped_policies_load() -> None:
    policies = load_policies(REPOSITORY_ROOT / "policies")
    assert {"patient", "referrer", "colleague", "insurer"} <= set(policies.profiles)
    assert policies.profiles["insurer"].allow_download is False
    assert policies.security.max_failed_attempts == 5
    assert len(policies.digest) == 64


def _policy_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", folder)
    return folder


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("expiry_days = 14", "expiry_days = 45", r"\[profiles.patient\] expiry_days = 45 is out of range"),
        (
            "expiry_days = 14",
            "expiry_days = 14\ncolour = 'red'",
            r"\[profiles.patient\] has unknown key\(s\): colour",
        ),
        (
            'pdf_password = "code"',
            'pdf_password = "secret"',
            "pdf_password = 'secret' is not one of code, none",
        ),
        ("allow_view = true", 'allow_view = "yes"', "allow_view = 'yes' must be true or false"),
        ("max_redemptions = 1\n", "", "missing the key 'max_redemptions'"),
    ],
)
def test_invalid_profile_names_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    folder = _policy_copy(tmp_path)
    profiles = folder / "profiles.toml"
    profiles.write_text(profiles.read_text().replace(old, new, 1))
    with pytest.raises(PolicyError, match=expected) as raised:
        load_policies(folder)
    assert "profiles.toml" in str(raised.value)


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    folder = _policy_copy(tmp_path)
    (folder / "security.toml").write_text("[access_code\nmax_failed_attempts = 5\n")
    with pytest.raises(PolicyError, match=r"security\.toml: invalid TOML"):
        load_policies(folder)


def test_server_processes_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    from portal.config import ConfigError
    from portal.security import hashing

    monkeypatch.setenv("PORTAL_SERVER_PROCESSES", "two")
    with pytest.raises(ConfigError, match="PORTAL_SERVER_PROCESSES='two' is invalid"):
        hashing._server_processes()
    monkeypatch.setenv("PORTAL_SERVER_PROCESSES", "2")
    assert hashing._server_processes() == 2
    monkeypatch.delenv("PORTAL_SERVER_PROCESSES")
    assert hashing._server_processes() == 1


@pytest.mark.parametrize(
    ("clinic", "warned"),
    [({}, True), ({"PORTAL_CLINIC_NAME": "Riverside Dermatology"}, True), (CLINIC_SET, False)],
)
def test_unset_clinic_details_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clinic: dict[str, str], warned: bool
) -> None:
    settings = Settings.from_env({"PORTAL_DATA_DIR": str(tmp_path / "data"), **clinic})
    with caplog.at_level(logging.WARNING, logger="portal.app"):
        create_app(settings)
    assert (
        any("PORTAL_CLINIC_NAME or PORTAL_CLINIC_CONTACT" in record.message for record in caplog.records)
        == warned
    )


@pytest.mark.parametrize(("zone", "warned"), [({}, True), ({"PORTAL_TIMEZONE": "Europe/Berlin"}, False)])
def test_utc_time_zone_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, zone: dict[str, str], warned: bool
) -> None:
    settings = Settings.from_env({"PORTAL_DATA_DIR": str(tmp_path / "data"), **zone})
    with caplog.at_level(logging.WARNING, logger="portal.app"):
        create_app(settings)
    assert any("PORTAL_TIMEZONE" in record.message for record in caplog.records) == warned
