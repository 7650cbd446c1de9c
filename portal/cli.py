"""The ``portal`` command: serve, init, users, tokens, audit (export, checkpoint, bundle, verify)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from portal.config import ConfigError, Settings
from portal.crypto.errors import CryptoError
from portal.errors import PortalError
from portal.logs import configure_logging
from portal.policies import PolicyError
from portal.staff.service import DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS

log = logging.getLogger("portal.cli")

# Feature packages that add their own subcommands through a ``register(subparsers)`` function.
COMMAND_MODULES: list[str] = ["portal.retention.cli", "portal.shares.trace"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from portal.app import create_app
    from portal.core import prepare_storage

    # Slips and API responses contain the portal's address. Without PORTAL_PUBLIC_URL it is the one served here.
    os.environ.setdefault("PORTAL_PUBLIC_URL", f"http://{args.host}:{args.port}")
    settings = Settings.from_env()
    # Keys and schema are created once here, so several workers never race to create them.
    asyncio.run(prepare_storage(settings))
    log.info(
        "serving",
        extra={
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "data_dir": str(settings.data_dir),
        },
    )
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "access_log": False,
        "log_config": None,
        # X-Forwarded-For is read by the portal itself, through PORTAL_TRUSTED_PROXY_HOPS.
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if args.workers > 1:
        # Read by each worker process, so the worker processes together run at most one argon2 hash per core.
        os.environ["PORTAL_SERVER_PROCESSES"] = str(args.workers)
        uvicorn.run("portal.app:app_factory", factory=True, workers=args.workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


async def _with_portal(action: Callable[[Any], Awaitable[int]]) -> int:
    from portal.core import start_portal

    portal = await start_portal(Settings.from_env(), pdf_workers=1, lazy_pdf=True)
    try:
        return await action(portal)
    finally:
        await portal.close()


def _init(_args: argparse.Namespace) -> int:
    async def action(portal: Any) -> int:
        print(f"Data folder: {portal.settings.data_dir}")
        print(f"Key file:    {portal.settings.kek_file}")
        return 0

    return asyncio.run(_with_portal(action))


def _migrate(_args: argparse.Namespace) -> int:
    from portal.schema import upgrade_to_head

    settings = Settings.from_env()
    upgrade_to_head(settings.database_url)
    print(f"Database is at the latest schema ({settings.database_url.split('://', 1)[0]}).")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        first = getpass.getpass("Password: ")
        repeated = getpass.getpass("Repeat password: ")
    except EOFError:
        raise PortalError(
            "No password was typed. Run the command in a terminal, or pass --password-stdin."
        ) from None
    if first != repeated:
        raise PortalError("The two passwords differ. Run the command again.")
    return first


def _users_add(args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)

    async def action(portal: Any) -> int:
        from portal.staff.service import add_user

        async with portal.transaction() as db:
            user = await add_user(db, args.email, args.role, password)
        print(f"Added {user.email} as {user.role}.")
        return 0

    return asyncio.run(_with_portal(action))


def _token_days(text: str) -> int:
    """Parse --days of `tokens create`, which accepts the same lifetimes as the admin page's form."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_TOKEN_DAYS:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a whole number of days from 1 to {MAX_TOKEN_DAYS}"
        )
    return int(text)


def _tokens_create(args: argparse.Namespace) -> int:
    async def action(portal: Any) -> int:
        from portal.staff.service import create_token

        async with portal.transaction() as db:
            token = await create_token(db, args.user, args.label, args.days, args.scope)
        print(token)
        return 0

    return asyncio.run(_with_portal(action))


def _audit_export(args: argparse.Namespace) -> int:
    async def action(portal: Any) -> int:
        from portal.audit.export import checkpoint_quietly, export_chunks
        from portal.audit.query import parse_filter
        from portal.audit.recorder import SYSTEM, record

        filters = parse_filter({"patient_ref": args.patient_ref, "since": args.since, "until": args.until})
        async with portal.transaction() as db:
            await record(
                db,
                SYSTEM,
                "export.created",
                details={"format": args.format, "via": "cli", **filters.as_dict()},
            )
        await checkpoint_quietly(portal)

        output = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            async for chunk in export_chunks(portal, filters, args.format):
                output.write(chunk)
        finally:
            if args.output:
                output.close()
            else:
                output.flush()
        return 0

    return asyncio.run(_with_portal(action))


def _audit_filters(args: argparse.Namespace) -> dict[str, str | None]:
    names = ("patient_ref", "share_id", "recipient", "event_type", "ip_prefix", "since", "until")
    return {name: getattr(args, name) for name in names}


def _audit_checkpoint(_args: argparse.Namespace) -> int:
    async def action() -> int:
        from portal.audit.checkpoints import log_key, make_checkpoint, open_log

        settings = Settings.from_env()
        async with open_log(settings) as access:
            row = await make_checkpoint(access)
            key = await log_key(access)
        print(f"Checkpoint of {row.tree_size} events signed.")
        if settings.checkpoint_dir:
            print(f"Copy: {settings.checkpoint_dir / f'checkpoint-{row.tree_size}.txt'}")
        print(f"Public key: {key.vkey}")
        print(row.note, end="")
        return 0

    return asyncio.run(action())


def _audit_bundle(args: argparse.Namespace) -> int:
    from portal.audit.query import parse_filter

    filters = parse_filter(_audit_filters(args))
    output: Path = args.output

    async def action(portal: Any) -> int:
        from portal.audit.evidence import build_bundle
        from portal.audit.recorder import SYSTEM

        row = await build_bundle(portal, SYSTEM, filters, handle)
        print(f"Wrote {output}, proved against the signed checkpoint of {row.tree_size} events.")
        return 0

    try:
        with output.open("wb") as handle:
            return asyncio.run(_with_portal(action))
    except BaseException:
        # A half-written archive would fail verification later with a misleading message.
        output.unlink(missing_ok=True)
        raise


def _audit_verify(args: argparse.Namespace) -> int:
    if args.database == (args.bundle is not None):
        print("portal: give either a bundle file or --database, not both and not neither.", file=sys.stderr)
        return 2
    if args.database:
        return asyncio.run(_verify_database())
    return _verify_bundle(args.bundle, args.public_key)


def _verify_bundle(path: Path, public_key: str | None) -> int:
    from portal.audit.bundle import verify_bundle

    if not path.is_file():
        print(f"portal: {path} does not exist or is not a file.", file=sys.stderr)
        return 2
    report = verify_bundle(path, public_key)
    if not report.ok:
        print(f"FAILED after {report.checked} verified events: {report.first_failure}")
        return 1

    size = report.checkpoint.tree_size if report.checkpoint else 0
    print(f"OK: {report.checked} events verified against the signed checkpoint of {size} events.")
    if not report.trusted_key:
        print(
            "Note: checked with the key inside the bundle. Pass --public-key with the clinic's published "
            "key line to prove who signed it.",
            file=sys.stderr,
        )
    return 0


async def _verify_database() -> int:
    from portal.audit.checkpoints import open_log
    from portal.audit.verify import verify_database

    async with open_log(Settings.from_env()) as access:
        report = await verify_database(access)
    done = f"{_counted(report.events, 'event')} and {_counted(report.checkpoints, 'checkpoint')}"
    if not report.ok:
        print(f"FAILED after {done}: {report.first_failure}")
        return 1
    unsigned = _counted(report.unsigned, "event")
    print(f"OK: {done} verified; {unsigned} after the latest checkpoint not signed yet.")
    return 0


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _add_filter_options(command: argparse.ArgumentParser) -> None:
    add = command.add_argument
    add("--patient-ref", dest="patient_ref", help="only events about this patient reference")
    add("--share-id", dest="share_id", help="only events of this share (UUID)")
    add("--recipient", help="only events of shares whose recipient name contains this text")
    add("--event-type", dest="event_type", help="only events of this type, e.g. access.viewed")
    add("--ip-prefix", dest="ip_prefix", help="only events from this network, e.g. 203.0.113.0/24")
    add("--since", help="only events at or after this time (RFC 3339 or YYYY-MM-DD)")
    add("--until", help="only events before this time (a bare date includes that day)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portal", description="Secure share portal for clinical reports.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the web server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port (default 1)")
    serve.set_defaults(handler=_serve)

    init = commands.add_parser("init", help="create the data folder, key file and database schema")
    init.set_defaults(handler=_init)

    migrate = commands.add_parser(
        "migrate", help="apply database migrations not yet applied (safe to repeat)"
    )
    migrate.set_defaults(handler=_migrate)

    users = commands.add_parser("users", help="manage staff accounts").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add a staff account")
    add.add_argument("email")
    add.add_argument("--role", required=True, choices=["clinician", "admin", "dpo"])
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    add.set_defaults(handler=_users_add)

    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="create an API token and print it once")
    create.add_argument("--user", required=True, help="e-mail of the staff account the token acts for")
    create.add_argument("--label", default="", help="what the token is for, e.g. the photo system's name")
    create.add_argument(
        "--days",
        type=_token_days,
        default=DEFAULT_TOKEN_DAYS,
        help=f"days until the token expires, 1 to {MAX_TOKEN_DAYS} (default {DEFAULT_TOKEN_DAYS})",
    )
    create.add_argument(
        "--scope",
        action="append",
        choices=("upload", "share", "audit-read"),
        help="a scope to grant; repeat for several (default: every scope the account's role can use)",
    )
    create.set_defaults(handler=_tokens_create)

    audit = commands.add_parser("audit", help="access log").add_subparsers(
        dest="audit_command", required=True
    )
    export = audit.add_parser("export", help="export access-log events")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--patient-ref", help="only events about this patient reference")
    export.add_argument("--since", help="only events at or after this time (RFC 3339 or YYYY-MM-DD)")
    export.add_argument("--until", help="only events before this time")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.set_defaults(handler=_audit_export)

    checkpoint = audit.add_parser("checkpoint", help="sign a checkpoint over every event now")
    checkpoint.set_defaults(handler=_audit_checkpoint)

    bundle = audit.add_parser(
        "bundle", help="write an evidence bundle (zip) that 'audit verify' checks offline"
    )
    bundle.add_argument("--output", type=Path, required=True, help="zip file to write")
    _add_filter_options(bundle)
    bundle.set_defaults(handler=_audit_bundle)

    verify = audit.add_parser("verify", help="verify an evidence bundle offline, or the database's log")
    verify.add_argument("bundle", nargs="?", type=Path, help="bundle zip file to verify")
    verify.add_argument(
        "--public-key", dest="public_key", help="the log's public key line, obtained separately"
    )
    verify.add_argument(
        "--database", action="store_true", help="verify the rows and checkpoints in the database"
    )
    verify.set_defaults(handler=_audit_verify)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


QUIET_COMMANDS = frozenset({"users", "tokens", "audit"})


def main(argv: list[str] | None = None) -> int:
    # Files the portal creates (database, WAL, blobs, keys) are readable by its own user only.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    # Account, token and audit commands print their result; start-up lines would bury it. Warnings, such as
    # where a newly created key file is, still show.
    configure_logging("WARNING" if args.command in QUIET_COMMANDS else "INFO")
    try:
        return int(args.handler(args))
    except (ConfigError, PolicyError, CryptoError, PortalError) as error:
        print(f"portal: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
