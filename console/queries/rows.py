"""Result rows as plain dicts with timezone-aware datetimes, whichever database answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def row_dict(mapping: Any) -> dict[str, Any]:
    """One result row as a dict, its datetimes made aware."""
    return {k: aware(v) if isinstance(v, datetime) else v for k, v in mapping.items()}
