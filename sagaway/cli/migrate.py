"""`sagaway migrate`: create or upgrade services' databases, waiting for them if they are down.

    sagaway migrate                                          # the orchestrator's database
    sagaway migrate --service gateway --service payments     # several, one after the other
    sagaway migrate --service payments --create-database     # CREATE DATABASE first if missing
"""

from __future__ import annotations

import asyncio
import logging

import click
import sqlalchemy as sa
from alembic.util import CommandError

from sagaway.settings.composed import Settings
from sagaway.storage.create import CannotCreateDatabase, create_database_if_missing
from sagaway.storage.database import (
    DatabaseMisconfigured,
    DatabaseUnavailable,
    UnsupportedDatabase,
    create_database_engine,
    describe_database,
    wait_for_database,
)
from sagaway.storage.migrate import MigrationsNotFound, upgrade

DEFAULT_SERVICE = "orchestrator"


async def _wait(url: str, wait_s: float, max_backoff_s: float) -> None:
    engine = create_database_engine(url, pool_size=1)
    try:
        await wait_for_database(engine, max_backoff_s=max_backoff_s, give_up_after_s=wait_s)
    finally:
        await engine.dispose()


def migrate_one(
    url: str, *, revision: str, wait_s: float, retry_max_s: float, create: bool
) -> list[str]:
    """Bring the database at `url` to `revision` (creating it first if `create`); the lines
    that say what was done. Every failure is a one-line click error naming the database."""
    lines: list[str] = []
    try:
        database = describe_database(url)
        if create:
            lines.append(
                asyncio.run(
                    create_database_if_missing(
                        url, max_backoff_s=retry_max_s, give_up_after_s=wait_s
                    )
                )
            )
        asyncio.run(_wait(url, wait_s, retry_max_s))
        lines.append(upgrade(url, revision).summary())
    except (
        UnsupportedDatabase,
        DatabaseMisconfigured,
        DatabaseUnavailable,
        CannotCreateDatabase,
        MigrationsNotFound,
        sa.exc.ArgumentError,
    ) as exc:
        missing = isinstance(exc, DatabaseMisconfigured) and "does not exist" in str(exc)
        hint = "; add --create-database to create it" if missing and not create else ""
        raise click.ClickException(f"{exc}{hint}") from None
    except CommandError as exc:
        raise click.ClickException(f"{database}: {exc}") from None
    except sa.exc.DBAPIError as exc:
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        raise click.ClickException(
            f"migrating {database} failed: {type(exc.orig).__name__}: {first_line}"
        ) from None
    return lines


@click.command("migrate")
@click.option(
    "--service",
    "services",
    multiple=True,
    help=f"Whose database to migrate [default: {DEFAULT_SERVICE}]; give it several times for "
    "several services. Its URL is SAGAWAY_DATABASE_URL with {service} replaced by the name "
    "(without it, the one shared database), or <data_dir>/NAME.db in embedded mode.",
)
@click.option(
    "--database-url",
    metavar="URL",
    help="Migrate this database instead of the configured one (SAGAWAY_DATABASE_URL).",
)
@click.option(
    "--create-database",
    is_flag=True,
    help="Create the database first if it is missing (PostgreSQL: CREATE DATABASE through the "
    "server's `postgres` database, which needs the CREATEDB privilege; SQLite: the file's "
    "directory).",
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
    settings: Settings,
    services: tuple[str, ...],
    database_url: str | None,
    create_database: bool,
    revision: str,
    wait_s: float,
) -> None:
    """Create or upgrade the tables of services' databases (SQLite or PostgreSQL)."""
    if database_url and len(services) > 1:
        raise click.UsageError("--database-url names one database: give --service once")
    if database_url:
        urls = [database_url]
    else:
        # Services sharing one database (a URL without {service}) migrate it once.
        names = services or (DEFAULT_SERVICE,)
        urls = list(dict.fromkeys(settings.storage.database_url_for(name) for name in names))
    # The summary lines below say what happened; Alembic's per-connection chatter is noise.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    retry_max_s = min(settings.storage.startup_retry_max_s, max(wait_s / 4, 0.5))
    for url in urls:
        for line in migrate_one(
            url, revision=revision, wait_s=wait_s, retry_max_s=retry_max_s, create=create_database
        ):
            click.echo(line)
