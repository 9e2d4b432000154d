"""Bring a database to the latest schema with Alembic, from any working directory.

Runs the migrations in the repository's `alembic/` folder on the blocking drivers (psycopg2,
sqlite3). The `sagaway migrate` verb is in migrate_command.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import sagaway
from sagaway.storage.database import describe_database, sqlite_path, sync_url

# pg_advisory_xact_lock key held while migrating ("sagaway" in ASCII, as a number).
MIGRATION_LOCK_KEY = 0x736167617761


class MigrationsNotFound(RuntimeError):
    """The `alembic/` folder is not next to the installed package (install from a checkout)."""


@dataclass(frozen=True)
class MigrationResult:
    database: str
    from_revision: str | None
    to_revision: str | None

    def summary(self) -> str:
        if self.from_revision == self.to_revision:
            return f"{self.database} is already at revision {self.to_revision or 'base (empty)'}"
        return (
            f"migrated {self.database} from {self.from_revision or 'base (empty)'} "
            f"to {self.to_revision or 'base (empty)'}"
        )


def migrations_dir() -> Path:
    """The `alembic/` folder of the checkout the package is installed (editable) from."""
    candidate = Path(sagaway.__file__).resolve().parent.parent / "alembic"
    if not (candidate / "env.py").is_file():
        raise MigrationsNotFound(
            f"no Alembic migrations at {candidate}: install Sagaway from its source checkout "
            "(pip install -e .)"
        )
    return candidate


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["configure_logging"] = False
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision `url`'s database is at (None when it has never been migrated)."""
    engine = _sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> MigrationResult:
    """Migrate the database at `url` (async or sync URL) up to `revision`."""
    return _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> MigrationResult:
    """Migrate the database at `url` down to `revision` ("base" drops every table)."""
    return _run(url, lambda config: command.downgrade(config, revision))


def _sync_engine(url: str) -> sa.Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)


def _run(url: str, step: object) -> MigrationResult:
    config = alembic_config()
    engine = _sync_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Services started together may all run `sagaway migrate`: one at a time.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = MigrationContext.configure(connection).get_current_revision()
            config.attributes["connection"] = connection
            step(config)  # type: ignore[operator]
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return MigrationResult(describe_database(url), before, after)
