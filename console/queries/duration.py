"""A saga's duration, in Python for the listing's column and in SQL for its sort: from creation
to the last change for a finished saga, to now for one in flight."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from orchestrator.models import saga_instances
from sagaway.storage.models import Timestamp

IN_FLIGHT = ("running", "compensating")


def duration_s(row: dict[str, Any], now: datetime) -> float:
    """Seconds from a listed saga's creation to its last change, or to `now` in flight."""
    end = now if row["status"] in IN_FLIGHT else row["updated_at"]
    return max(0.0, (end - row["created_at"]).total_seconds())


class Millis(sa.sql.expression.ColumnElement[int]):
    """Whole milliseconds from `start` to `end` (two timestamps), on either database."""

    inherit_cache = False
    type = sa.BigInteger()

    def __init__(self, end: sa.ColumnElement[Any], start: sa.ColumnElement[Any]) -> None:
        self.end = end
        self.start = start


@compiles(Millis)
def _millis_sqlite(element: Millis, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = compiler.process(element.end, **kw), compiler.process(element.start, **kw)
    return f"CAST(round((julianday({end}) - julianday({start})) * 86400000.0) AS INTEGER)"


@compiles(Millis, "postgresql")
def _millis_postgresql(element: Millis, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = compiler.process(element.end, **kw), compiler.process(element.start, **kw)
    return f"CAST(round(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000) AS BIGINT)"


def duration_ms(now: datetime) -> sa.ColumnElement[int]:
    """`duration_s` in SQL (milliseconds, so that page cursors compare exactly)."""
    t = saga_instances.c
    end = sa.case(
        (t.status.in_(IN_FLIGHT), sa.bindparam("duration_now", now, type_=Timestamp)),
        else_=t.updated_at,
    )
    return Millis(end, t.created_at)
