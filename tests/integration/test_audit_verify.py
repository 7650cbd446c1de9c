"""`portal audit verify` on bundles from the running portal, and on the database itself."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from portal.audit.canonical import event_leaf_hash
from portal.audit.checkpoint import Checkpoint, sign_checkpoint
from portal.audit.checkpoints import CheckpointError, forget_tree_state, log_key, make_checkpoint
from portal.audit.recorder import event_mapping
from portal.audit.verify import verify_database
from portal.cli import build_parser
from portal.config import REPOSITORY_ROOT, Settings
from portal.core import Portal, start_portal
from portal.models import AccessEvent
from tests.conftest import csrf_from, make_settings
from tests.helpers import DPO, add_staff, issue_share, portal_of, redeem, sign_in, token_for
from tests.integration.test_cli import run_portal


def run_cli(args: list[str]) -> int:
    parsed = build_parser().parse_args(args)
    return int(parsed.handler(parsed))


async def bundle_bytes(app: Litestar, client: AsyncTestClient[Litestar]) -> tuple[bytes, str]:
    """Create some share traffic and fetch a bundle of the whole log; return it with the log's key line."""
    _headers, share = await issue_share(app, client)
    await redeem(client, share["access_code"])
    dpo = await token_for(app, DPO, "dpo")
    answer = await client.get("/api/v1/audit/bundle", headers=dpo)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    return answer.content, (await log_key(portal_of(app))).vkey


def rewrite(original: bytes, target: Path, **members: bytes) -> Path:
    """Copy a bundle, replacing the named members (dots in names written as underscores)."""
    replacements = {name.replace("_", "."): data for name, data in members.items()}
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            copy.writestr(info.filename, replacements.get(info.filename, source.read(info.filename)))
    return target


def lines_of(bundle: bytes, name: str) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        return archive.read(name).splitlines(keepends=True)


async def test_bundle_verify_untouched(
    app: Litestar, client: AsyncTestClient[Litestar], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, key = await bundle_bytes(app, client)
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle)

    assert run_cli(["audit", "verify", str(path), "--public-key", key]) == 0
    output = capsys.readouterr().out
    assert output.startswith("OK: ")
    assert f"{len(lines_of(bundle, 'events.jsonl'))} events verified" in output


async def test_bundle_verify_detects_tampering(
    app: Litestar, client: AsyncTestClient[Litestar], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, key = await bundle_bytes(app, client)
    events = lines_of(bundle, "events.jsonl")
    proofs = lines_of(bundle, "proofs.jsonl")
    assert len(events) >= 6

    edited = list(events)
    edited[2] = edited[2].replace(b'"outcome":"success"', b'"outcome":"failure"')
    assert edited[2] != events[2]
    swapped_events = list(events)
    swapped_events[1], swapped_events[3] = events[3], events[1]
    swapped_proofs = list(proofs)
    swapped_proofs[1], swapped_proofs[3] = proofs[3], proofs[1]
    other_key = Ed25519PrivateKey.generate()
    origin = (await log_key(portal_of(app))).origin
    forged_note = sign_checkpoint(Checkpoint(origin, len(events), b"\x07" * 32), other_key, origin)

    cases = {
        "edited field": ({"events_jsonl": b"".join(edited)}, "event seq 3"),
        "deleted event": (
            {
                "events_jsonl": b"".join(events[:2] + events[3:]),
                "proofs_jsonl": b"".join(proofs[:2] + proofs[3:]),
            },
            "seq 3 was deleted or moved",
        ),
        "swapped events": (
            {"events_jsonl": b"".join(swapped_events), "proofs_jsonl": b"".join(swapped_proofs)},
            "seq 2 was deleted or moved",
        ),
        "truncated tail": (
            {"events_jsonl": b"".join(events[:-2]), "proofs_jsonl": b"".join(proofs[:-2])},
            "truncated",
        ),
        "forged checkpoint": ({"checkpoint_txt": forged_note.encode()}, "checkpoint.txt"),
    }
    for name, (members, expected) in cases.items():
        path = rewrite(bundle, tmp_path / f"{name.replace(' ', '-')}.zip", **members)
        assert run_cli(["audit", "verify", str(path), "--public-key", key]) == 1, name
        output = capsys.readouterr().out
        assert output.startswith("FAILED"), name
        assert expected in output, (name, output)


async def test_database_verify_live_log(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    await issue_share(app, client)
    first = await make_checkpoint(portal)
    _headers, share = await issue_share(app, client)
    await redeem(client, share["access_code"])
    second = await make_checkpoint(portal)
    assert second.tree_size > first.tree_size

    report = await verify_database(portal)
    assert report.ok, report.first_failure
    assert report.checkpoints >= 2
    assert report.events >= second.tree_size


async def test_database_verify_detects_edit(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    await issue_share(app, client)
    row = await make_checkpoint(portal)

    # A DBA with full rights drops the guard and edits a row, leaving its leaf hash alone.
    async with portal.engine.begin() as connection:
        await connection.execute(text(_drop_update_guard(portal.engine.dialect.name)))
        await connection.execute(text("UPDATE access_event SET purpose = 'edited' WHERE seq = 3"))
    report = await verify_database(portal)
    assert not report.ok
    assert report.first_failure is not None
    assert "event seq 3 does not match its stored leaf hash" in report.first_failure

    # Editing the leaf hash as well moves the failure to the signed checkpoint that covers the row.
    await _store_recomputed_leaf(portal, 3)
    report = await verify_database(portal)
    assert not report.ok
    assert report.first_failure is not None
    assert f"checkpoint at tree size {row.tree_size}" in report.first_failure

    forget_tree_state(portal.engine)
    with pytest.raises(CheckpointError, match="do not give the root"):
        await make_checkpoint(portal)


async def test_dpo_page_checks_log(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    portal = portal_of(app)
    await issue_share(app, client)
    await make_checkpoint(portal)
    await issue_share(app, client)
    await add_staff(app, DPO, "dpo")
    client.cookies.clear()
    await sign_in(client, DPO)
    token = csrf_from((await client.get("/dpo/verify")).text)

    passed = await client.post("/dpo/verify", data={"_csrf_token": token}, headers={"HX-Request": "true"})
    assert passed.status_code == 200
    assert 'data-testid="verify-ok"' in passed.text
    assert "signed checkpoint verified." in passed.text
    assert "newer than the latest checkpoint" in passed.text

    async with portal.engine.begin() as connection:
        await connection.execute(text(_drop_update_guard(portal.engine.dialect.name)))
        await connection.execute(text("UPDATE access_event SET purpose = 'edited' WHERE seq = 3"))
    failed = await client.post("/dpo/verify", data={"_csrf_token": token})
    assert failed.status_code == 200
    assert 'data-testid="verify-failed"' in failed.text
    assert "event seq 3 does not match its stored leaf hash" in failed.text
    assert "2 events passed before the first failure." in failed.text


def _drop_update_guard(dialect: str) -> str:
    if dialect == "sqlite":
        return "DROP TRIGGER access_event_no_update"
    return "DROP TRIGGER access_event_insert_only ON access_event"


async def _store_recomputed_leaf(portal: Portal, seq: int) -> None:
    async with portal.transaction() as db:
        row = await db.get(AccessEvent, seq)
        assert row is not None
        digest = event_leaf_hash(event_mapping(row))
        await db.execute(
            text("UPDATE access_event SET leaf_hash = :digest WHERE seq = :seq"),
            {"digest": digest, "seq": seq},
        )


async def test_cli_signs_under_stored_name(
    app: Litestar, client: AsyncTestClient[Litestar], settings: Settings, tmp_path: Path
) -> None:
    # The server's bundle names the log after its public URL. A command run in a shell without the
    # server's settings falls back to another URL and must still sign under the same name.
    web_bundle, _key = await bundle_bytes(app, client)
    with zipfile.ZipFile(io.BytesIO(web_bundle)) as archive:
        web_key = archive.read("public-key.txt").decode().strip()
    shell = {
        "PORTAL_DATA_DIR": str(settings.data_dir),
        "PORTAL_DATABASE_URL": settings.database_url,
        "PORTAL_POLICY_DIR": str(REPOSITORY_ROOT / "policies"),
        "PORTAL_PUBLIC_URL": "http://127.0.0.1:8000",
    }

    verified = run_portal(["audit", "verify", "--database"], shell)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    path = tmp_path / "cli.zip"
    bundled = run_portal(["audit", "bundle", "--output", str(path)], shell)
    assert bundled.returncode == 0, bundled.stderr
    checked = run_portal(["audit", "verify", str(path), "--public-key", web_key], shell)
    assert checked.returncode == 0, checked.stdout
    checkpointed = run_portal(["audit", "checkpoint"], shell)
    assert f"Public key: {web_key}" in checkpointed.stdout

    # The server signs again after the command did, and both see one log under one name.
    _headers, share = await issue_share(app, client)
    await redeem(client, share["access_code"])
    forget_tree_state(portal_of(app).engine)
    await make_checkpoint(portal_of(app))
    report = await verify_database(portal_of(app))
    assert report.ok, report.first_failure
    assert report.checkpoints >= 3
    for public_url in ("http://127.0.0.1:8000", "https://share.clinic.example"):
        verified = run_portal(["audit", "verify", "--database"], {**shell, "PORTAL_PUBLIC_URL": public_url})
        assert verified.returncode == 0, verified.stdout


async def test_new_public_url_keeps_name(
    app: Litestar, client: AsyncTestClient[Litestar], tmp_path: Path, database_url: str
) -> None:
    await issue_share(app, client)
    before = await make_checkpoint(portal_of(app))
    name = (await log_key(portal_of(app))).origin
    assert name == "portal.test/access-log"

    # The trial address gives way to the production one, and the log keeps the name it started with.
    moved = await start_portal(
        make_settings(tmp_path / "data", database_url, PORTAL_PUBLIC_URL="https://share.clinic.example"),
        pdf_workers=1,
    )
    try:
        await issue_share(app, client)
        after = await make_checkpoint(moved)
        assert after.tree_size > before.tree_size
        assert after.note.startswith(f"{name}\n")
        assert (await log_key(moved)).vkey == (await log_key(portal_of(app))).vkey
        for portal in (moved, portal_of(app)):
            report = await verify_database(portal)
            assert report.ok, report.first_failure
            assert report.checkpoints == 2
    finally:
        await moved.close()
