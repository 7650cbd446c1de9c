"""The ``portal`` command as an operator runs it: users, tokens, export, start-up errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from portal.config import REPOSITORY_ROOT
from portal.staff.service import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS


def run_portal(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portal.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def add_dpo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Add the account dpo@riverside.test with the password "a long enough passphrase"."""
    return run_portal(
        ["users", "add", "dpo@riverside.test", "--role", "dpo", "--password-stdin"],
        env,
        "a long enough passphrase\n",
    )


def test_users_tokens_and_export(tmp_path: Path) -> None:
    env = {"PORTAL_DATA_DIR": str(tmp_path / "data")}

    added = add_dpo(env)
    assert added.returncode == 0, added.stderr
    assert "Added dpo@riverside.test as dpo." in added.stdout
    assert "a long enough passphrase" not in added.stdout + added.stderr

    key_file = tmp_path / "data" / "keys" / "keyring.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "portal.db").stat().st_mode & 0o777 == 0o600
    assert str(key_file) in added.stderr  # the first start says where the key file is
    assert "portal ready" not in added.stderr, "start-up lines stay out of an account command's output"

    token = run_portal(["tokens", "create", "--user", "dpo@riverside.test", "--label", "exports"], env)
    assert token.returncode == 0, token.stderr
    assert token.stdout.strip().startswith("pt_")
    assert token.stdout.strip() not in token.stderr
    assert token.stderr == "", "a second run has no warning to give"

    wide = run_portal(
        ["tokens", "create", "--user", "dpo@riverside.test", "--scope", "audit-read", "--scope", "share"], env
    )
    assert wide.returncode == 2
    assert "cannot use the scope 'share'" in wide.stderr
    assert "Traceback" not in wide.stderr

    short = run_portal(
        ["users", "add", "x@riverside.test", "--role", "clinician", "--password-stdin"], env, "short\n"
    )
    assert short.returncode == 2
    assert "too short" in short.stderr

    output = tmp_path / "events.jsonl"
    exported = run_portal(["audit", "export", "--format", "jsonl", "--output", str(output)], env)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in output.read_text().splitlines()]
    types = [event["event_type"] for event in events]
    assert "staff.created" in types
    assert "api_token.created" in types
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert "portal ready" not in exported.stderr

    verified = run_portal(["audit", "verify", "--database"], env)
    assert verified.returncode == 0, verified.stderr
    assert re.match(r"OK: \d+ events? and \d+ checkpoints? verified; \d+ events? after", verified.stdout)
    assert "1 checkpoints" not in verified.stdout
    assert "1 events" not in verified.stdout


def test_token_lifetime_matches_admin_form(tmp_path: Path) -> None:
    env = {"PORTAL_DATA_DIR": str(tmp_path / "data")}
    added = add_dpo(env)
    assert added.returncode == 0, added.stderr

    created = run_portal(["tokens", "create", "--user", "dpo@riverside.test", "--label", "exports"], env)
    assert created.returncode == 0, created.stderr
    longest = run_portal(["tokens", "create", "--user", "dpo@riverside.test", "--days", "365"], env)
    assert longest.returncode == 0, longest.stderr
    with sqlite3.connect(tmp_path / "data" / "portal.db") as database:
        rows = database.execute("SELECT label, expires_at FROM api_token ORDER BY expires_at").fetchall()
    # The stored times are UTC, with or without an offset.
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    lifetimes = {
        label: dt.datetime.fromisoformat(expires).replace(tzinfo=None) - now for label, expires in rows
    }
    assert (
        dt.timedelta(days=DEFAULT_TOKEN_DAYS - 1)
        < lifetimes["exports"]
        <= dt.timedelta(days=DEFAULT_TOKEN_DAYS)
    )
    assert dt.timedelta(days=MAX_TOKEN_DAYS - 1) < lifetimes[""] <= dt.timedelta(days=MAX_TOKEN_DAYS)

    for days in ("0", "366", "ninety"):
        refused = run_portal(["tokens", "create", "--user", "dpo@riverside.test", "--days", days], env)
        assert refused.returncode == 2, days
        assert f"invalid value '{days}': give a whole number of days from 1 to 365" in refused.stderr

    usage = run_portal(["tokens", "create", "--help"], env)
    assert "days until the token expires, 1 to 365 (default 90)" in " ".join(usage.stdout.split())


def test_invalid_policy_stops_start(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", policies)
    profiles = policies / "profiles.toml"
    profiles.write_text(profiles.read_text().replace("expiry_days = 14", "expiry_days = 90", 1))

    result = run_portal(
        ["serve", "--port", "1"],
        {"PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_POLICY_DIR": str(policies)},
    )
    assert result.returncode == 2
    assert "profiles.toml" in result.stderr
    assert "expiry_days = 90 is out of range" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_setting_stops_start(tmp_path: Path) -> None:
    result = run_portal(["serve"], {"PORTAL_DATA_DIR": str(tmp_path), "PORTAL_DEBUG": "maybe"})
    assert result.returncode == 2
    assert "PORTAL_DEBUG='maybe' is not a boolean. Set it to true or false." in result.stderr
    assert "Traceback" not in result.stderr
