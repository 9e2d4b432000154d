"""Start-up failures as one-line click errors, for the verbs: a database misconfigured, down,
unmigrated or failing; a broker that cannot do what the settings require; a port in use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
import sqlalchemy as sa

from participants.service import DatabaseNotMigrated
from sagaway.messaging.kafka_capabilities import BrokerCannotDoThat
from sagaway.observability.listeners import ListenerUnavailable
from sagaway.storage.database import DatabaseMisconfigured, DatabaseUnavailable, UnsupportedDatabase

T = TypeVar("T")
DATABASE_ERRORS = (UnsupportedDatabase, DatabaseMisconfigured, DatabaseUnavailable)
STARTUP_ERRORS = (*DATABASE_ERRORS, BrokerCannotDoThat, ListenerUnavailable)


def database_errors_as_click(action: Callable[[], T]) -> T:
    """`action()`, with a start-up failure (a database misconfigured, down, unmigrated or
    failing; a broker that cannot do what is asked; a port in use) reported as a click error
    (one line, no traceback)."""
    try:
        return action()
    except (*STARTUP_ERRORS, DatabaseNotMigrated, sa.exc.ArgumentError) as exc:
        raise click.ClickException(str(exc)) from None
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig).strip().splitlines()
        raise click.ClickException(
            f"database error: {type(exc.orig).__name__}: {text[0] if text else ''}"
        ) from None
