"""Schema management: Alembic migrations, and the triggers that make the access log insert-only."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from alembic import command
from alembic.config import Config

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER IF NOT EXISTS access_event_no_update BEFORE UPDATE ON access_event
    BEGIN SELECT RAISE(ABORT, 'access_event is insert-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS access_event_no_delete BEFORE DELETE ON access_event
    BEGIN SELECT RAISE(ABORT, 'access_event is insert-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS checkpoint_no_update BEFORE UPDATE ON checkpoint
    BEGIN SELECT RAISE(ABORT, 'checkpoint is insert-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS checkpoint_no_delete BEFORE DELETE ON checkpoint
    BEGIN SELECT RAISE(ABORT, 'checkpoint is insert-only'); END
    """,
]

POSTGRESQL_TRIGGERS = [
    """
    CREATE OR REPLACE FUNCTION portal_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is insert-only';
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS access_event_insert_only ON access_event",
    """
    CREATE TRIGGER access_event_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON access_event
    FOR EACH STATEMENT EXECUTE FUNCTION portal_reject_change()
    """,
    "DROP TRIGGER IF EXISTS checkpoint_insert_only ON checkpoint",
    """
    CREATE TRIGGER checkpoint_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION portal_reject_change()
    """,
]


def trigger_statements(dialect: str) -> list[str]:
    return SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS


def alembic_config(database_url: str) -> Config:
    """Alembic configuration for the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade_to_head(database_url: str) -> None:
    """Apply every migration not yet applied (runs its own event loop; call it from a thread)."""
    command.upgrade(alembic_config(database_url), "head")


async def migrate(database_url: str) -> None:
    await anyio.to_thread.run_sync(upgrade_to_head, database_url)
