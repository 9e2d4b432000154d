"""Alembic environment: migrates one service database, SQLite or PostgreSQL, to Base.metadata.

The URL comes from (first found): a connection handed over by `sagaway.storage.migrate`,
`alembic -x url=...`, the `sqlalchemy.url` option, or Sagaway's settings for
`-x service=NAME` (default "orchestrator"). Migrations run on the blocking drivers
(psycopg2, sqlite3); async URLs are translated.
"""

from __future__ import annotations

import logging.config
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

from sagaway.cli.schema import all_metadata
from sagaway.settings.composed import load_settings
from sagaway.storage.database import sqlite_path, sync_url
from sagaway.storage.models import UtcDateTime

config = context.config
target_metadata = all_metadata()

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configured_url() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    url = arguments.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        url = load_settings().storage.database_url_for(arguments.get("service", "orchestrator"))
    return sync_url(url)


def _render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # New revisions spell UtcDateTime as the plain column type it stores, so that the
    # history never imports the models.
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
        **options,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    url = _configured_url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: sa.Connection) -> None:
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = _configured_url()
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
