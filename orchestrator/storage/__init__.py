"""Storage: the tables (models), engines (database) and migrations (migrate) of every service.

Tables that belong to one feature may live next to it (e.g. `orchestrator/outbox/models.py`)
on the shared `Base`; list such modules in MODEL_MODULES so that Alembic sees them.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa

# Every module that declares tables on orchestrator.storage.models.Base.
MODEL_MODULES = (
    "orchestrator.storage.models",
    "orchestrator.outbox.models",
    "orchestrator.audit_models",
    "gateway.models",
    "participants.examples.models",
    "console.models",
)


def all_metadata() -> sa.MetaData:
    """Base.metadata with every table of every model module registered on it."""
    for name in MODEL_MODULES:
        importlib.import_module(name)
    from orchestrator.storage.models import Base

    return Base.metadata
