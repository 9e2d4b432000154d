"""Every table of every part on one MetaData: what Alembic and the migration tests compare against.

Each part declares its own tables on `sagaway.storage.models.Base` next to its code; this module,
part of the composition root, is the one place that imports them all."""

from __future__ import annotations

import importlib

import sqlalchemy as sa

from sagaway.storage.models import Base

# Every module that declares tables on Base.
MODEL_MODULES = (
    "sagaway.outbox.models",
    "sagaway.inbox",
    "orchestrator.models",
    "gateway.models",
    "console.models",
    "examples.place_order.models",
)


def all_metadata() -> sa.MetaData:
    """Base.metadata with every table of every model module registered on it."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata
