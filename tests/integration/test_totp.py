"""TOTP second factor: enrolment, two-step sign-in with fresh session ids, replay, recovery codes, policy."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.app import create_app
from portal.config import REPOSITORY_ROOT, Settings
from portal.models import AccessEvent, RecoveryCode, StaffUser
from portal.security import totp
from portal.security.sessions import STAFF_COOKIE
from tests.conftest import BASE_URL, csrf_from
from tests.helpers import CLINICIAN, add_staff, portal_of, sign_in

HOST = BASE_URL.split("//")[1]


async def _enrol(client: AsyncTestClient[Litestar]) -> tuple[str, list[str]]:
    """Set up TOTP for the signed-in user; return the secret and the recovery codes shown."""
    page = await client.get("/staff/totp")
    assert page.status_code == 200
    assert "<svg" in page.text
    assert "style=" not in page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
    key = re.search(r'data-testid="totp-key">([A-Z2-7 ]+)<', page.text)
    pending = re.search(r'name="pending" value="([^"]+)"', page.text)
    assert key and pending
    secret = key.group(1).replace(" ", "")

    wrong = await client.post(
        "/staff/totp",
        data={"_csrf_token": csrf_from(page.text), "pending": pending.group(1), "code": "12345"},
    )
    assert wrong.status_code == 400
    assert "does not match" in wrong.text
    confirmed = await client.post(
        "/staff/totp",
        data={
            "_csrf_token": csrf_from(page.text),
            "pending": pending.group(1),
            "code": pyotp.TOTP(secret).now(),
        },
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = re.findall(r"<li><code>([0-9A-Z]{5}-[0-9A-Z]{5})</code></li>", confirmed.text)
    assert len(codes) == 10
    return secret, codes


async def _second_step(client: AsyncTestClient[Litestar], code: str) -> Any:
    page = await client.get("/staff/login/verify")
    assert page.status_code == 200
    return await client.post(
        "/staff/login/verify",
        data={"_csrf_token": csrf_from(page.text), "code": code},
        follow_redirects=False,
    )


async def _failure_reasons(app: Litestar) -> list[str]:
    async with portal_of(app).transaction() as db:
        rows = (
            await db.scalars(
                select(AccessEvent.details).where(AccessEvent.event_type == "staff.login.failed")
            )
        ).all()
    return [json.loads(row)["reason"] for row in rows]


def _next_step_code(secret: str) -> str:
    # Enrolment used the current step; the code of the next step is within the accepted drift.
    return pyotp.TOTP(secret).at(time.time() + totp.STEP_SECONDS)


async def test_two_step_sign_in(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    secret, _codes = await _enrol(client)
    await client.post("/staff/logout", data={"_csrf_token": csrf_from((await client.get("/staff")).text)})

    password_step = await sign_in(client, CLINICIAN)
    assert password_step.status_code == 303
    assert password_step.headers["location"] == "/staff/login/verify"
    pending_id = password_step.cookies.get(STAFF_COOKIE)
    assert pending_id
    # The password step alone opens no staff page.
    assert (await client.get("/staff", follow_redirects=False)).status_code == 303

    client.cookies.set(STAFF_COOKIE, pending_id, domain=HOST)
    code_step = await _second_step(client, _next_step_code(secret))
    assert code_step.status_code == 303
    assert code_step.headers["location"] == "/staff"
    session_id = code_step.cookies.get(STAFF_COOKIE)
    assert session_id and session_id != pending_id
    assert (await client.get("/staff")).status_code == 200

    client.cookies.delete(STAFF_COOKIE)
    client.cookies.set(STAFF_COOKIE, pending_id, domain=HOST)
    assert (await client.get("/staff/login/verify", follow_redirects=False)).status_code == 303

    async with portal_of(app).transaction() as db:
        steps = (
            await db.scalars(select(AccessEvent.details).where(AccessEvent.event_type == "staff.login"))
        ).all()
    assert any('"second_factor":"pending"' in step for step in steps)
    assert any('"method":"totp"' in step for step in steps)

    async with portal_of(app).transaction() as db:
        enrolments = (
            await db.scalars(select(AccessEvent.seq).where(AccessEvent.event_type == "staff.totp_enrolled"))
        ).all()
    assert len(enrolments) == 1


async def test_totp_replay_rejected(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    secret, _codes = await _enrol(client)
    code = _next_step_code(secret)

    client.cookies.clear()
    await sign_in(client, CLINICIAN)
    assert (await _second_step(client, code)).status_code == 303

    client.cookies.clear()
    await sign_in(client, CLINICIAN)
    replay = await _second_step(client, code)
    assert replay.status_code == 400
    assert "used already" in replay.text
    assert await _failure_reasons(app) == ["replayed"]


async def test_recovery_code_single_use(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    _secret, codes = await _enrol(client)

    client.cookies.clear()
    await sign_in(client, CLINICIAN)
    assert (await _second_step(client, codes[3].lower().replace("-", " "))).status_code == 303

    client.cookies.clear()
    await sign_in(client, CLINICIAN)
    assert (await _second_step(client, codes[3])).status_code == 400
    assert (await _second_step(client, "ZZZZZ-ZZZZZ")).status_code == 400
    assert await _failure_reasons(app) == ["wrong_code", "wrong_code"]

    async with portal_of(app).transaction() as db:
        hashes = (await db.scalars(select(RecoveryCode.code_hash))).all()
    assert len(hashes) == 10
    assert all(hash_.startswith("$argon2id$") for hash_ in hashes)
    assert not any(code in hash_ for code in codes for hash_ in hashes)


async def test_secret_sealed_at_rest(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await add_staff(app, CLINICIAN, "clinician")
    await sign_in(client, CLINICIAN)
    secret, _codes = await _enrol(client)

    async with portal_of(app).transaction() as db:
        user = await db.scalar(select(StaffUser).where(StaffUser.email == CLINICIAN))
    assert user is not None and user.totp_secret_sealed is not None
    assert secret.encode() not in user.totp_secret_sealed
    key = totp.sealing_key(portal_of(app).keyring.secret("session"))
    assert totp.unseal(key, user.id, user.totp_secret_sealed) == secret
    with pytest.raises(totp.SealedSecretInvalid):
        totp.unseal(key, uuid.uuid4(), user.totp_secret_sealed)

    enrolled_page = await client.get("/staff/totp")
    assert "is on" in enrolled_page.text
    assert "Unused recovery codes: 10" in enrolled_page.text


def test_matching_step_window() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.0
    step = int(now) // totp.STEP_SECONDS
    code = pyotp.TOTP(secret).at(now)

    assert totp.matching_step(secret, code, None, now) == step
    assert totp.matching_step(secret, code, step, now) is None
    assert totp.matching_step(secret, code, step - 1, now) == step
    assert totp.matching_step(secret, pyotp.TOTP(secret).at(now - 90), None, now) is None
    assert totp.matching_step(secret, "12345", None, now) is None


def test_pending_secret_expires() -> None:
    key = totp.sealing_key(b"k" * 32)
    user_id = uuid.uuid4()
    sealed = totp.seal_pending(key, user_id, "SECRET", now=1_000.0)
    assert totp.unseal_pending(key, user_id, sealed, now=1_000.0 + 60) == "SECRET"
    with pytest.raises(totp.SealedSecretInvalid):
        totp.unseal_pending(key, user_id, sealed, now=1_000.0 + totp.PENDING_SECRET_SECONDS + 1)
    with pytest.raises(totp.SealedSecretInvalid):
        totp.unseal_pending(key, uuid.uuid4(), sealed, now=1_000.0)


def strict_settings(tmp_path: Path, database_url: str) -> Settings:
    """Return settings whose policy requires TOTP for every staff member."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPOSITORY_ROOT / "policies", policy_dir)
    security = policy_dir / "security.toml"
    text = security.read_text()
    assert "require_totp = false" in text
    security.write_text(text.replace("require_totp = false", "require_totp = true"))

    return Settings.from_env(
        {
            "PORTAL_DATA_DIR": str(tmp_path / "data"),
            "PORTAL_DATABASE_URL": database_url,
            "PORTAL_POLICY_DIR": str(policy_dir),
            "PORTAL_PUBLIC_URL": BASE_URL,
        }
    )


@pytest.fixture
async def strict_client(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[Litestar, AsyncTestClient[Litestar]]]:
    """A portal whose policy requires TOTP for every staff member."""
    app = create_app(strict_settings(tmp_path, database_url), pdf_workers=1)
    async with AsyncTestClient(app=app, base_url=BASE_URL) as test_client:
        yield app, test_client


async def test_required_totp_enrols_first(strict_client: tuple[Litestar, AsyncTestClient[Litestar]]) -> None:
    app, client = strict_client
    await add_staff(app, CLINICIAN, "clinician")

    answer = await sign_in(client, CLINICIAN)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/totp"
    enrol_id = answer.cookies.get(STAFF_COOKIE)
    assert (await client.get("/staff", follow_redirects=False)).status_code == 303

    client.cookies.set(STAFF_COOKIE, enrol_id, domain=HOST)
    page = await client.get("/staff/totp")
    assert "requires two-step sign in" in page.text
    _secret, _codes = await _enrol(client)
    session_id = client.cookies.get(STAFF_COOKIE)
    assert session_id and session_id != enrol_id
    assert (await client.get("/staff")).status_code == 200


def test_password_only_sign_in_warned(
    tmp_path: Path, database_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    warning = "Staff sign in with a password alone"

    with caplog.at_level(logging.WARNING, logger="portal.app"):
        create_app(settings, pdf_workers=1)
    assert warning in caplog.text
    assert str(settings.policy_dir / "security.toml") in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="portal.app"):
        create_app(strict_settings(tmp_path / "strict", database_url), pdf_workers=1)
    assert warning not in caplog.text
