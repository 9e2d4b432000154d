"""`sagaway migrate`: create or upgrade a service's database, waiting for it if it is down."""

from __future__ import annotations

import asyncio
import logging

import click
import sqlalchemy as sa
from alembic.util import CommandError

from sagaway.settings.composed import Settings
from sagaway.storage.database import (
    DatabaseMisconfigured,
    DatabaseUnavailable,
    UnsupportedDatabase,
    create_database_engine,
    describe_database,
    wait_for_database,
)
from sagaway.storage.migrate import MigrationsNotFound, upgrade


async def _wait(url: str, wait_s: float, max_backoff_s: float) -> None:
    engine = create_database_engine(url, pool_size=1)
    try:
        await wait_for_database(engine, max_backoff_s=max_backoff_s, give_up_after_s=wait_s)
    finally:
        await engine.dispose()


@click.command("migrate")
@click.option(
    "--service",
    default="orchestrator",
    show_default=True,
    help="Whose database to migrate (in embedded mode each service has its own SQLite file).",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Migrate this database instead of the configured one (SAGAWAY_DATABASE_URL).",
)
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a database that is down before giving up.",
)
@click.pass_obj
def migrate_command(
    settings: Settings, service: str, database_url: str | None, revision: str, wait_s: float
) -> None:
    """Create or upgrade the tables of a service's database (SQLite or PostgreSQL)."""
    url = database_url or settings.storage.database_url_for(service)
    # The summary line below says what happened; Alembic's per-connection chatter is noise.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        database = describe_database(url)
        retry_max_s = min(settings.storage.startup_retry_max_s, max(wait_s / 4, 0.5))
        asyncio.run(_wait(url, wait_s, retry_max_s))
        result = upgrade(url, revision)
    except (
        UnsupportedDatabase,
        DatabaseMisconfigured,
        DatabaseUnavailable,
        MigrationsNotFound,
        sa.exc.ArgumentError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    except CommandError as exc:
        raise click.ClickException(f"{database}: {exc}") from None
    except sa.exc.DBAPIError as exc:
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        raise click.ClickException(
            f"migrating {database} failed: {type(exc.orig).__name__}: {first_line}"
        ) from None
    click.echo(result.summary())
