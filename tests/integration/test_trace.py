"""``portal trace`` names the right share for copies made for different recipients of one document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from portal.config import Settings
from tests.helpers import CLINICIAN, create_share, redeem, simple_pdf, token_for, upload_pdf

RECIPIENTS = ["Zoë Łukasiewicz", "Αλέξανδρος Παππάς", "Дмитрий Иванов"]


async def test_trace_names_each_recipient(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings, tmp_path: Path
) -> None:
    headers = await token_for(app, CLINICIAN, "clinician")
    document = (await upload_pdf(client, headers, simple_pdf(3))).json()

    copies = []
    for name in RECIPIENTS:
        share = (await create_share(client, headers, [document["id"]], recipient_name=name)).json()
        client.cookies.clear()
        await redeem(client, share["access_code"])
        copy = tmp_path / f"{share['reference']}.pdf"
        copy.write_bytes((await client.get("/access/download")).content)
        copies.append((name, share, copy))

    assert len({path.read_bytes() for _name, _share, path in copies}) == 3

    env = {
        **os.environ,
        "PORTAL_DATA_DIR": str(settings.data_dir),
        "PORTAL_DATABASE_URL": settings.database_url,
    }
    for name, share, path in copies:
        result = subprocess.run(
            [sys.executable, "-m", "portal.cli", "trace", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert share["reference"] in result.stdout
        assert share["id"] in result.stdout
        assert name in result.stdout

    stranger = tmp_path / "stranger.pdf"
    stranger.write_bytes(simple_pdf())
    other = subprocess.run(
        [sys.executable, "-m", "portal.cli", "trace", str(stranger)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert other.returncode == 1
    assert "not a copy made by this portal" in other.stdout
