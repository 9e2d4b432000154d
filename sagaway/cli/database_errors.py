"""Database failures as one-line click errors, for the verbs that open a service's database
(`participant`, `seed`, `audit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
import sqlalchemy as sa

from participants.service import DatabaseNotMigrated
from sagaway.storage.database import DatabaseMisconfigured, DatabaseUnavailable, UnsupportedDatabase

T = TypeVar("T")
DATABASE_ERRORS = (UnsupportedDatabase, DatabaseMisconfigured, DatabaseUnavailable)


def database_errors_as_click(action: Callable[[], T]) -> T:
    """`action()`, with a database that is misconfigured, down, unmigrated or failing reported
    as a click error (one line, no traceback)."""
    try:
        return action()
    except (*DATABASE_ERRORS, DatabaseNotMigrated, sa.exc.ArgumentError) as exc:
        raise click.ClickException(str(exc)) from None
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig).strip().splitlines()
        raise click.ClickException(
            f"database error: {type(exc.orig).__name__}: {text[0] if text else ''}"
        ) from None
