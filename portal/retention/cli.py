"""Commands ``portal purge``, ``portal holds`` and ``portal keys``.

These commands open the database, the key ring and the blob store without starting PDF workers and
without recording ``policy.loaded``, so ``portal purge --dry-run`` writes nothing at all.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from portal.blobs import BlobService
from portal.config import Settings
from portal.core import Portal, budgets_from, open_blob_store
from portal.crypto.keyring import KeyRing
from portal.db import create_engine, create_sessionmaker
from portal.pdf.worker import PdfWorkerPool
from portal.policies import load_policies
from portal.retention.erasure import add_hold, release_hold
from portal.retention.keys import retire_kek, rewrap_data_keys, rotate_keys
from portal.retention.policy import load_retention_policy
from portal.retention.purge import purge


async def open_maintenance_portal(settings: Settings) -> Portal:
    """Open the services a maintenance command needs. The key file must exist already."""
    policies = load_policies(settings.policy_dir)
    keyring = KeyRing.from_env(settings.kek_env) if settings.kek_env else KeyRing.load(settings.kek_file)
    engine = create_engine(settings.database_url)
    store = open_blob_store(settings, engine)

    return Portal(
        settings=settings,
        policies=policies,
        keyring=keyring,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        blobs=BlobService(store, keyring),
        # Never started: these commands do no PDF work, and closing an unstarted pool does nothing.
        pdf=PdfWorkerPool(1, budgets_from(policies)),
    )


def _run(action: Callable[[Portal], Awaitable[int]]) -> int:
    async def main() -> int:
        portal = await open_maintenance_portal(Settings.from_env())
        try:
            return await action(portal)
        finally:
            await portal.close()

    return asyncio.run(main())


def _purge(args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        policy = load_retention_policy(portal.settings.policy_dir)
        report = await purge(portal, policy, dry_run=args.dry_run)
        print("Dry run: nothing was changed." if args.dry_run else "Purge finished.")
        for kind, count in report.as_dict().items():
            print(f"{kind:<26} {count}")
        return 0

    return _run(action)


def _holds_add(args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        hold = await add_hold(
            portal, document_id=args.document, patient_ref=args.patient_ref, reason=args.reason
        )
        print(f"Legal hold {hold.id} placed.")
        return 0

    return _run(action)


def _holds_release(args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        hold = await release_hold(portal, args.hold_id)
        print(f"Legal hold {hold.id} released.")
        return 0

    return _run(action)


def _keys_rotate(_args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        previous = portal.keyring.primary_kek_id
        result = await rotate_keys(portal)
        print(f"New primary KEK {result.kek_id} (previous {previous}).")
        print(f"{result.rewrapped} data key(s) re-wrapped.")
        _warn_unreadable(result.unreadable)
        print(f"Restart every portal process, then retire the old KEK with 'portal keys retire {previous}'.")
        return 0

    return _run(action)


def _keys_rewrap(_args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        result = await rewrap_data_keys(portal)
        print(f"{result.rewrapped} data key(s) re-wrapped under KEK {result.kek_id}.")
        _warn_unreadable(result.unreadable)
        return 0

    return _run(action)


def _keys_retire(args: argparse.Namespace) -> int:
    async def action(portal: Portal) -> int:
        await retire_kek(portal, args.kek_id)
        print(f"KEK {args.kek_id} retired: its key material is deleted from the key file.")
        return 0

    return _run(action)


def _warn_unreadable(count: int) -> None:
    if count:
        print(
            f"Warning: {count} data key(s) could not be unwrapped (KEK retired or row damaged) and were left "
            "as they are. Their blobs were unreadable already."
        )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``purge``, ``holds`` and ``keys`` to the ``portal`` command."""
    purge_command = commands.add_parser("purge", help="apply the retention clocks in policies/retention.toml")
    purge_command.add_argument("--dry-run", action="store_true", help="print the counts and change nothing")
    purge_command.set_defaults(handler=_purge)

    holds = commands.add_parser("holds", help="legal holds that stop retention and erasure")
    holds_commands = holds.add_subparsers(dest="holds_command", required=True)
    add = holds_commands.add_parser("add", help="place a hold on one document or one patient reference")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--document", help="document id")
    target.add_argument(
        "--patient-ref", help="the clinic's patient reference: the hold covers all of its documents"
    )
    add.add_argument("--reason", required=True, help="why the hold applies, at most 200 characters, no names")
    add.set_defaults(handler=_holds_add)
    release = holds_commands.add_parser("release", help="release a hold")
    release.add_argument("hold_id", help="the id 'portal holds add' printed")
    release.set_defaults(handler=_holds_release)

    keys = commands.add_parser("keys", help="key-encryption keys in the key file")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_commands.add_parser(
        "rotate", help="add a new primary KEK and re-wrap every data key under it"
    )
    rotate.set_defaults(handler=_keys_rotate)
    rewrap = keys_commands.add_parser("rewrap", help="re-wrap data keys still under an older KEK")
    rewrap.set_defaults(handler=_keys_rewrap)
    retire = keys_commands.add_parser("retire", help="delete an old KEK once no data key uses it")
    retire.add_argument("kek_id", help="the id of the KEK to retire")
    retire.set_defaults(handler=_keys_retire)
