"""Schema management through the Alembic migrations in portal/migrations/ (the access log's insert-only
triggers are created there too)."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from alembic import command
from alembic.config import Config


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
