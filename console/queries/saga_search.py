"""The listing's search box: what an operator sees of a saga finds it — an id or the 8-character
short id every table shows (any prefix of `MIN_PREFIX` characters or more), a correlation id, a
principal, or a business key value its definition declares (`saga(search_keys=...)`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from orchestrator.models import saga_instances, saga_search_keys

# The short id the tables show; shorter text matches an id only whole.
MIN_PREFIX = 8


class StartsWith(sa.sql.expression.ColumnElement[bool]):
    """`column` starts with `prefix`, written as the range an index walks: bytewise operators
    on PostgreSQL (the `varchar_pattern_ops` index, whatever the collation), plain comparisons
    on SQLite (binary order on the primary key)."""

    inherit_cache = False
    type = sa.Boolean()
    _is_implicitly_boolean = True  # a comparison already: no "= 1" where booleans are integers

    def __init__(self, column: sa.ColumnElement[str], prefix: str) -> None:
        self.column = column
        self.low = sa.bindparam(None, prefix, type_=sa.String())
        # Text starting with the prefix sorts below the prefix with its last character bumped.
        self.high = sa.bindparam(None, prefix[:-1] + chr(ord(prefix[-1]) + 1), type_=sa.String())


def _range(element: StartsWith, compiler: SQLCompiler, ge: str, lt: str, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    low = compiler.process(element.low, **kw)
    high = compiler.process(element.high, **kw)
    return f"({column} {ge} {low} AND {column} {lt} {high})"


@compiles(StartsWith)
def _starts_with(element: StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    return _range(element, compiler, ">=", "<", **kw)


@compiles(StartsWith, "postgresql")
def _starts_with_postgresql(element: StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    return _range(element, compiler, "~>=~", "~<~", **kw)


def search_clause(text: str) -> sa.ColumnElement[bool]:
    """Sagas whose id starts with `text` (whole id below `MIN_PREFIX` characters), or whose
    correlation id, principal or a search key value is `text`. Each branch is one index lookup;
    their union is joined to the listing by primary key."""
    t = saga_instances.c
    by_id: sa.ColumnElement[bool]
    if len(text) >= MIN_PREFIX and ord(text[-1]) < 0x10FFFF:
        by_id = StartsWith(t.id, text)
    else:
        by_id = t.id == text
    matches = sa.union(
        sa.select(t.id).where(by_id),
        sa.select(t.id).where(t.correlation_id == text),
        sa.select(t.id).where(t.principal == text),
        sa.select(saga_search_keys.c.saga_id).where(saga_search_keys.c.value == text),
    )
    return t.id.in_(matches)
