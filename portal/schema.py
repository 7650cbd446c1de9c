"""Schema management through the Alembic migrations in portal/migrations/ (the access log's insert-only
triggers are created there too)."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from portal.errors import PortalError


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


async def require_latest_schema(engine: AsyncEngine) -> None:
    """Raise PortalError unless the database is at the latest migration, for tools that never migrate."""
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    scripts = ScriptDirectory(str(Path(__file__).parent / "migrations"))
    latest = scripts.get_current_head()
    if current is not None and current not in {script.revision for script in scripts.walk_revisions()}:
        raise PortalError(
            f"The database schema is at revision {current}, which this version of the portal does not know: "
            f"it was migrated by a newer version. Run that version, or restore a backup made with this one."
        )
    if current != latest:
        raise PortalError(
            f"The database schema is at revision {current or 'none'}, but this version of the portal needs "
            f"{latest}. Run 'portal migrate' first."
        )
