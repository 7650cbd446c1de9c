"""Access codes, passwords and recipient names never reach the application log or the access log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.config import Settings
from portal.security import codes
from tests.conftest import PASSWORD
from tests.helpers import DPO, issue_share, redeem, sign_in, token_for

CANARY_NAME = "Canarina Zzyzx-Óðinsdóttir"


async def test_secrets_absent_from_logs(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    _headers, share = await issue_share(app, client, recipient_name=CANARY_NAME)
    code = share["access_code"]
    wrong = codes.display(codes.generate_code())
    await redeem(client, wrong)
    await sign_in(client, "clinician@riverside.test", "a wrong password 12345")
    assert (await redeem(client, code)).status_code == 200
    assert (await client.get("/access/download")).status_code == 200

    dpo = await token_for(app, DPO, "dpo")
    export = await client.get("/api/v1/audit/events", params={"format": "jsonl"}, headers=dpo)
    access_log = export.text
    assert len(access_log.splitlines()) >= 8

    canonical = codes.normalise(code)
    forbidden = {
        "code": code,
        "code (canonical)": canonical,
        "code secret part": canonical[5:19],
        "wrong code": codes.normalise(wrong)[5:19],
        "staff password": PASSWORD,
        "wrong password": "a wrong password 12345",
        "recipient name": CANARY_NAME,
        "recipient surname": "Óðinsdóttir",
        "patient reference": "PAT-0042",
    }
    application_log = caplog.text + json.dumps([record.__dict__ for record in caplog.records], default=str)
    for label, value in forbidden.items():
        assert value not in application_log, f"{label} found in the application log"
        assert value not in access_log, f"{label} found in the access log"


async def test_codes_absent_from_database_file(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    if not settings.uses_sqlite:
        pytest.skip("the PostgreSQL dump check lives with the encryption-at-rest tests")
    _headers, share = await issue_share(app, client, recipient_name=CANARY_NAME)
    canonical = codes.normalise(share["access_code"])
    assert (await redeem(client, share["access_code"])).status_code == 200

    dump = b""
    for path in Path(settings.data_dir).rglob("*"):
        if path.is_file():
            dump += path.read_bytes()
    for form in (canonical, share["access_code"], canonical[5:19]):
        assert form.encode() not in dump
    assert b"%PDF" not in dump
