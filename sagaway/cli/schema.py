"""Every table of every part on one MetaData: what Alembic and the migration tests compare against.

Each part declares its own tables on `sagaway.storage.models.Base` in its own models module; this
module, part of the composition root, imports each of those modules, so a table is known to the
migrations as soon as its part is listed here."""

from __future__ import annotations

from types import ModuleType

import sqlalchemy as sa

import console.models
import examples.place_order.models
import gateway.models
import orchestrator.models
import sagaway.inbox
import sagaway.outbox.models
from sagaway.storage.models import Base

# Every module that declares tables on Base.
MODEL_MODULES: tuple[ModuleType, ...] = (
    sagaway.outbox.models,
    sagaway.inbox,
    orchestrator.models,
    gateway.models,
    console.models,
    examples.place_order.models,
)


def all_metadata() -> sa.MetaData:
    """Base.metadata, with every table of every part (imported above) on it."""
    return Base.metadata
